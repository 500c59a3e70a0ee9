//! The unprivileged user image builds run as.
//!
//! kiln-osbuild and kiln-worker refuse to run as root: they build inside
//! user namespaces mapped from a user's subordinate ids. Tests run as root
//! (CI), so they start those binaries as this user: `$KILN_BUILD_USER`, or
//! `kiln`, which `tools/build-user.sh` (run by `tools/test.sh` and the
//! quickstart) creates with its subordinate ids. What the user must reach
//! is given to it: its working directories ([`dir`], [`give`]), the
//! binaries (hard links outside root's home, [`binary`]) and the mirrors
//! it fetches from ([`readable`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The build user's name and ids.
#[derive(Debug, Clone)]
pub struct BuildUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn id(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(name).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The build user; panics with what to run when it does not exist.
pub fn user() -> &'static BuildUser {
    static USER: OnceLock<BuildUser> = OnceLock::new();
    USER.get_or_init(|| {
        let name = std::env::var("KILN_BUILD_USER").unwrap_or_else(|_| "kiln".into());
        match (id("-u", &name), id("-g", &name)) {
            (Some(uid), Some(gid)) => BuildUser { name, uid, gid },
            _ => panic!(
                "the build user {name:?} does not exist: run `bash tools/build-user.sh` as root \
                 (tools/test.sh does), or set KILN_BUILD_USER to a user with subordinate ids"
            ),
        }
    })
}

/// Runs `cmd` as the build user (when the tests run as root; otherwise as
/// the user running them, who then needs subordinate ids of its own).
pub fn run_as(cmd: &mut Command) -> &mut Command {
    if is_root() {
        let u = user();
        cmd.uid(u.uid).gid(u.gid).env("HOME", "/nonexistent");
    }
    cmd
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Gives a path (not following links) to the build user.
pub fn give(path: &Path) {
    if is_root() {
        let u = user();
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A temporary directory that belongs to the build user.
pub fn dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    give(d.path());
    d
}

/// Makes a directory (a mirror, a repository) readable by everyone, the
/// build user's executor among them: mode 0755 on it and its directories.
pub fn readable(root: &Path) {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
}

/// `binary` at a path the build user can reach: cargo's target directory
/// usually lies under root's home (mode 0700), so the binary is hard-linked
/// (copied across file systems) into a world-readable directory, once per
/// build of it.
pub fn binary(binary: &str) -> PathBuf {
    if !is_root() {
        return PathBuf::from(binary);
    }
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join("kiln-test-binaries");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(binary).unwrap_or_else(|e| panic!("{binary}: {e}"));
    let name = Path::new(binary).file_name().unwrap().to_string_lossy();
    let link = dir.join(format!("{name}-{}-{}", meta.dev(), meta.ino()));
    if !link.exists() {
        let partial = dir.join(format!(".{name}-{}", uuid::Uuid::new_v4().simple()));
        if std::fs::hard_link(binary, &partial).is_err() {
            std::fs::copy(binary, &partial).unwrap();
        }
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &link).unwrap();
    }
    // A link whose binary cargo has since rebuilt or pruned (the link is
    // its last name) keeps a whole old binary on disk: it goes. No test
    // starts it any more (tests link the current build); one still running
    // it keeps running.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.nlink() == 1 && e.path() != link && !e.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_file(e.path());
        }
    }
    link
}
