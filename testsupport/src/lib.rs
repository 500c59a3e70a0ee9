//! Real services for kiln's tests and benchmarks.
//!
//! [`PgCluster`] starts a throwaway PostgreSQL cluster with the system's `initdb`
//! and `pg_ctl` in a temporary directory, listening on a free loopback port and a
//! private unix socket. PostgreSQL refuses to run as root, so when the tests run
//! as root the cluster is created and run as the `postgres` user.
//!
//! A watchdog process stops the cluster and removes its directory when the
//! process that started it exits, even if it never runs its destructors (test
//! binaries end with `exit`, and statics are never dropped).

pub mod aptcache;
pub mod artifacts;
pub mod builduser;
pub mod debrepo;
pub mod host;
pub mod metrics;
#[cfg(feature = "oidc")]
pub mod oidc;
#[cfg(feature = "openchami")]
pub mod openchami;
pub mod reference;
pub mod rpmrepo;
pub mod spdx;
pub mod storage;
pub mod unitfile;

/// A depsolved set as a manifest lists its package files (image builds in
/// tests and benchmarks), through the same conversions as the composer's.
/// The package type is not part of a manifest's file, so the family given
/// to the API's shape does not change the result.
#[cfg(feature = "debian")]
pub fn package_files(
    solution: &kiln_depsolve::Solution,
) -> Vec<kiln_manifests::generate::PackageFile> {
    solution
        .packages
        .iter()
        .map(|p| (&p.depsolved(kiln_api::validate::Family::Debian)).into())
        .collect()
}

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A running throwaway PostgreSQL cluster.
pub struct PgCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Errors are strings: this crate only serves tests, which report them as they are.
pub type Result<T> = std::result::Result<T, String>;

impl PgCluster {
    /// Starts a new cluster. `settings` are extra `-c name=value` server settings.
    pub fn start(settings: &[(&str, &str)]) -> Result<PgCluster> {
        let bindir = pg_bindir()?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("kiln-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let data = dir.join("data");
        let mut initdb = pg_command(&bindir, "initdb", as_postgres);
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(&mut initdb)?;

        let port = free_port()?;
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=300",
            dir.display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let mut ctl = pg_command(&bindir, "pg_ctl", as_postgres);
        ctl.arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(&opts)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        if let Err(e) = run(&mut ctl) {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("{e}\nserver log:\n{log}"));
        }
        let cluster = PgCluster {
            bindir,
            dir,
            port,
            as_postgres,
        };
        cluster.spawn_watchdog()?;
        Ok(cluster)
    }

    /// The cluster shared by every test of this process, started on first use
    /// with durability off (test data is thrown away).
    pub fn shared() -> Result<&'static PgCluster> {
        static SHARED: OnceLock<std::result::Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PgCluster::start(&[("fsync", "off"), ("synchronous_commit", "off")]))
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` database, over TCP on loopback.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// URL of a database over the cluster's unix socket.
    pub fn socket_url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> Result<String> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut cmd = Command::new(self.bindir.join("createdb"));
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name);
        run(&mut cmd)?;
        Ok(self.database_url(&name))
    }

    /// Stops the server at once (as a crash would), keeping the data directory.
    pub fn stop(&self) -> Result<()> {
        let mut ctl = pg_command(&self.bindir, "pg_ctl", self.as_postgres);
        ctl.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(&mut ctl)
    }

    /// Restarts the server (`pg_ctl restart -m fast`: connections are cut,
    /// the data is kept, the same options apply).
    pub fn restart(&self) -> Result<()> {
        let mut ctl = pg_command(&self.bindir, "pg_ctl", self.as_postgres);
        ctl.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-m", "fast", "-w", "-t", "60", "restart"]);
        run(&mut ctl)
    }

    fn spawn_watchdog(&self) -> Result<()> {
        let ctl = self.bindir.join("pg_ctl");
        let data = self.dir.join("data");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                ctl.display(),
                data.display()
            )
        } else {
            format!("{} -D {} -m immediate stop", ctl.display(), data.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster watchdog: {e}"))?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("reading the bound address: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds the directory holding `initdb` and `pg_ctl`: `$KILN_PG_BINDIR`, then
/// the newest `/usr/lib/postgresql/*/bin`, then `$PATH`.
fn pg_bindir() -> Result<PathBuf> {
    if let Ok(d) = std::env::var("KILN_PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("initdb").exists() && Path::new(dir).join("pg_ctl").exists() {
            return Ok(PathBuf::from(dir));
        }
    }
    Err(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the `postgresql` package"
            .into(),
    )
}

fn pg_command(bindir: &Path, tool: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
