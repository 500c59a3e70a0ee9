//! The worker API over real mutual TLS, with certificates made by
//! `tools/gen-certs.sh`: a certified, allowed worker takes, heart-beats and
//! finishes a compose's job; everyone else (no certificate, another CA, a
//! name outside allowed_domains, TLS 1.2) is refused at the handshake and
//! gets no job.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{pxe_request, read_to_end, read_until, Backend, TestComposer};
use kiln_queue::{DequeueFilter, JobState, Outcome};
use serde_json::{json, Value};
use uuid::Uuid;

struct Cluster {
    composer: TestComposer,
    worker_addr: SocketAddr,
    certs: tempfile::TempDir,
    /// A second CA, unknown to the composer, with a `worker1` of its own.
    other_ca: tempfile::TempDir,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

use kiln_testsupport::host::gen_certs;
use kiln_testsupport::metrics::sample;

async fn start(backend: Backend) -> Cluster {
    start_configured(backend, |_| {}).await
}

async fn start_configured(
    backend: Backend,
    tweak: impl FnOnce(&mut kiln_composer::ComposerConfig),
) -> Cluster {
    let certs = tempfile::tempdir().unwrap();
    gen_certs(
        certs.path(),
        &[
            "--worker",
            "worker1",
            "--worker",
            "node7.cluster.example",
            "--worker",
            "intruder",
        ],
    );
    let other_ca = tempfile::tempdir().unwrap();
    gen_certs(other_ca.path(), &["--worker", "worker1"]);
    let dir = certs.path().to_owned();
    let composer = common::start_with(backend, |c| {
        c.worker_api.ca = Some(dir.join("ca.pem"));
        c.worker_api.cert = Some(dir.join("composer.pem"));
        c.worker_api.key = Some(dir.join("composer.key"));
        c.worker_api.allowed_domains = vec!["worker1".into(), "*.cluster.example".into()];
        tweak(c);
    })
    .await;
    let tls = kiln_composer::worker_api::load_tls(&composer.state.config.worker_api)
        .unwrap()
        .expect("certificates are configured");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(kiln_composer::worker_api::serve(
        composer.state.clone(),
        listener,
        tls,
        std::future::pending(),
    ));
    Cluster {
        composer,
        worker_addr,
        certs,
        other_ca,
        _server: server,
    }
}

/// A worker's HTTP client: trusts the cluster CA, presents `identity`
/// (`(dir, name)` → `dir/worker-name.pem` and `.key`) if any.
struct Worker {
    http: reqwest::Client,
    base: String,
}

impl Cluster {
    fn worker(&self, identity: Option<(&Path, &str)>) -> Worker {
        Worker {
            http: self.client_builder(identity).build().unwrap(),
            base: format!(
                "https://localhost:{}/api/worker/v1",
                self.worker_addr.port()
            ),
        }
    }

