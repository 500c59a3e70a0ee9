#![allow(dead_code)]
//! A real Debian repository built in test setup: packages fetched with
//! `apt-get download`, indexed with `apt-ftparchive`, signed with a
//! throwaway key from `gpg --quick-gen-key` in a temporary GNUPGHOME.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct DebRepo {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Binary keyring holding the repository's signing key.
    pub keyring: PathBuf,
    /// Keyring holding an unrelated key (for bad-signature tests).
    pub other_keyring: PathBuf,
    pub gnupghome: PathBuf,
}

pub(crate) const PACKAGES: &[&str] = &["hello", "libc6", "libgcc-s1", "gcc-12-base"];

pub(crate) fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""]);
    c
}

fn make_key(home: &Path, uid: &str, keyring: &Path) {
    std::fs::create_dir_all(home).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    run(gpg(home).args(["--quick-gen-key", uid, "ed25519", "sign", "never"]));
    let key = run(gpg(home).arg("--export"));
    std::fs::write(keyring, key).unwrap();
}

/// Signs `dists/<suite>/Release` as InRelease (and Release.gpg if asked).
pub(crate) fn sign_suite(home: &Path, suite_dir: &Path, inline: bool, detached: bool) {
    let release = suite_dir.join("Release");
    if inline {
        let p = suite_dir.join("InRelease");
        let _ = std::fs::remove_file(&p);
        run(gpg(home).arg("--clearsign").arg("-o").arg(&p).arg(&release));
    }
    if detached {
        let p = suite_dir.join("Release.gpg");
        let _ = std::fs::remove_file(&p);
        run(gpg(home).arg("-abs").arg("-o").arg(&p).arg(&release));
    }
}

/// Writes Packages(.xz) and Release for one suite from the pool.
pub(crate) fn index_suite(root: &Path, suite: &str) {
    index_suite_as(root, suite, "xz");
}

/// Like [`index_suite`], with `Packages` compressed as `xz`, `gz` or `plain`.
pub(crate) fn index_suite_as(root: &Path, suite: &str, compression: &str) {
    let bin = root.join(format!("dists/{suite}/main/binary-amd64"));
    std::fs::create_dir_all(&bin).unwrap();
    let packages = run(Command::new("apt-ftparchive")
        .current_dir(root)
        .args(["packages", "pool"]));
    std::fs::write(bin.join("Packages"), &packages).unwrap();
    match compression {
        "xz" => {
            run(Command::new("xz")
                .args(["-k", "-f"])
                .arg(bin.join("Packages")));
        }
        "gz" => {
            run(Command::new("gzip")
                .args(["-k", "-f", "-n"])
                .arg(bin.join("Packages")));
            // Only the compressed file, so the reader must take it.
            std::fs::remove_file(bin.join("Packages")).unwrap();
        }
        _ => {}
    }
    write_release(root, suite);
}

/// `dists/SUITE/Release` for what the suite's directory holds now (unsigned).
pub(crate) fn write_release(root: &Path, suite: &str) {
    let release = run(Command::new("apt-ftparchive")
        .current_dir(root.join(format!("dists/{suite}")))
        .args([
            "-o",
            &format!("APT::FTPArchive::Release::Suite={suite}"),
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "release",
            ".",
        ]));
    std::fs::write(root.join(format!("dists/{suite}/Release")), release).unwrap();
}

/// An amd64 repository set of one sources line, trusted through `keyring`.
pub(crate) fn config(line: &str, keyring: &Path, cache: &Path) -> kiln_depsolve::RepoConfig {
    kiln_depsolve::RepoConfig {
        arch: "amd64".into(),
        sources: vec![line.parse::<kiln_depsolve::Source>().unwrap()],
        cache_dir: cache.to_path_buf(),
        keyring: Some(keyring.to_path_buf()),
    }
}

impl DebRepo {
    /// Suites: `stable` (InRelease) and `detached` (Release + Release.gpg only).
    pub(crate) fn build() -> DebRepo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let pool = root.join("pool/main");
        std::fs::create_dir_all(&pool).unwrap();
        run(Command::new("apt-get")
            .current_dir(&pool)
            .args(["download", "-q"])
            .args(PACKAGES));
        let gnupghome = dir.path().join("gnupg");
        let keyring = dir.path().join("repo-key.gpg");
        make_key(&gnupghome, "kiln test repo <repo@kiln.invalid>", &keyring);
        let other_home = dir.path().join("other-gnupg");
        let other_keyring = dir.path().join("other-key.gpg");
        make_key(
            &other_home,
            "someone else <other@kiln.invalid>",
            &other_keyring,
        );
        for (suite, inline, detached) in [("stable", true, false), ("detached", false, true)] {
            index_suite(&root, suite);
            sign_suite(
                &gnupghome,
                &root.join(format!("dists/{suite}")),
                inline,
                detached,
            );
        }
        DebRepo {
            _dir: dir,
            root,
            keyring,
            other_keyring,
            gnupghome,
        }
    }

    pub(crate) fn file_url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
