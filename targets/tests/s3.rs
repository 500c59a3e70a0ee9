//! The S3 target against s3s-fs (signatures checked) on loopback.

mod common;

use common::{artifact, assert_failed_after_retries, quick_retries, Observed, ARTIFACT_SIZE};
use kiln_targets::{upload, upload_observed, S3Target, Secret, TargetConfig};
use kiln_testsupport::storage::S3Server;

const MIB: u64 = 1024 * 1024;

fn target(server: &S3Server) -> S3Target {
    S3Target {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: server.bucket.clone(),
        access_key_id: server.access_key_id.clone(),
        secret_access_key: Secret::new(server.secret_access_key.clone()),
        path_style: true,
        // S3's smallest part: a 24 MiB artifact is five parts, three in flight.
        part_size: 5 * MIB,
        concurrency: 3,
        retry: quick_retries(),
    }
}

#[tokio::test]
async fn multipart_upload_stores_the_artifact_exactly() {
    let server = S3Server::start("images").expect("s3s-fs");
    let a = artifact(ARTIFACT_SIZE);
    let cfg = TargetConfig::S3(target(&server));
    let observed = Observed::default();
    let got = upload_observed(&cfg, &a.path, "composes/c1/disk.raw", |e| {
        observed.see(e, u64::MAX, || {})
    })
    .await
    .unwrap_or_else(|e| panic!("upload failed: {e}\nserver log:\n{}", server.log()));
    assert_eq!(got.url, "s3://images/composes/c1/disk.raw");
    assert_eq!(got.size, ARTIFACT_SIZE as u64);
    assert_eq!(got.sha256, a.sha256);
    assert_eq!(observed.retries(), 0);
    assert_eq!(
        observed.last_done.load(std::sync::atomic::Ordering::SeqCst),
        got.size
    );
    let stored = common::read(&server.object_path("composes/c1/disk.raw"));
    assert!(stored == a.bytes, "stored object differs from the artifact");
}

#[tokio::test]
async fn small_and_empty_artifacts_upload_too() {
    let server = S3Server::start("images").expect("s3s-fs");
    let cfg = TargetConfig::S3(target(&server));
    for size in [0, 1000] {
        let a = artifact(size);
        let name = format!("small-{size}");
        let got = upload(&cfg, &a.path, &name, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("upload of {size} bytes failed: {e}"));
        assert_eq!((got.size, &got.sha256), (size as u64, &a.sha256));
        assert!(common::read(&server.object_path(&name)) == a.bytes);
    }
}

#[tokio::test]
async fn wrong_secret_is_refused_with_the_servers_message_and_no_secret() {
    let server = S3Server::start("images").expect("s3s-fs");
    let a = artifact(1000);
    let mut t = target(&server);
    let wrong = "wrong-secret-that-must-not-leak-0123456789";
    t.secret_access_key = Secret::new(wrong);
    let err = upload(&TargetConfig::S3(t), &a.path, "x", |_, _| {})
        .await
        .expect_err("a wrong secret must fail");
    let text = format!("{err} {err:?}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(!text.contains(wrong), "the secret leaked: {text}");
    assert!(!text.contains(&server.secret_access_key), "{text}");
    // Refused credentials are final: no retries.
    assert!(text.contains("after 1 attempt(s)"), "{text}");
}

#[tokio::test]
async fn server_killed_mid_upload_is_retried_then_reported() {
    let server = S3Server::start("images").expect("s3s-fs");
    let a = artifact(ARTIFACT_SIZE);
    let cfg = TargetConfig::S3(target(&server));
    let observed = Observed::default();
    let err = upload_observed(&cfg, &a.path, "disk.raw", |e| {
        // Once the first part is stored, the server dies.
        observed.see(e, 5 * MIB, || server.stop())
    })
    .await
    .expect_err("the upload cannot succeed without a server");
    assert_failed_after_retries(&err, &observed);
}