    fn client_builder(&self, identity: Option<(&Path, &str)>) -> reqwest::ClientBuilder {
        let ca = std::fs::read(self.certs.path().join("ca.pem")).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            // The server certificate names localhost; connect to the loopback address.
            .resolve("localhost", self.worker_addr)
            .timeout(Duration::from_secs(30));
        if let Some((dir, name)) = identity {
            let mut pem = std::fs::read(dir.join(format!("worker-{name}.key"))).unwrap();
            pem.extend(std::fs::read(dir.join(format!("worker-{name}.pem"))).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder
    }

    fn certified(&self, name: &str) -> Worker {
        self.worker(Some((self.certs.path(), name)))
    }

    /// A certified worker that speaks TLS 1.2 at most.
    fn outdated(&self, name: &str) -> Worker {
        let mut w = self.certified(name);
        w.http = self
            .client_builder(Some((self.certs.path(), name)))
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .build()
            .unwrap();
        w
    }

    /// Submits the small pxe compose; returns its id and the depsolve job's id.
    async fn compose(&self) -> (String, Uuid) {
        let (status, body) = self.composer.post("/compose", &pxe_request()).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let jobs = self.jobs(&id).await;
        assert_eq!(jobs[0]["type"], "depsolve");
        assert_eq!(jobs[0]["state"], "queued");
        (id, jobs[0]["id"].as_str().unwrap().parse().unwrap())
    }

    async fn jobs(&self, compose: &str) -> Vec<Value> {
        let (status, graph) = self
            .composer
            .get(&format!("/composes/{compose}/jobs"))
            .await;
        assert_eq!(status, 200, "{graph}");
        graph["jobs"].as_array().unwrap().clone()
    }

    async fn job_state(&self, id: Uuid) -> JobState {
        self.composer.queue.job(id).await.unwrap().unwrap().state
    }
}

impl Worker {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn take(&self, types: &[&str], wait_secs: u64) -> reqwest::Result<(u16, Value)> {
        self.post(
            "/jobs",
            &json!({"types": types, "arch": "x86_64", "wait_secs": wait_secs}),
        )
        .await
    }
}

/// A package of a depsolve job's result, as a worker reports it.
fn depsolved(name: &str, version: &str, release: &str) -> Value {
    json!({"type": "deb", "name": name, "version": version, "release": release,
           "arch": "amd64", "sigmd5": "", "checksum": "sha256:00",
           "url": format!("http://deb.debian.org/debian/pool/main/{name}.deb"), "size": 1})
}

async fn a_certified_worker_runs_a_compose_job(backend: Backend) {
    let c = start(backend).await;
    let (compose, depsolve) = c.compose().await;
    let w = c.certified("worker1");

    let (status, job) = w.take(&["depsolve"], 5).await.unwrap();
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], depsolve.to_string());
    assert_eq!(job["type"], "depsolve");
    assert_eq!(job["compose_id"], compose);
    assert_eq!(job["args"]["architecture"], "x86_64");
    let token = job["token"].as_str().unwrap().to_owned();

    let jobs = c.jobs(&compose).await;
    assert_eq!(jobs[0]["state"], "running");
    // The worker's name is its certificate's.
    assert_eq!(jobs[0]["worker"], "worker1");

