//! The sandbox a stage runs in: bubblewrap with the build root read-only
//! at `/`, the tree writable at `/run/osbuild/tree`, inputs read-only under
//! `/run/osbuild/inputs`, no network, its own pid, ipc and uts namespaces,
//! a fresh `/dev`, `/proc`, `/tmp`, and the seccomp filters of
//! [`crate::seccomp`] (bubblewrap sets `no_new_privs` with them). The stage
//! itself is this binary (`kiln-osbuild __stage ARGS`), bound read-only into
//! the sandbox, so it sees only what the sandbox shows it.
//!
//! The sandbox is also a user namespace of its own, nested in the build
//! namespace ([`crate::userns`]) and mapping only its ids 0..65535: the
//! stage is root over the tree, and the user that started the executor is
//! nobody to it. bubblewrap makes the namespace and waits
//! (`--userns-block-fd`) while the executor, root of the parent namespace,
//! writes the child's maps; `--cap-add ALL` keeps the capabilities that
//! namespace gives (chown, setcap, mounts inside the sandbox), none of
//! which reaches past it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const TREE: &str = "/run/osbuild/tree";
pub const INPUTS: &str = "/run/osbuild/inputs";
pub const API: &str = "/run/osbuild/api";
const EXE: &str = "/run/osbuild/bin/kiln-osbuild";

/// Set by the executor's signal handler: stop the running stage.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct Sandbox<'a> {
    /// The build pipeline's tree; `None`: the host's root, read-only.
    pub build_root: Option<&'a Path>,
    pub tree: &'a Path,
    pub inputs: Vec<(String, PathBuf)>,
    /// Holds `args.json`; the stage writes `metadata.json` here.
    pub api: &'a Path,
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Outcome {
    Exited(i32),
    Interrupted,
}

/// What the spawned bubblewrap needs kept open until it has started: the
/// seccomp filters' files and the child's ends of the namespace pipes.
struct Handoff {
    filters: Vec<std::fs::File>,
    child_ends: Vec<OwnedFd>,
    /// bubblewrap writes `{"child-pid": N, ...}` here once the sandbox's
    /// user namespace exists.
    info: std::io::PipeReader,
    /// One byte here lets it go on, after the maps are written.
    release: std::io::PipeWriter,
}

impl Sandbox<'_> {
    /// The bubblewrap command, and what must stay open until it is spawned.
    fn command(&self) -> std::io::Result<(Command, Handoff)> {
        let exe = std::env::current_exe()?;
        let filters = crate::seccomp::program_files()?;
        let (info, info_w) = std::io::pipe()?;
        let (block_r, release) = std::io::pipe()?;
        let (info_w, block_r): (OwnedFd, OwnedFd) = (info_w.into(), block_r.into());
        let mut inherit: Vec<RawFd> = filters.iter().map(|f| f.as_raw_fd()).collect();
        inherit.extend([info_w.as_raw_fd(), block_r.as_raw_fd()]);
        let mut c = Command::new("bwrap");
        let kept = inherit.clone();
        // SAFETY: between fork and exec only fcntl, which is
        // async-signal-safe, on descriptors this process owns: bubblewrap
        // inherits them (std opens files and pipes close-on-exec).
        unsafe {
            c.pre_exec(move || {
                for &fd in &kept {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        c.args([
            "--unshare-user",
            "--uid",
            "0",
            "--gid",
            "0",
            "--cap-add",
            "ALL",
        ]);
        c.arg("--userns-block-fd")
            .arg(block_r.as_raw_fd().to_string());
        c.arg("--info-fd").arg(info_w.as_raw_fd().to_string());
        for f in &filters {
            c.arg("--add-seccomp-fd").arg(f.as_raw_fd().to_string());
        }
        match self.build_root {
            Some(root) => c.arg("--ro-bind").arg(root).arg("/"),
            None => c.args(["--ro-bind", "/", "/"]),
        };
        c.args([
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
            "--tmpfs", "/run",
        ]);
        c.arg("--bind").arg(self.tree).arg(TREE);
        for (name, path) in &self.inputs {
            c.arg("--ro-bind").arg(path).arg(format!("{INPUTS}/{name}"));
        }
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
        Ok((
            c,
            Handoff {
                filters,
                child_ends: vec![info_w, block_r],
                info,
                release,
            },
        ))
    }

    /// Runs the stage; every output line goes to `on_line` as it comes.
    pub fn run(&self, on_line: &mut dyn FnMut(&str)) -> std::io::Result<Outcome> {
        let (reader, writer) = std::io::pipe()?;
        let (mut cmd, handoff) = self.command()?;
        // A process group of its own: whatever bubblewrap leaves behind
        // (the sandbox's pid 1, which takes the sandbox with it) can be
        // stopped with it, so nothing of a stage outlives the stage.
        cmd.stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("bwrap: {e} (is bubblewrap installed?)"))
        })?;
        let group = child.id() as i32;
        // The command holds the write ends; drop them so EOF arrives.
        drop(cmd);
        let Handoff {
            filters,
            child_ends,
            mut info,
            mut release,
        } = handoff;
        drop((filters, child_ends));
        if let Err(e) = map_sandbox(&mut info) {
            // bubblewrap's own words, if it said why (it exits on its own
            // when it did; otherwise it is stopped).
            stop_group(group);
            let _ = child.wait();
            let mut said = String::new();
            let _ = BufReader::new(reader).read_to_string(&mut said);
            let said = said.trim();
            return Err(if said.is_empty() {
                e
            } else {
                std::io::Error::new(e.kind(), format!("{e}: {said}"))
            });
        }
        release.write_all(b"x")?;
        drop(release);
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
                stop_group(group);
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
        // The output ends when its last writer goes. A process bubblewrap
        // left behind that still holds it (seen when the worker above was
        // killed mid-stage: the executor then waited on it for ever) is
        // stopped with bubblewrap's group.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !pump.is_finished() && std::time::Instant::now() < deadline {
            while let Ok(l) = rx.try_recv() {
                on_line(&l);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !pump.is_finished() {
            stop_group(group);
        }
        let _ = pump.join();
        while let Ok(l) = rx.try_recv() {
            on_line(&l);
        }
        Ok(outcome)
    }
}

/// Kills bubblewrap's process group (bubblewrap and the sandbox's pid 1,
/// whose end takes every process of the sandbox with it).
fn stop_group(group: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory; a
    // negative pid names the process group, which is bubblewrap's own.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Reads the sandbox's pid from bubblewrap's info and maps its user
/// namespace: ids 0..65535 to the same ids of the build namespace, and
/// nothing else (the executor's user stays unmapped in there).
fn map_sandbox(info: &mut std::io::PipeReader) -> std::io::Result<()> {
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while !text.contains(&b'}') {
        let n = info.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "bwrap exited before it made the sandbox's user namespace",
            ));
        }
        text.extend_from_slice(&buf[..n]);
    }
    let end = text
        .iter()
        .position(|&b| b == b'}')
        .map_or(text.len(), |i| i + 1);
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "child-pid")]
        child_pid: u32,
    }
    let parsed: Info = serde_json::from_slice(&text[..end])
        .map_err(|e| std::io::Error::other(format!("bwrap's --info-fd: {e}")))?;
    let map = format!("0 0 {}\n", crate::userns::IDS);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{}/{file}", parsed.child_pid);
        std::fs::write(&path, &map)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}
