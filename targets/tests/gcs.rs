//! The GCS target against fake-gcs-server on loopback.

mod common;

use common::{artifact, assert_failed_after_retries, quick_retries, Observed, ARTIFACT_SIZE};
use kiln_targets::{upload, upload_observed, GcsTarget, Secret, TargetConfig};
use kiln_testsupport::storage::GcsServer;

const MIB: u64 = 1024 * 1024;

fn target(server: &GcsServer) -> GcsTarget {
    GcsTarget {
        endpoint: Some(server.endpoint()),
        bucket: server.bucket.clone(),
        bearer_token: Some(Secret::new("ya29.kiln-test-token-must-not-leak")),
        // Seven chunks for a 24 MiB artifact.
        chunk_size: 4 * MIB,
        retry: quick_retries(),
    }
}

async fn read_back(server: &GcsServer, name: &str) -> Vec<u8> {
    let mut url = reqwest::Url::parse(&server.endpoint()).expect("endpoint");
    url.path_segments_mut().expect("base").extend([
        "storage",
        "v1",
        "b",
        &server.bucket,
        "o",
        name,
    ]);
    url.query_pairs_mut().append_pair("alt", "media");
    let r = reqwest::get(url).await.expect("GET");
    assert!(r.status().is_success(), "GET {name}: {}", r.status());
    r.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn resumable_upload_stores_the_artifact_exactly() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let a = artifact(ARTIFACT_SIZE);
    let observed = Observed::default();
    let got = upload_observed(
        &TargetConfig::Gcs(target(&server)),
        &a.path,
        "composes/c1/disk.tar.gz",
        |e| observed.see(e, u64::MAX, || {}),
    )
    .await
    .unwrap_or_else(|e| panic!("upload failed: {e}\nserver log:\n{}", server.log()));
    assert_eq!(got.url, "gs://images/composes/c1/disk.tar.gz");
    assert_eq!(got.size, ARTIFACT_SIZE as u64);
    assert_eq!(got.sha256, a.sha256);
    assert_eq!(observed.retries(), 0);
    assert!(read_back(&server, "composes/c1/disk.tar.gz").await == a.bytes);
}

#[tokio::test]
async fn small_and_empty_artifacts_upload_too() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let cfg = TargetConfig::Gcs(target(&server));
    for size in [0, 1000] {
        let a = artifact(size);
        let name = format!("small-{size}");
        let got = upload(&cfg, &a.path, &name, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("upload of {size} bytes failed: {e}"));
        assert_eq!((got.size, &got.sha256), (size as u64, &a.sha256));
        assert!(read_back(&server, &name).await == a.bytes);
    }
}

/// fake-gcs-server accepts any token, so a refused credential cannot be
/// provoked; a missing bucket is the storage refusing the upload instead.
#[tokio::test]
async fn refusal_carries_the_servers_message_and_no_token() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let mut t = target(&server);
    t.bucket = "no-such-bucket".into();
    let a = artifact(1000);
    let err = upload(&TargetConfig::Gcs(t), &a.path, "x", |_, _| {})
        .await
        .expect_err("a missing bucket must fail");
    let text = format!("{err} {err:?}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(!text.contains("kiln-test-token"), "{text}");
    assert!(text.contains("after 1 attempt(s)"), "{text}");
}

#[tokio::test]
async fn server_killed_mid_upload_is_retried_then_reported() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let a = artifact(ARTIFACT_SIZE);
    let observed = Observed::default();
    let err = upload_observed(&TargetConfig::Gcs(target(&server)), &a.path, "disk", |e| {
        observed.see(e, 4 * MIB, || server.stop())
    })
    .await
    .expect_err("the upload cannot succeed without a server");
    assert_failed_after_retries(&err, &observed);
}

/// Forwards loopback connections to `upstream`, and cuts the first
/// connection whose client has sent more than `cut_after` bytes, once.
async fn cutting_proxy(
    upstream: u16,
    cut_after: u64,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let cut2 = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let cut = cut2.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let back = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent = 0u64;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    sent += n as u64;
                    if sent > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        // Drop both directions mid-request.
                        back.abort();
                        return;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
                let _ = back.await;
            });
        }
    });
    (port, cut)
}

#[tokio::test]
async fn a_cut_connection_resumes_from_the_last_confirmed_offset() {
    // The proxy must exist first: the server hands out session URLs on it.
    let upstream = kiln_testsupport::free_port().expect("port");
    let (proxy_port, cut) = cutting_proxy(upstream, 6 * MIB).await;
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let server = GcsServer::start_on(upstream, "images", &proxy).expect("fake-gcs-server");
    let mut t = target(&server);
    t.endpoint = Some(proxy);
    let a = artifact(ARTIFACT_SIZE);
    let observed = Observed::default();
    let got = upload_observed(&TargetConfig::Gcs(t), &a.path, "resumed", |e| {
        observed.see(e, u64::MAX, || {})
    })
    .await
    .unwrap_or_else(|e| panic!("upload failed: {e}\nserver log:\n{}", server.log()));
    assert!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy never cut"
    );
    assert_eq!(observed.retries(), 1, "{:?}", observed.retry_errors.lock());
    assert_eq!(got.sha256, a.sha256);
    assert!(read_back(&server, "resumed").await == a.bytes);
}