    // Another certified worker cannot renew or finish a lease that is not its own.
    let other = c.certified("node7.cluster.example");
    let (status, _) = other
        .post(&format!("/jobs/{token}/heartbeat"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = other
        .post(&format!("/jobs/{token}/finish"), &json!({"success": true}))
        .await
        .unwrap();
    assert_eq!(status, 404);
    // Nor give it back, nor report on it.
    let (status, _) = other
        .post(
            &format!("/jobs/{token}/release"),
            &json!({"reason": "not mine"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = other
        .post(
            &format!("/jobs/{token}/progress"),
            &json!({"log": ["forged line"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let jobs = c.jobs(&compose).await;
    assert_eq!(jobs[0]["state"], "running");
    assert_eq!(jobs[0]["retries"], 0, "{}", jobs[0]);
    assert!(
        c.composer
            .queue
            .live_states(&[depsolve])
            .await
            .unwrap()
            .is_empty(),
        "another worker's report was kept"
    );

    let (status, beat) = w
        .post(&format!("/jobs/{token}/heartbeat"), &json!({}))
        .await
        .unwrap();
    assert_eq!((status, beat), (200, json!({"status": "alive"})));

    // A result that is not the job kind's is refused, and nothing is stored.
    let (status, err) = w
        .post(
            &format!("/jobs/{token}/finish"),
            &json!({"success": true, "result": {"packages": [{"name": "chrony"}]}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("result")),
        "{err}"
    );
    assert_eq!(c.jobs(&compose).await[0]["state"], "running");

    let result = json!({"packages": [depsolved("chrony", "4.3", "2")]});
    let (status, done) = w
        .post(
            &format!("/jobs/{token}/finish"),
            &json!({"success": true, "result": result}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        done,
        json!({"id": depsolve.to_string(), "state": "success"})
    );

    let jobs = c.jobs(&compose).await;
    assert_eq!(jobs[0]["state"], "success");
    assert_eq!(jobs[1]["type"], "manifest");
    assert_eq!(
        jobs[1]["state"], "queued",
        "the next job of the graph is ready"
    );
    let stored = c.composer.queue.job(depsolve).await.unwrap().unwrap();
    assert_eq!(stored.result, Some(result));

    // The lease ended with the job.
    let (status, err) = w
        .post(&format!("/jobs/{token}/heartbeat"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-23");
    let (status, _) = w
        .post(&format!("/jobs/{token}/finish"), &json!({"success": true}))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_certified_worker_runs_a_compose_job_sqlite() {
    a_certified_worker_runs_a_compose_job(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_certified_worker_runs_a_compose_job_postgres() {
    a_certified_worker_runs_a_compose_job(Backend::Postgres).await;
}

async fn uncertified_peers_are_refused_at_the_handshake(backend: Backend) {
    let c = start(backend).await;
    let (compose, depsolve) = c.compose().await;

    use rustls::AlertDescription as Alert;
    let refused = [
        (
            "no certificate",
            c.worker(None),
            &[Alert::CertificateRequired][..],
        ),
        // Both CAs carry the script's subject, so the chain fails on its
        // signature rather than on an unknown issuer; either refuses it.
        (
            "a certificate from another CA",
            c.worker(Some((c.other_ca.path(), "worker1"))),
            &[Alert::DecryptError, Alert::UnknownCA][..],
        ),
        (
            "a name outside allowed_domains",
            c.certified("intruder"),
            &[Alert::BadCertificate][..],
        ),
        (
            "an allowed worker speaking TLS 1.2",
            c.outdated("worker1"),
            &[Alert::ProtocolVersion][..],
        ),
    ];
    for (what, w, expected) in &refused {
        match w.take(&["depsolve"], 0).await {
            Err(e) => match tls_alert(&e) {
                Some(alert) => assert!(expected.contains(&alert), "{what}: alert {alert:?}"),
                None => panic!("{what}: refused, but not by a TLS alert: {e:?}"),
            },
            Ok((status, body)) => panic!("{what}: got an HTTP answer {status} {body}"),
        }
        assert_eq!(
            c.job_state(depsolve).await,
            JobState::Queued,
            "{what}: no job handed out"
        );
    }

    // The same job goes to an allowed name (here through the wildcard), so
    // the refusals above were about the peers, not about the job.
    let (status, job) = c
        .certified("node7.cluster.example")
        .take(&["depsolve"], 5)
        .await
        .unwrap();
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], depsolve.to_string());
    assert_eq!(c.jobs(&compose).await[0]["worker"], "node7.cluster.example");
}

/// The TLS alert the composer sent, found in the error's chain of causes.
fn tls_alert(e: &reqwest::Error) -> Option<rustls::AlertDescription> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        // io::Errors wrap their cause (sometimes another io::Error) without
        // listing it as their source.
        let mut inner = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(rustls::Error::AlertReceived(alert)) = inner.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        cause = err.source();
    }
    None
}

#[tokio::test]
async fn uncertified_peers_are_refused_at_the_handshake_sqlite() {
    uncertified_peers_are_refused_at_the_handshake(Backend::Sqlite).await;
}

#[tokio::test]
async fn uncertified_peers_are_refused_at_the_handshake_postgres() {
    uncertified_peers_are_refused_at_the_handshake(Backend::Postgres).await;
}

async fn a_canceled_compose_stops_its_worker(backend: Backend) {
    let c = start(backend).await;
    let (compose, depsolve) = c.compose().await;
    let w = c.certified("worker1");
    let (status, job) = w.take(&["depsolve"], 5).await.unwrap();
    assert_eq!(status, 200, "{job}");
    let token = job["token"].as_str().unwrap().to_owned();

    let (status, body) = c
        .composer
        .post(&format!("/composes/{compose}/cancel"), &json!({}))
        .await;
    assert!(status < 300, "{status} {body}");

    let (status, beat) = w
        .post(&format!("/jobs/{token}/heartbeat"), &json!({}))
        .await
        .unwrap();
    assert_eq!((status, beat), (200, json!({"status": "canceled"})));
    let (status, err) = w
        .post(
            &format!("/jobs/{token}/finish"),
            &json!({"success": true, "result": {"packages": []}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-24");
    assert_eq!(c.job_state(depsolve).await, JobState::Canceled);
}

#[tokio::test]
async fn a_canceled_compose_stops_its_worker_sqlite() {
    a_canceled_compose_stops_its_worker(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_canceled_compose_stops_its_worker_postgres() {
    a_canceled_compose_stops_its_worker(Backend::Postgres).await;
}

#[tokio::test]
async fn requests_are_checked_and_an_idle_poll_answers_204() {
    let c = start(Backend::Sqlite).await;
    let w = c.certified("worker1");

    // Nothing queued: the long poll waits, then answers 204.
    let started = std::time::Instant::now();
    let (status, _) = w.take(&["build"], 1).await.unwrap();
    assert_eq!(status, 204);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A job enqueued while a worker waits is handed to it.
    let waiting = tokio::spawn(async move { w.take(&["build"], 20).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = kiln_queue::NewJob::new("build", "x86_64", "default", json!({"image": 0}));
    c.composer
        .queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .unwrap();
    let (status, got) = waiting.await.unwrap().unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], job.id.to_string());
    assert_eq!(got["compose_id"], Value::Null);

    let w = c.certified("worker1");
    let unknown_lease = format!("/jobs/{}/finish", Uuid::new_v4());
    let field_errors = [
        ("/jobs", json!({"types": [], "arch": "x86_64"}), "types"),
        (
            "/jobs",
            json!({"types": ["build"], "arch": "x86_64", "wait_secs": 3600}),
            "wait_secs",
        ),
        (
            "/jobs",
            json!({"types": ["build"], "arch": "x86_64", "worker": "me"}),
            "worker",
        ),
        ("/jobs/not-a-token/heartbeat", json!({}), "token"),
        (unknown_lease.as_str(), json!({"success": false}), "reason"),
    ];
    for (path, body, field) in field_errors {
        let (status, err) = w.post(path, &body).await.unwrap();
        assert_eq!(status, 400, "{path} {body}: {err}");
        assert_eq!(err["details"]["field"], field, "{path} {body}: {err}");
        assert_eq!(err["kind"], "Error");
    }
    let (status, err) = w
        .post(&format!("/jobs/{}/heartbeat", Uuid::new_v4()), &json!({}))
        .await
        .unwrap();
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("IMAGE-BUILDER-COMPOSER-23"))
    );
}

/// A worker certificate bound to `build` jobs of tenant A never receives
/// tenant B's jobs nor a manifest job, whatever it asks for; a worker the
/// bindings do not name takes nothing; a binding without limits takes all.
async fn bindings_limit_what_a_worker_takes(backend: Backend) {
    use kiln_composer::config::WorkerBinding;
    use kiln_queue::{ComposeRecord, NewJob};
    let c = start_configured(backend, |cfg| {
        cfg.worker_api.bindings = vec![
            WorkerBinding {
                worker: "node7.cluster.example".into(),
                job_types: vec!["build".into()],
                tenants: vec!["tenant-a".into()],
            },
            WorkerBinding {
                worker: "worker1".into(),
                job_types: vec![],
                tenants: vec![],
            },
        ];
    })
    .await;
    let queue = &c.composer.queue;
    let job = |kind: &str, tenant: &str| NewJob::new(kind, "x86_64", tenant, json!({}));
    let (b_build, a_manifest, a_build) = (
        job("build", "tenant-b"),
        job("manifest", "tenant-a"),
        job("build", "tenant-a"),
    );
    for (tenant, jobs) in [
        ("tenant-b", vec![b_build.clone()]),
        ("tenant-a", vec![a_manifest.clone()]),
    ] {
        let compose = ComposeRecord {
            id: Uuid::new_v4(),
            channel: tenant.into(),
            request: json!({}),
            created_at: chrono::Utc::now(),
        };
        queue.create_compose(&compose, &jobs).await.unwrap();
    }
    let bound = c.certified("node7.cluster.example");
    let everything = ["build", "manifest", "depsolve"];
    for channels in [
        json!([]),
        json!(["tenant-b"]),
        json!(["tenant-a", "tenant-b"]),
    ] {
        let (status, body) = bound
            .post("/jobs", &json!({"types": everything, "arch": "x86_64", "channels": channels, "wait_secs": 1}))
            .await
            .unwrap();
        assert_eq!(status, 204, "channels {channels}: {body}");
    }
    for j in [&b_build, &a_manifest] {
        assert_eq!(c.job_state(j.id).await, JobState::Queued, "{}", j.job_type);
    }

    // Tenant A's build is what it may take: it leaves the queue.
    let compose = ComposeRecord {
        id: Uuid::new_v4(),
        channel: "tenant-a".into(),
        request: json!({}),
        created_at: chrono::Utc::now(),
    };
    queue
        .create_compose(&compose, std::slice::from_ref(&a_build))
        .await
        .unwrap();
    let _ = bound.take(&everything, 1).await.unwrap();
    assert_ne!(c.job_state(a_build.id).await, JobState::Queued);
    for j in [&b_build, &a_manifest] {
        assert_eq!(c.job_state(j.id).await, JobState::Queued, "{}", j.job_type);
    }

    // worker1 is bound without limits: B's build is there to take.
    let _ = c.certified("worker1").take(&["build"], 1).await.unwrap();
    assert_ne!(c.job_state(b_build.id).await, JobState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_limit_what_a_worker_takes_sqlite() {
    bindings_limit_what_a_worker_takes(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_limit_what_a_worker_takes_postgres() {
    bindings_limit_what_a_worker_takes(Backend::Postgres).await
}

/// A worker that goes silent leaves no live state behind once its job is
/// taken back (live state is bounded by the jobs really running), and what
/// it reported is kept as the job's sealed log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_workers_live_state_is_sealed_into_its_log() {
    let c = start_configured(Backend::Sqlite, |cfg| {
        cfg.queue.heartbeat_timeout_secs = 1;
        cfg.queue.reap_interval_secs = 1;
        cfg.queue.max_retries = 0;
    })
    .await;
    let (_, depsolve) = c.compose().await;
    let w = c.certified("worker1");
    let (status, job) = w.take(&["depsolve"], 5).await.unwrap();
    assert_eq!(status, 200, "{job}");
    let token = job["token"].as_str().unwrap().to_owned();
    let (status, _) = w
        .post(
            &format!("/jobs/{token}/progress"),
            &json!({"log": ["fetching indexes"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let q = &c.composer.state.queue;
    assert_eq!(q.live_states(&[depsolve]).await.unwrap().len(), 1);
    let log = q.job_log(depsolve).await.unwrap().unwrap();
    assert_eq!(
        (log.text.as_str(), log.sealed),
        ("fetching indexes\n", false)
    );
    // Silent from now on: the reaper fails the job, its live state goes and
    // its log is sealed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.job_state(depsolve).await != JobState::Failed
        || !q.live_states(&[depsolve]).await.unwrap().is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live state kept: {:?}",
            q.live_states(&[depsolve]).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = q.job_log(depsolve).await.unwrap().unwrap();
    assert_eq!(
        (log.text.as_str(), log.sealed),
        ("fetching indexes\n", true)
    );
}

/// With `worker_api.crl`, a revoked worker certificate fails the handshake,
/// and a list changed on disk is read again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_worker_certificates_are_refused_and_the_list_is_reloaded() {
    let c = start_configured(Backend::Sqlite, |cfg| {
        let dir = cfg
            .worker_api
            .ca
            .clone()
            .unwrap()
            .parent()
            .unwrap()
            .to_owned();
        gen_certs(&dir, &["--revoke", "intruder"]);
        cfg.worker_api.crl = Some(dir.join("crl.pem"));
    })
    .await;
    for name in ["worker1", "node7.cluster.example"] {
        let (status, body) = c.certified(name).take(&["build"], 0).await.unwrap();
        assert_eq!(status, 204, "{name}: {body}");
    }
    // A connection worker1 keeps open across the revocation.
    let open = c.certified("worker1");
    let (status, body) = open.take(&["build"], 0).await.unwrap();
    assert_eq!(status, 204, "{body}");
    // Revoke worker1 too: the next handshake reads the new list.
    gen_certs(
        c.certs.path(),
        &["--revoke", "intruder", "--revoke", "worker1"],
    );
    // The open connection's next request is refused too.
    let (status, body) = open.take(&["build"], 0).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("IMAGE-BUILDER-COMPOSER-30")),
        "{body}"
    );
    let err = c
        .certified("worker1")
        .take(&["build"], 0)
        .await
        .expect_err("a revoked certificate must not get in");
    assert_eq!(
        tls_alert(&err),
        Some(rustls::AlertDescription::CertificateRevoked),
        "{err:?}"
    );
    let (status, body) = c
        .certified("node7.cluster.example")
        .take(&["build"], 0)
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
}

/// Two composers on one PostgreSQL database: a worker reports to one, and
/// the other's status and event stream show the build's phase, progress and
/// log lines (also a report too large for one NOTIFY), and its stored log
/// once the build ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_composer_shows_what_a_worker_reports_to_one() {
    let a = start(Backend::Postgres).await;
    let url = a.composer.state.config.database_url.clone().unwrap();
    let b = common::start_with(Backend::Postgres, |c| c.database_url = Some(url)).await;
    let (id, _) = a.compose().await;
    // Depsolve and manifest end in the queue; the build goes to a worker.
    let q = &a.composer.queue;
    let manifest = json!({"manifest": {"version": "2", "pipelines": []}, "export": "image",
                          "filename": "root.tar"});
    for (t, result) in [
        ("depsolve", json!({"packages": []})),
        ("manifest", manifest),
    ] {
        let lease = q
            .dequeue(&DequeueFilter::types(&[t]), "test", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        q.finish(lease.token, Outcome::Success(result))
            .await
            .unwrap();
    }
    let w = a.certified("worker1");
    let (status, job) = w.take(&["build"], 5).await.unwrap();
    assert_eq!(status, 200, "{job}");
    let token = job["token"].as_str().unwrap().to_owned();
    let build = job["id"].as_str().unwrap().to_owned();

    let resp = b
        .http
        .get(b.url(&format!("/composes/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let first = read_until(&mut stream, &mut text, "\n\n").await;
    assert!(first.contains("\"building\""), "{first}");

    let report = |body: Value| {
        let (w, token) = (&w, &token);
        async move {
            let (status, r) = w
                .post(&format!("/jobs/{token}/progress"), &body)
                .await
                .unwrap();
            assert_eq!(status, 200, "{r}");
        }
    };
    report(
        json!({"phase": "building", "progress": {"done": 1, "total": 3},
                  "log": ["stage org.osbuild.mkdir", "stage org.osbuild.apt"]}),
    )
    .await;
    let got = read_until(&mut stream, &mut text, "\"done\":1").await;
    assert!(
        got.contains("event: log") && got.contains("stage org.osbuild.apt"),
        "{got}"
    );
    let (_, s) = b.get(&format!("/composes/{id}")).await;
    assert_eq!(s["image_status"]["status"], "building", "{s}");
    assert_eq!(s["image_status"]["progress"]["done"], 1, "{s}");

    // 1000 lines: far more than one NOTIFY carries.
    let many: Vec<String> = (0..1000)
        .map(|i| format!("unpacking package {i:04}"))
        .collect();
    report(json!({"phase": "uploading", "log": many})).await;
    read_until(&mut stream, &mut text, "unpacking package 0999").await;
    let (_, s) = b.get(&format!("/composes/{id}")).await;
    assert_eq!(s["image_status"]["status"], "uploading", "{s}");

    let (status, r) = w
        .post(
            &format!("/jobs/{token}/finish"),
            &json!({"success": false, "reason": "upload refused"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{r}");
    let rest = read_to_end(&mut stream, &mut text).await;
    assert!(rest.contains("\"failure\""), "{rest}");
    // The log, kept and sealed, from the other composer.
    let (_, logs) = b.get(&format!("/composes/{id}/logs")).await;
    let job = logs["image_builds"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == json!(build))
        .unwrap()
        .clone();
    assert_eq!(job["log"]["complete"], true, "{job}");
    assert_eq!(job["log"]["lines"], 1002);
    assert_eq!(job["log"]["dropped"], 0);
    let text = job["log"]["text"].as_str().unwrap();
    assert!(text
        .starts_with("stage org.osbuild.mkdir\nstage org.osbuild.apt\nunpacking package 0000\n"));
    assert!(text.ends_with("unpacking package 0999\n"));
    assert!(b
        .queue
        .live_states(&[build.parse().unwrap()])
        .await
        .unwrap()
        .is_empty());
}

async fn scrape(http: &reqwest::Client, url: &str) -> kiln_testsupport::metrics::Scrape {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    kiln_testsupport::metrics::parse(&text)
}

/// The composer's Prometheus metrics, scraped from their own listener and
/// parsed as Prometheus text: osbuild-composer's names in the
/// `image_builder` namespace, moving as composes are made and their jobs
/// handed out and finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_composes_and_jobs() {
    let c = start(Backend::Postgres).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let app = kiln_composer::metrics::router(c.composer.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let m = scrape(&http, &url).await;
    assert_eq!(
        sample(&m, "image_builder_composer_total_compose_requests", &[]),
        0.0
    );

    let (id, depsolve) = c.compose().await;
    c.compose().await;
    let (status, _) = c
        .composer
        .get(&format!("/composes/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    let m = scrape(&http, &url).await;
    let api = "/api/image-builder-composer/v2";
    assert_eq!(
        sample(&m, "image_builder_composer_total_compose_requests", &[]),
        2.0
    );
    let posted = [
        ("method", "POST"),
        ("path", &*format!("{api}/compose")),
        ("code", "201"),
        ("subsystem", "composer"),
        ("tenant", "default"),
    ];
    assert_eq!(
        sample(&m, "image_builder_composer_request_count", &posted),
        2.0
    );
    // Ids are not labels: every compose's status is one path.
    let missing = [("path", &*format!("{api}/composes/-")), ("code", "404")];
    assert_eq!(
        sample(&m, "image_builder_composer_request_count", &missing),
        1.0
    );
    let timed = [("path", &*format!("{api}/compose")), ("tenant", "default")];
    assert_eq!(
        sample(&m, "image_builder_composer_http_duration_seconds", &timed),
        2.0
    );
    assert!(sample(&m, "image_builder_composer_total_requests", &[]) >= 5.0);
    let of = |t: &'static str| [("type", t), ("tenant", "default")];
    assert_eq!(
        sample(&m, "image_builder_worker_pending_jobs", &of("depsolve")),
        2.0
    );
    assert_eq!(
        sample(&m, "image_builder_worker_pending_jobs", &of("build")),
        2.0
    );
    assert_eq!(
        sample(&m, "image_builder_worker_running_jobs", &of("depsolve")),
        0.0
    );

    // A worker takes one depsolve and fails it.
    let w = c.certified("worker1");
    let (status, job) = w.take(&["depsolve"], 5).await.unwrap();
    assert_eq!(status, 200, "{job}");
    let m = scrape(&http, &url).await;
    assert_eq!(
        sample(&m, "image_builder_worker_pending_jobs", &of("depsolve")),
        1.0
    );
    assert_eq!(
        sample(&m, "image_builder_worker_running_jobs", &of("depsolve")),
        1.0
    );
    let waited = [
        ("type", "depsolve"),
        ("tenant", "default"),
        ("arch", "x86_64"),
    ];
    assert_eq!(
        sample(
            &m,
            "image_builder_worker_job_wait_duration_seconds",
            &waited
        ),
        1.0
    );
    let active = [("worker", "worker1"), ("arch", "x86_64")];
    assert_eq!(
        sample(&m, "image_builder_worker_active_workers", &active),
        1.0
    );
    let token = job["token"].as_str().unwrap();
    let (status, _) = w
        .post(
            &format!("/jobs/{token}/finish"),
            &json!({"success": false, "reason": "no such package"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let m = scrape(&http, &url).await;
    let failed = [
        ("type", "depsolve"),
        ("status", "failure"),
        ("tenant", "default"),
        ("arch", "x86_64"),
    ];
    assert_eq!(sample(&m, "image_builder_worker_total_jobs", &failed), 1.0);
    assert_eq!(
        sample(&m, "image_builder_worker_job_duration_seconds", &failed),
        1.0
    );
    assert_eq!(
        sample(&m, "image_builder_worker_running_jobs", &of("depsolve")),
        0.0
    );
    // The failed depsolve failed its compose's other jobs.
    assert_eq!(
        sample(&m, "image_builder_worker_pending_jobs", &of("build")),
        1.0
    );
    let finished = [
        ("path", "/api/worker/v1/jobs/-/finish"),
        ("code", "200"),
        ("subsystem", "worker"),
    ];
    assert_eq!(
        sample(&m, "image_builder_worker_request_count", &finished),
        1.0
    );
    assert_eq!(c.job_state(depsolve).await, JobState::Failed, "{id}");
    // Not on the compose API's listener.
    let root = c.composer.base.trim_end_matches(api);
    let r = http.get(format!("{root}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Statuses are reused (for an hour here) but never past a change: a
/// compose canceled through composer A reads canceled on composer B, whose
/// answer of a moment before was kept; a compose deleted through B is gone
/// from B at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_status_goes_with_any_change_on_any_composer() {
    let a = start_configured(Backend::Postgres, |c| c.status_cache_secs = 3600).await;
    let url = a.composer.state.config.database_url.clone().unwrap();
    let b = common::start_with(Backend::Postgres, |c| {
        c.database_url = Some(url);
        c.status_cache_secs = 3600;
    })
    .await;
    let (id, _) = a.compose().await;
    let (status, s) = b.get(&format!("/composes/{id}")).await;
    assert_eq!(
        (status, s["status"].clone()),
        (200, json!("pending")),
        "{s}"
    );
    assert_eq!(b.state.statuses.len(), 1, "the pending status is kept");
    let (_, again) = b.get(&format!("/composes/{id}")).await;
    assert_eq!(again, s);

    let (status, _) = a
        .composer
        .post(&format!("/composes/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = b.get(&format!("/composes/{id}")).await;
        if s["status"] == json!("failure") {
            assert_eq!(s["canceled"], true, "{s}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "composer B still answers {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another tenant's kept status is not theirs to read.
    let (status, _) = b
        .http
        .get(b.url(&format!("/composes/{id}")))
        .header("X-Kiln-Channel", "other")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_ne!(status, 200);
    let (status, _) = b.delete(&format!("/composes/{id}")).await;
    assert_eq!(status, 200);
    let (status, _) = b.get(&format!("/composes/{id}")).await;
    assert_eq!(status, 404);
}
