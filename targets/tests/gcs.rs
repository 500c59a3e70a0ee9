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

/// Without a bearer token the crate's anonymous credentials are used: no
/// `Authorization` at all, and never a default credential chain.
#[tokio::test]
async fn without_a_token_uploads_are_anonymous() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let mut t = target(&server);
    t.bearer_token = None;
    let a = artifact(ARTIFACT_SIZE);
    let got = upload(&TargetConfig::Gcs(t), &a.path, "anonymous", |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("upload failed: {e}\nserver log:\n{}", server.log()));
    assert_eq!(got.sha256, a.sha256);
    assert!(read_back(&server, "anonymous").await == a.bytes);
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

/// A connection cut mid-chunk is one transient failure: the upload starts
/// again in a new session (see `fake_gcs_server_finalises_an_object_when_asked_what_it_holds`
/// for why it is not resumed) and stores the artifact exactly.
#[tokio::test]
async fn a_cut_connection_is_retried_and_the_upload_completes() {
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

/// The request the crate resumes a session with after a failed chunk (its
/// status query, `PUT` with `Content-Range: bytes */*` and no body): GCS
/// answers `308` with the bytes it holds, fake-gcs-server finalises the
/// object with what it has. Resuming through the crate would store a short
/// object there, so kiln keeps the crate's retries off and starts a failed
/// upload again in a new session.
#[tokio::test]
async fn fake_gcs_server_finalises_an_object_when_asked_what_it_holds() {
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let start = http
        .post(format!(
            "{}/upload/storage/v1/b/images/o?uploadType=resumable&name=short",
            server.endpoint()
        ))
        .json(&serde_json::json!({ "name": "short" }))
        .send()
        .await
        .expect("starting a session");
    assert!(start.status().is_success(), "{}", start.status());
    let session = start.headers()["location"]
        .to_str()
        .expect("session URI")
        .to_string();
    let chunk = vec![7u8; 256 * 1024];
    let first = http
        .put(&session)
        .header("content-range", "bytes 0-262143/1048576")
        .body(chunk)
        .send()
        .await
        .expect("first chunk");
    assert_eq!(first.status().as_u16(), 308, "the first chunk is held");
    let query = http
        .put(&session)
        .header("content-range", "bytes */*")
        .header("content-length", "0")
        .send()
        .await
        .expect("status query");
    assert_eq!(query.status().as_u16(), 200, "GCS would answer 308 here");
    let object: serde_json::Value = query.json().await.expect("object metadata");
    assert_eq!(object["size"], "262144", "finalised short: {object}");
    assert_eq!(read_back(&server, "short").await.len(), 256 * 1024);
}

/// The crate sends `Host` without the endpoint's port, and fake-gcs-server
/// builds the session URI from `Host`: without kiln's fix (the `Host` with
/// its port, set through the credentials' headers in `src/gcs.rs`) the first
/// chunk goes to port 80 of the loopback address.
#[tokio::test]
async fn the_crates_host_header_alone_sends_chunks_to_the_wrong_port() {
    use google_cloud_storage::client::Storage;
    let server = GcsServer::start("images").expect("fake-gcs-server");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Storage::builder()
        .with_endpoint(server.endpoint())
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
        .build()
        .await
        .expect("client");
    let err = client
        .write_object("projects/_/buckets/images", "wrong-port", "some bytes")
        .with_resumable_upload_threshold(0usize)
        .send_buffered()
        .await
        .expect_err("the session URI has lost the port");
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(
        text.contains("http://127.0.0.1/upload/storage/v1/b/images/o?uploadType=resumable"),
        "{text}"
    );
}
