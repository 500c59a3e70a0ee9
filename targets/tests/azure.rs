//! The Azure Blob target against Azurite on loopback.

mod common;

use common::{artifact, assert_failed_after_retries, quick_retries, Observed, ARTIFACT_SIZE};
use kiln_targets::{azure, upload, upload_observed, AzureTarget, Secret, TargetConfig};
use kiln_testsupport::storage::AzuriteServer;

const MIB: u64 = 1024 * 1024;

async fn target(server: &AzuriteServer) -> AzureTarget {
    let t = AzureTarget {
        account: server.account.clone(),
        key: Secret::new(server.key.clone()),
        container: "images".into(),
        endpoint: Some(server.endpoint()),
        // Seven blocks for a 24 MiB artifact, four in flight.
        block_size: 4 * MIB,
        concurrency: 4,
        retry: quick_retries(),
    };
    azure::create_container(&t).await.unwrap_or_else(|e| {
        panic!(
            "creating the container: {e}\nAzurite log:\n{}",
            server.log()
        )
    });
    t
}

#[tokio::test]
async fn block_upload_stores_the_artifact_exactly() {
    let server = AzuriteServer::start().expect("azurite");
    let t = target(&server).await;
    let a = artifact(ARTIFACT_SIZE);
    let observed = Observed::default();
    let cfg = TargetConfig::Azure(t.clone());
    let got = upload_observed(&cfg, &a.path, "composes/c1/disk.vhd", |e| {
        observed.see(e, u64::MAX, || {})
    })
    .await
    .unwrap_or_else(|e| panic!("upload failed: {e}\nAzurite log:\n{}", server.log()));
    assert_eq!(
        got.url,
        format!("{}/images/composes/c1/disk.vhd", server.endpoint())
    );
    assert_eq!(got.size, ARTIFACT_SIZE as u64);
    assert_eq!(got.sha256, a.sha256);
    assert_eq!(observed.retries(), 0);
    let stored = azure::read_blob(&t, "composes/c1/disk.vhd")
        .await
        .expect("reading back");
    assert!(stored == a.bytes, "stored blob differs from the artifact");
    // A second container create is fine (it exists).
    azure::create_container(&t)
        .await
        .expect("idempotent create");
}

#[tokio::test]
async fn wrong_key_is_refused_with_the_servers_message_and_no_key() {
    let server = AzuriteServer::start().expect("azurite");
    let mut t = target(&server).await;
    // A well-formed key that is not the account's.
    let wrong = "d3Jvbmcta2V5LXRoYXQtbXVzdC1ub3QtbGVhay13cm9uZy1rZXktdGhhdC1tdXN0LW5vdC1sZWFr";
    t.key = Secret::new(wrong);
    let a = artifact(1000);
    let err = upload(&TargetConfig::Azure(t), &a.path, "x", |_, _| {})
        .await
        .expect_err("a wrong key must fail");
    let text = format!("{err} {err:?}");
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("Server failed to authenticate"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(&server.key),
        "{text}"
    );
    assert!(text.contains("after 1 attempt(s)"), "{text}");
}

#[tokio::test]
async fn server_killed_mid_upload_is_retried_then_reported() {
    let server = AzuriteServer::start().expect("azurite");
    let t = target(&server).await;
    let a = artifact(ARTIFACT_SIZE);
    let observed = Observed::default();
    let err = upload_observed(&TargetConfig::Azure(t), &a.path, "disk.vhd", |e| {
        observed.see(e, 4 * MIB, || server.stop())
    })
    .await
    .expect_err("the upload cannot succeed without a server");
    assert_failed_after_retries(&err, &observed);
}
