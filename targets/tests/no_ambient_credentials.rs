//! No target ever falls back to ambient credentials or a metadata service.
//!
//! Each case runs one upload in a child process (this test binary again,
//! running only `child_upload`) whose environment is full of canaries: AWS,
//! Google and Azure credentials in environment variables and in the files
//! the SDKs read (`~/.aws/credentials`, `~/.aws/config` with a
//! `credential_process` that leaves a marker file, gcloud's application
//! default credentials), and every endpoint override for metadata and token
//! services pointed at a loopback listener that counts connections. The
//! storage server sits behind a loopback proxy that records every byte the
//! child sends it. Every canary value contains `kilncanary`.
//!
//! A target configured with credentials must upload with exactly those: the
//! proxy sees them and no canary. A target configured without them is either
//! refused before any connection, naming the missing field (S3: the key
//! pair; Azure: the account key), or talks anonymously (GCS without
//! `bearer_token`: no `Authorization` header at all). In every case the
//! listener sees no connection and the credential process never runs. When
//! `strace` is installed the child runs under it, and every `connect` the
//! child makes must go to the proxy: none to 169.254.169.254, the container
//! credentials address or anywhere else.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{artifact, quick_retries, Artifact};
use kiln_targets::{azure, upload, AzureTarget, Secret, TargetConfig};
use kiln_testsupport::storage::{AzuriteServer, GcsServer, S3Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable that carries the child's job.
const CHILD_JOB: &str = "KILN_NO_AMBIENT_CHILD_JOB";
/// What the child prints before its result.
const RESULT: &str = "KILN-CHILD-RESULT ";
/// In every canary value, lower-case, so one search finds any of them.
const CANARY: &str = "kilncanary";
const MIB: u64 = 1024 * 1024;

/// The upload, in the child. Run only by the tests below, which set its job.
#[tokio::test]
#[ignore = "the child process of this file's tests; they run it"]
async fn child_upload() {
    let job = std::env::var(CHILD_JOB)
        .unwrap_or_else(|_| panic!("run only as the child of this file's tests ({CHILD_JOB})"));
    let job: Value = serde_json::from_str(&job).expect("job JSON");
    let artifact = PathBuf::from(job["artifact"].as_str().expect("artifact"));
    let name = job["name"].as_str().expect("name");
    // The target goes through serde as the worker's configuration does.
    let outcome = match serde_json::from_value::<TargetConfig>(job["target"].clone()) {
        Err(e) => format!("config-error {e}"),
        Ok(target) => match upload(&target, &artifact, name, |_, _| {}).await {
            Ok(object) => format!("ok {}", object.sha256),
            Err(e) => format!("error {e}"),
        },
    };
    println!("{RESULT}{outcome}");
}

/// Counts the connections made to it: where every metadata and token
/// endpoint override points.
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// The first bytes of each connection, to say who called.
    seen: Arc<Mutex<Vec<String>>>,
    /// Told when the listener has reached a [`SENTINEL`] connection.
    flushes: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// What the test itself sends the listener, so as to know that every
/// connection queued before it has been counted.
const SENTINEL: &[u8] = b"kiln-test-sentinel";

impl Listener {
    fn start() -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").expect("bind the metadata listener");
        let port = socket.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), seen.clone());
        let (flushed, flushes) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // One connection at a time, in the order the kernel queued them.
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else {
                    count.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
                let mut buf = [0u8; 512];
                let n = stream.read(&mut buf).unwrap_or(0);
                if &buf[..n] == SENTINEL {
                    let _ = flushed.send(());
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut v) = log.lock() {
                    v.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                // Dropped unanswered: a client that waits for it fails.
            }
        });
        Listener {
            port,
            connections,
            seen,
            flushes: Mutex::new(flushes),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn assert_untouched(&self) {
        // The child has exited, but its connections may still wait in the
        // accept queue: count up to a connection of our own, queued last.
        let mut sentinel =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect the sentinel");
        std::io::Write::write_all(&mut sentinel, SENTINEL).expect("send the sentinel");
        let flushes = self.flushes.lock().expect("flush channel");
        // A generous bound against a wedged listener, not a timing check.
        flushes
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the listener never reached the sentinel");
        drop(flushes);
        let n = self.connections.load(Ordering::SeqCst);
        assert_eq!(
            n,
            0,
            "the metadata listener was called {n} time(s): {:?}",
            self.seen.lock().map(|v| v.clone()).unwrap_or_default()
        );
    }
}

