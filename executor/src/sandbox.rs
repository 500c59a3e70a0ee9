//! The sandbox a stage runs in: bubblewrap with the build root read-only
//! at `/`, the tree writable at `/run/osbuild/tree`, inputs read-only under
//! `/run/osbuild/inputs`, no network, its own pid, ipc and uts namespaces,
//! a fresh `/dev`, `/proc`, `/tmp`, and the seccomp filter of
//! [`crate::seccomp`] (bubblewrap sets `no_new_privs` with it). The stage itself is this binary
//! (`kiln-osbuild __stage ARGS`), bound read-only into the sandbox, so it
//! sees only what the sandbox shows it.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const TREE: &str = "/run/osbuild/tree";
pub const INPUTS: &str = "/run/osbuild/inputs";
pub const MOUNTS: &str = "/run/osbuild/mounts";
pub const API: &str = "/run/osbuild/api";
const EXE: &str = "/run/osbuild/bin/kiln-osbuild";

/// Set by the executor's signal handler: stop the running stage.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct Sandbox<'a> {
    /// The build pipeline's tree; `None`: the host's root, read-only.
    pub build_root: Option<&'a Path>,
    pub tree: &'a Path,
    pub inputs: Vec<(String, PathBuf)>,
    pub devices: Vec<String>,
    /// Holds `args.json`; the stage writes `metadata.json` here.
    pub api: &'a Path,
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Outcome {
    Exited(i32),
    Interrupted,
}

impl Sandbox<'_> {
    /// The bubblewrap command, and the file holding its seccomp filter,
    /// which must stay open until the command is spawned.
    fn command(&self) -> std::io::Result<(Command, std::fs::File)> {
        let exe = std::env::current_exe()?;
        let filter = crate::seccomp::program_file()?;
        let fd = filter.as_raw_fd();
        let mut c = Command::new("bwrap");
        // SAFETY: between fork and exec only fcntl, which is
        // async-signal-safe, on a descriptor this process owns: bubblewrap
        // inherits the filter's file (std opens it close-on-exec).
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match self.build_root {
            Some(root) => c.arg("--ro-bind").arg(root).arg("/"),
            None => c.args(["--ro-bind", "/", "/"]),
        };
        c.args([
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
            "--tmpfs", "/run",
        ]);
        for dev in &self.devices {
            c.arg("--dev-bind").arg(dev).arg(dev);
        }
        c.arg("--bind").arg(self.tree).arg(TREE);
        for (name, path) in &self.inputs {
            c.arg("--ro-bind").arg(path).arg(format!("{INPUTS}/{name}"));
        }
        c.args(["--dir", MOUNTS]);
        c.arg("--bind").arg(self.api).arg(API);
        c.arg("--ro-bind").arg(exe).arg(EXE);
        c.args([
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "localhost",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--chdir",
            "/",
        ]);
        c.arg("--seccomp").arg(fd.to_string());
        let mut env = vec![
            (
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
            ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        env.extend(self.env.iter().cloned());
        for (k, v) in env {
            c.arg("--setenv").arg(k).arg(v);
        }
        c.arg(EXE).arg("__stage").arg(format!("{API}/args.json"));
        Ok((c, filter))
    }

    /// Runs the stage; every output line goes to `on_line` as it comes.
    pub fn run(&self, on_line: &mut dyn FnMut(&str)) -> std::io::Result<Outcome> {
        let (reader, writer) = std::io::pipe()?;
        let (mut cmd, filter) = self.command()?;
        cmd.stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("bwrap: {e} (is bubblewrap installed?)"))
        })?;
        // The command holds the write ends; drop them so EOF arrives.
        drop(cmd);
        drop(filter);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut line = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\n')
                    .to_owned();
                if tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let outcome = loop {
            while let Ok(l) = rx.try_recv() {
                on_line(&l);
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                break Outcome::Interrupted;
            }
            if let Some(status) = child.try_wait()? {
                break Outcome::Exited(status.code().unwrap_or(128));
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => on_line(&l),
                Err(_) => continue,
            }
        };
        let _ = pump.join();
        while let Ok(l) = rx.try_recv() {
            on_line(&l);
        }
        Ok(outcome)
    }
}
