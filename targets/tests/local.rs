//! The local directory target.

mod common;

use common::{artifact, Observed, ARTIFACT_SIZE};
use kiln_targets::{upload, upload_observed, LocalTarget, TargetConfig, UploadError};

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listing the target directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn artifact_lands_whole_under_its_name() {
    let a = artifact(ARTIFACT_SIZE);
    let out = tempfile::tempdir().expect("target directory");
    let cfg = TargetConfig::Local(LocalTarget {
        path: out.path().to_owned(),
    });
    let observed = Observed::default();
    let got = upload_observed(&cfg, &a.path, "disk.qcow2", |e| {
        observed.see(e, u64::MAX, || {})
    })
    .await
    .expect("upload");
    let dest = out.path().join("disk.qcow2");
    assert_eq!(got.size, ARTIFACT_SIZE as u64);
    assert_eq!(got.sha256, a.sha256);
    assert_eq!(got.url, format!("file://{}", dest.display()));
    assert!(
        common::read(&dest) == a.bytes,
        "copy differs from the artifact"
    );
    assert_eq!(
        entries(out.path()),
        ["disk.qcow2"],
        "no temporary file may remain"
    );
    assert_eq!(
        observed.last_done.load(std::sync::atomic::Ordering::SeqCst),
        got.size
    );
}

#[tokio::test]
async fn a_second_upload_replaces_the_first_atomically() {
    let out = tempfile::tempdir().expect("target directory");
    let cfg = TargetConfig::Local(LocalTarget {
        path: out.path().to_owned(),
    });
    let first = artifact(1000);
    let second = artifact(3000);
    upload(&cfg, &first.path, "img", |_, _| {})
        .await
        .expect("first");
    let got = upload(&cfg, &second.path, "img", |_, _| {})
        .await
        .expect("second");
    assert_eq!(got.sha256, second.sha256);
    assert!(common::read(&out.path().join("img")) == second.bytes);
    assert_eq!(entries(out.path()), ["img"]);
}

#[tokio::test]
async fn failure_mid_copy_leaves_nothing_visible() {
    let a = artifact(ARTIFACT_SIZE);
    let out = tempfile::tempdir().expect("target directory");
    let cfg = TargetConfig::Local(LocalTarget {
        path: out.path().to_owned(),
    });
    let observed = Observed::default();
    // Once the first 8 MiB are written, the artifact is cut short, as a
    // failing disk or a build that rewrites it would.
    let err = upload_observed(&cfg, &a.path, "disk.raw", |e| {
        observed.see(e, 8 * 1024 * 1024, || {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&a.path)
                .expect("open");
            f.set_len(10 * 1024 * 1024).expect("truncate");
        })
    })
    .await
    .expect_err("a shrunk artifact must fail the upload");
    assert!(matches!(err, UploadError::Artifact { .. }), "{err:?}");
    assert!(err.to_string().contains("shrank"), "{err}");
    assert!(
        entries(out.path()).is_empty(),
        "left behind: {:?}",
        entries(out.path())
    );
}

#[tokio::test]
async fn missing_directory_is_a_clear_error() {
    let a = artifact(10);
    let cfg = TargetConfig::Local(LocalTarget {
        path: "/nonexistent/kiln-targets-test".into(),
    });
    let err = upload(&cfg, &a.path, "x", |_, _| {})
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/kiln-targets-test"), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

/// An artifact that is a symbolic link (as a build could leave in its
/// export, pointing at a host file) is refused, not followed: nothing of
/// what it points to reaches the target. Nor is a directory or a FIFO read.
#[tokio::test]
async fn a_symbolic_link_or_special_file_is_never_uploaded() {
    let dir = tempfile::tempdir().expect("export directory");
    let secret = dir.path().join("host-secret");
    std::fs::write(&secret, "kiln-host-secret-must-not-leak").expect("secret");
    let link = dir.path().join("disk.qcow2");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let out = tempfile::tempdir().expect("target directory");
    let cfg = TargetConfig::Local(LocalTarget {
        path: out.path().to_owned(),
    });
    for (artifact, says) in [
        (&link, "symbolic link"),
        (&fifo, "not a regular file"),
        (&dir.path().to_path_buf(), "not a regular file"),
    ] {
        let err = upload(&cfg, artifact, "disk.qcow2", |_, _| {})
            .await
            .expect_err("must be refused");
        assert!(matches!(err, UploadError::Artifact { .. }), "{err:?}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(entries(out.path()).is_empty(), "{:?}", entries(out.path()));
    // The same open is what every remote target and the boot store use.
    assert!(kiln_targets::open_regular(&link).is_err());
    assert!(kiln_targets::open_regular(&secret).is_ok());
}