/// A loopback proxy in front of a storage server that keeps every byte
/// clients send through it.
struct Recorder {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

impl Recorder {
    async fn start(upstream: u16) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (record, count) = (sent.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let back = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Ok(mut r) = record.lock() {
                            r.extend_from_slice(&buf[..n]);
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
        Recorder {
            port,
            sent,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything sent through the proxy, lower-cased (header names and
    /// canaries compare without case).
    fn sent_lowercase(&self) -> String {
        let bytes = self.sent.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).to_lowercase()
    }

    fn assert_no_canary(&self) {
        let sent = self.sent_lowercase();
        if let Some(at) = sent.find(CANARY) {
            let from = sent[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = sent[at..].find('\n').map_or(sent.len(), |i| at + i);
            panic!("a canary reached the storage: {:?}", &sent[from..to]);
        }
    }
}

/// The canary-filled environment and the child that runs in it.
struct Sandbox {
    _dir: tempfile::TempDir,
    home: PathBuf,
    /// Created by the AWS profile's `credential_process` if it ever runs.
    process_marker: PathBuf,
    listener: Listener,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temporary directory");
        let home = dir.path().join("home");
        let listener = Listener::start();
        let l = listener.url();
        let host_port = l.trim_start_matches("http://").to_string();
        let process_marker = dir.path().join("credential-process-ran");
        let write = |rel: &str, text: &str| -> String {
            let path = home.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write canary file");
            path.display().to_string()
        };
        let aws_credentials = "[default]\n\
             aws_access_key_id = AKIAKILNCANARYFILE\n\
             aws_secret_access_key = kilncanary-file-secret\n\
             aws_session_token = kilncanary-file-token\n\
             [kilncanary]\n\
             aws_access_key_id = AKIAKILNCANARYPROFILE\n\
             aws_secret_access_key = kilncanary-profile-secret\n";
        let aws_config = format!(
            "[default]\n\
             region = kilncanary-1\n\
             endpoint_url = {l}\n\
             ec2_metadata_service_endpoint = {l}\n\
             credential_process = /bin/sh -c 'touch {marker}'\n\
             [profile kilncanary]\n\
             region = kilncanary-1\n\
             endpoint_url = {l}\n\
             credential_process = /bin/sh -c 'touch {marker}'\n",
            marker = process_marker.display()
        );
        let credentials_file = write(".aws/credentials", aws_credentials);
        let config_file = write(".aws/config", &aws_config);
        let gcloud = json!({
            "type": "authorized_user",
            "client_id": "kilncanary-client.apps.googleusercontent.com",
            "client_secret": "kilncanary-client-secret",
            "refresh_token": "kilncanary-refresh-token",
            "token_uri": format!("{l}/token"),
            "quota_project_id": "kilncanary-project",
        })
        .to_string();
        // gcloud's own file, found through HOME or CLOUDSDK_CONFIG.
        write(
            ".config/gcloud/application_default_credentials.json",
            &gcloud,
        );
        let gac = write("google-service-account.json", &gcloud);
        let web_identity = write("web-identity-token", "kilncanary-web-identity-token");
        let azure_token = write("azure-federated-token", "kilncanary-federated-token");
        let canary_key = "a2lsbmNhbmFyeS1henVyZS1hY2NvdW50LWtleQ==";
        let mut env: Vec<(String, String)> = vec![
            // AWS: credentials, profiles, files, region, endpoints.
            ("AWS_ACCESS_KEY_ID", "AKIAKILNCANARYENV".into()),
            ("AWS_SECRET_ACCESS_KEY", "kilncanary-env-secret".into()),
            ("AWS_SESSION_TOKEN", "kilncanary-env-session-token".into()),
            ("AWS_SECURITY_TOKEN", "kilncanary-env-security-token".into()),
            ("AWS_PROFILE", CANARY.into()),
            ("AWS_DEFAULT_PROFILE", CANARY.into()),
            ("AWS_CONFIG_FILE", config_file),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials_file),
            ("AWS_REGION", "kilncanary-1".into()),
            ("AWS_DEFAULT_REGION", "kilncanary-1".into()),
            ("AWS_ENDPOINT_URL", l.clone()),
            ("AWS_ENDPOINT_URL_S3", l.clone()),
            ("AWS_ENDPOINT_URL_STS", l.clone()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", web_identity),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::000000000000:role/kilncanary".into(),
            ),
            ("AWS_ROLE_SESSION_NAME", CANARY.into()),
            // AWS: the instance metadata service and container credentials.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", l.clone()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4".into()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{l}/creds")),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/kilncanary".into(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "kilncanary-container-token".into(),
            ),
            ("ECS_CONTAINER_METADATA_URI_V4", l.clone()),
            // Google: application default credentials and the metadata server.
            ("GOOGLE_APPLICATION_CREDENTIALS", gac),
            (
                "CLOUDSDK_CONFIG",
                home.join(".config/gcloud").display().to_string(),
            ),
            ("GOOGLE_CLOUD_PROJECT", "kilncanary-project".into()),
            ("GCE_METADATA_HOST", host_port.clone()),
            ("GCE_METADATA_IP", host_port.clone()),
            ("GCE_METADATA_ROOT", host_port.clone()),
            ("STORAGE_EMULATOR_HOST", l.clone()),
            // Azure: account keys, connection strings, service principals,
            // managed identity endpoints.
            ("AZURE_STORAGE_ACCOUNT", CANARY.into()),
            ("AZURE_STORAGE_KEY", canary_key.into()),
            ("AZURE_STORAGE_ACCESS_KEY", canary_key.into()),
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                format!(
                    "DefaultEndpointsProtocol=http;AccountName=kilncanary;\
                     AccountKey={canary_key};BlobEndpoint={l}/kilncanary;"
                ),
            ),
            (
                "AZURE_STORAGE_SAS_TOKEN",
                "sv=2021-08-06&sig=kilncanary".into(),
            ),
            ("AZURE_CLIENT_ID", "kilncanary-client-id".into()),
            ("AZURE_TENANT_ID", "kilncanary-tenant".into()),
            ("AZURE_CLIENT_SECRET", "kilncanary-client-secret".into()),
            ("AZURE_FEDERATED_TOKEN_FILE", azure_token),
            ("AZURE_AUTHORITY_HOST", l.clone()),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", l.clone()),
            ("IDENTITY_ENDPOINT", format!("{l}/msi/token")),
            ("IDENTITY_HEADER", "kilncanary-identity-header".into()),
            ("IDENTITY_SERVER_THUMBPRINT", CANARY.into()),
            ("MSI_ENDPOINT", format!("{l}/msi/token")),
            ("MSI_SECRET", "kilncanary-msi-secret".into()),
            ("IMDS_ENDPOINT", l.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.push(("HOME".into(), home.display().to_string()));
        env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
        Sandbox {
            _dir: dir,
            home,
            process_marker,
            listener,
            env,
        }
    }

    /// Runs `child_upload` on `target` (JSON, as in `worker.toml`) and
    /// returns what it printed after [`RESULT`]. `allowed_port` is the one
    /// port the child may connect to; `connects` says whether it must (an
    /// upload) or must not (a refused configuration), when strace can tell.
    async fn run(
        &self,
        target: Value,
        artifact: &Artifact,
        allowed_port: u16,
        connects: bool,
    ) -> String {
        let job = json!({
            "target": target,
            "artifact": artifact.path,
            "name": "composes/c1/disk.raw",
        });
        let exe = std::env::current_exe().expect("the test binary");
        let trace = self.home.parent().expect("sandbox").join("connect.trace");
        let _ = std::fs::remove_file(&trace);
        let strace = strace();
        let mut cmd = match &strace {
            Some(strace) => {
                let mut c = tokio::process::Command::new(strace);
                c.args([
                    "-f",
                    "-qq",
                    "-e",
                    "trace=connect",
                    "-e",
                    "signal=none",
                    "-o",
                ])
                .arg(&trace)
                .arg(&exe);
                c
            }
            None => tokio::process::Command::new(&exe),
        };
        cmd.args([
            "child_upload",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .env(CHILD_JOB, job.to_string())
        .current_dir(&self.home);
        let out = cmd.output().await.expect("running the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let result = stdout
            .lines()
            // The harness may have printed the test's name on the same line.
            .find_map(|l| l.find(RESULT).map(|at| &l[at + RESULT.len()..]))
            .unwrap_or_else(|| {
                panic!(
                    "the child printed no result ({}):\n{stdout}\n{stderr}",
                    out.status
                )
            })
            .to_string();
        assert!(
            out.status.success(),
            "child: {}\n{stdout}\n{stderr}",
            out.status
        );

        self.listener.assert_untouched();
        assert!(
            !self.process_marker.exists(),
            "the AWS profile's credential_process ran"
        );
        if strace.is_some() {
            let n = assert_connects_only_to(&trace, allowed_port);
            assert_eq!(
                n > 0,
                connects,
                "{n} connect call(s) traced; the child should {}have connected",
                if connects { "" } else { "not " }
            );
        } else {
            eprintln!("strace is not installed: the child's connect calls are not traced");
        }
        result
    }
}

fn strace() -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("strace"))
        .find(|p| p.is_file())
}

/// Every IPv4 or IPv6 `connect` in the trace went to 127.0.0.1:`port`;
/// returns how many there were.
fn assert_connects_only_to(trace: &Path, port: u16) -> usize {
    let text = std::fs::read_to_string(trace)
        .unwrap_or_else(|e| panic!("reading the strace log {}: {e}", trace.display()));
    let allowed_port = format!("sin_port=htons({port})");
    let mut seen = 0;
    for line in text.lines().filter(|l| l.contains("connect(")) {
        if !(line.contains("AF_INET") || line.contains("AF_INET6")) {
            continue;
        }
        seen += 1;
        assert!(
            !line.contains("169.254.") && !line.contains("fd00:ec2"),
            "the child connected to a metadata address: {line}"
        );
        assert!(
            line.contains(&allowed_port) && line.contains("inet_addr(\"127.0.0.1\")"),
            "the child connected somewhere other than the storage at 127.0.0.1:{port}: {line}"
        );
    }
    seen
}

fn s3_target(endpoint: &str, server: &S3Server) -> Value {
    json!({
        "type": "s3",
        "endpoint": endpoint,
        "region": "us-east-1",
        "bucket": server.bucket,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "path_style": true,
        "part_size": 5 * MIB,
        "concurrency": 2,
        "retry": retry_json(),
    })
}

fn retry_json() -> Value {
    let r = quick_retries();
    json!({
        "max_attempts": r.max_attempts,
        "initial_backoff_ms": r.initial_backoff_ms,
        "max_backoff_ms": r.max_backoff_ms,
        "request_timeout_secs": r.request_timeout_secs,
    })
}

fn expect_ok(result: &str, a: &Artifact) {
    assert_eq!(result, format!("ok {}", a.sha256), "the upload failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_a_key_pair_uses_only_that_key_pair() {
    let server = S3Server::start("images").expect("s3s-fs");
    let port = server.endpoint().rsplit(':').next().map(str::parse::<u16>);
    let proxy = Recorder::start(port.expect("port").expect("port")).await;
    let sandbox = Sandbox::new();
    // Two parts: the multipart path, not only the single PUT.
    let a = artifact(5 * MIB as usize + 1000);
    let result = sandbox
        .run(s3_target(&proxy.url(), &server), &a, proxy.port, true)
        .await;
    expect_ok(&result, &a);
    assert!(common::read(&server.object_path("composes/c1/disk.raw")) == a.bytes);
    let sent = proxy.sent_lowercase();
    let ours = format!("credential={}/", server.access_key_id.to_lowercase());
    assert!(sent.contains(&ours), "the configured key pair was not used");
    assert!(
        !sent.contains("x-amz-security-token"),
        "a session token was sent"
    );
    proxy.assert_no_canary();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_a_key_pair_is_refused_before_any_connection() {
    let server = S3Server::start("images").expect("s3s-fs");
    let port = server.endpoint().rsplit(':').next().map(str::parse::<u16>);
    let proxy = Recorder::start(port.expect("port").expect("port")).await;
    let sandbox = Sandbox::new();
    let a = artifact(1000);

    let mut absent = s3_target(&proxy.url(), &server);
    let fields = absent.as_object_mut().expect("object");
    fields.remove("access_key_id");
    fields.remove("secret_access_key");
    let result = sandbox.run(absent, &a, proxy.port, false).await;
    assert!(
        result.starts_with("config-error") && result.contains("missing field `access_key_id`"),
        "{result}"
    );

    let mut empty = s3_target(&proxy.url(), &server);
    empty["access_key_id"] = json!("");
    empty["secret_access_key"] = json!("");
    let result = sandbox.run(empty, &a, proxy.port, false).await;
    assert!(
        result.starts_with(
            "error s3 target: invalid configuration: \
             access_key_id and secret_access_key are empty"
        ),
        "{result}"
    );

    let mut no_secret = s3_target(&proxy.url(), &server);
    no_secret["secret_access_key"] = json!("");
    let result = sandbox.run(no_secret, &a, proxy.port, false).await;
    assert!(result.contains("secret_access_key is empty"), "{result}");
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 0);
}

async fn azure_target(server: &AzuriteServer, endpoint: &str) -> Value {
    let t = AzureTarget {
        account: server.account.clone(),
        key: Secret::new(server.key.clone()),
        container: "images".into(),
        endpoint: Some(server.endpoint()),
        block_size: MIB,
        concurrency: 2,
        retry: quick_retries(),
    };
    azure::create_container(&t)
        .await
        .unwrap_or_else(|e| panic!("creating the container: {e}\n{}", server.log()));
    json!({
        "type": "azure",
        "account": server.account,
        "key": server.key,
        "container": "images",
        "endpoint": format!("{endpoint}/{}", server.account),
        "block_size": MIB,
        "concurrency": 2,
        "retry": retry_json(),
    })
}

fn port_of(endpoint: &str) -> u16 {
    let url = url::Url::parse(endpoint).expect("endpoint URL");
    url.port().expect("an explicit port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_with_a_key_uses_only_that_key() {
    let server = AzuriteServer::start().expect("azurite");
    let proxy = Recorder::start(port_of(&server.endpoint())).await;
    let target = azure_target(&server, &proxy.url()).await;
    let sandbox = Sandbox::new();
    let a = artifact(MIB as usize + 1000);
    let result = sandbox.run(target, &a, proxy.port, true).await;
    expect_ok(&result, &a);
    let sent = proxy.sent_lowercase();
    let ours = format!(
        "authorization: sharedkey {}:",
        server.account.to_lowercase()
    );
    assert!(
        sent.contains(&ours),
        "the configured account key was not used"
    );
    proxy.assert_no_canary();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_without_a_key_is_refused_before_any_connection() {
    let server = AzuriteServer::start().expect("azurite");
    let proxy = Recorder::start(port_of(&server.endpoint())).await;
    let target = azure_target(&server, &proxy.url()).await;
    let sandbox = Sandbox::new();
    let a = artifact(1000);

    let mut absent = target.clone();
    absent.as_object_mut().expect("object").remove("key");
    let result = sandbox.run(absent, &a, proxy.port, false).await;
    assert!(
        result.starts_with("config-error") && result.contains("missing field `key`"),
        "{result}"
    );

    let mut empty = target;
    empty["key"] = json!("");
    let result = sandbox.run(empty, &a, proxy.port, false).await;
    assert!(
        result.starts_with("error azure target: invalid configuration: key is empty"),
        "{result}"
    );
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 0);
}

/// fake-gcs-server hands out session URLs on its external URL: the proxy
/// must exist before the server starts.
async fn gcs_behind_proxy() -> (GcsServer, Recorder) {
    let upstream = kiln_testsupport::free_port().expect("port");
    let proxy = Recorder::start(upstream).await;
    let server = GcsServer::start_on(upstream, "images", &proxy.url()).expect("fake-gcs-server");
    (server, proxy)
}

fn gcs_target(proxy: &Recorder, token: Option<&str>) -> Value {
    let mut t = json!({
        "type": "gcs",
        "endpoint": proxy.url(),
        "bucket": "images",
        "chunk_size": 256 * 1024,
        "retry": retry_json(),
    });
    if let Some(token) = token {
        t["bearer_token"] = json!(token);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_with_a_token_uses_only_that_token() {
    let (_server, proxy) = gcs_behind_proxy().await;
    let sandbox = Sandbox::new();
    let a = artifact(600_000);
    let token = "ya29.kiln-configured-token";
    let result = sandbox
        .run(gcs_target(&proxy, Some(token)), &a, proxy.port, true)
        .await;
    expect_ok(&result, &a);
    let sent = proxy.sent_lowercase();
    let ours = format!("authorization: bearer {}", token.to_lowercase());
    assert!(sent.contains(&ours), "the configured token was not sent");
    let authorizations = sent.matches("authorization:").count();
    assert_eq!(
        authorizations,
        sent.matches(&ours).count(),
        "another Authorization header was sent"
    );
    proxy.assert_no_canary();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_without_a_token_is_anonymous() {
    let (_server, proxy) = gcs_behind_proxy().await;
    let sandbox = Sandbox::new();
    let a = artifact(600_000);
    let result = sandbox
        .run(gcs_target(&proxy, None), &a, proxy.port, true)
        .await;
    expect_ok(&result, &a);
    let sent = proxy.sent_lowercase();
    assert!(
        sent.contains("uploadtype=resumable"),
        "no upload reached the proxy"
    );
    assert!(
        !sent.contains("authorization:"),
        "credentials were sent for a target configured without any"
    );
    proxy.assert_no_canary();
}
