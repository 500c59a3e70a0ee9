//! What must not lose work: a worker killed mid-build, a build canceled
//! mid-way, a storage server that goes away, and workers the composer must
//! not trust.

mod common;

use std::time::{Duration, Instant};

use common::{gen_certs, local_target, strip_ansi, Kiln, Worker};
use kiln_testsupport::host::attachments_under;
use kiln_testsupport::storage::S3Server;
use serde_json::{json, Value};

fn building(s: &Value) -> bool {
    s["image_status"]["status"] == json!("building")
        && s["image_status"]["progress"]["total"].as_i64() > Some(0)
}

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("success") | Some("failure"))
}

/// A worker `w1.kiln.test` with these targets, and a compose uploading to
/// `upload`, once its build runs or has ended.
async fn build_started(kiln: &Kiln, targets: &str, upload: Value) -> (Worker, String) {
    build_started_as(kiln, targets, upload, None).await
}

/// [`build_started`], the compose submitted with `X-Request-Id: request_id`.
async fn build_started_as(
    kiln: &Kiln,
    targets: &str,
    upload: Value,
    request_id: Option<&str>,
) -> (Worker, String) {
    let worker = kiln.worker("w1.kiln.test", targets);
    let id = kiln
        .submit_as(&kiln.request(json!([upload])), request_id)
        .await;
    kiln.wait(&id, Duration::from_secs(300), |s| {
        building(s) || finished(s)
    })
    .await;
    (worker, id)
}

async fn build_job(kiln: &Kiln, id: &str) -> kiln_queue::Job {
    let id = uuid::Uuid::parse_str(id).unwrap();
    let jobs = kiln.state.queue.compose_jobs(id).await.unwrap();
    jobs.into_iter().find(|j| j.job_type == "build").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_build_loses_nothing_and_another_completes_the_job() {
    let kiln = Kiln::start(|c| {
        // Short enough to take the job back soon, long enough for a loaded machine.
        c.queue.heartbeat_timeout_secs = 10;
        c.queue.max_retries = 2;
    })
    .await;
    let local = kiln.dir.path().join("images");
    std::fs::create_dir_all(&local).unwrap();
    let (mut first, id) = build_started(
        &kiln,
        &local_target(&local),
        json!({"type": "local", "upload_options": {}}),
    )
    .await;
    assert!(
        !first.executors().is_empty(),
        "no executor runs: {}\n{}",
        first.log(),
        kiln.status(&id).await
    );
    first.kill9();
    // The dead worker's executor stops too, and releases what it held.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first.executors().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.executors().is_empty(),
        "the executor outlived its worker"
    );
    assert!(attachments_under(&first.home).is_empty());

    let second = kiln.worker("w2.kiln.test", &local_target(&local));
    let done = kiln.wait(&id, Duration::from_secs(600), finished).await;
    assert_eq!(done["status"], json!("success"), "{done}\n{}", second.log());
    let job = build_job(&kiln, &id).await;
    assert_eq!(job.retries, 1, "taken back once");
    assert_eq!(job.worker.as_deref(), Some("w2.kiln.test"));
    // One artifact and its SBOM, written once, by the second worker.
    let mut files: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            std::ffi::OsString::from(format!("{id}-0-root.tar")),
            std::ffi::OsString::from(format!("{id}-0-root.tar.spdx.json")),
        ]
    );
}

/// A worker told to stop at once (a second SIGTERM) gives its job back:
/// it is queued again at once, counted as a requeue and saying why, long
/// before the composer's heartbeat timeout; the lines its build logged are
/// kept with the job. The compose's `X-Request-Id` follows the build: on
/// every line of the worker's log about the job, and in the executor's
/// output kept in the build's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_told_to_stop_at_once_gives_its_job_back_at_once() {
    let kiln = Kiln::start(|c| {
        // Far beyond the test: only the worker's release can requeue it.
        c.queue.heartbeat_timeout_secs = 3600;
        c.queue.max_retries = 2;
    })
    .await;
    let local = kiln.dir.path().join("images");
    let request_id = "e2e-req.7:stop-at-once";
    let (mut first, id) = build_started_as(
        &kiln,
        &local_target(&local),
        json!({"type": "local", "upload_options": {}}),
        Some(request_id),
    )
    .await;
    let build = build_job(&kiln, &id).await;
    assert_eq!(
        build.state,
        kiln_queue::JobState::Running,
        "{}",
        kiln.status(&id).await
    );
    first.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.terminate();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = build_job(&kiln, &id).await;
        if job.state != kiln_queue::JobState::Running || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job.state, kiln_queue::JobState::Queued, "{}", first.log());
    assert_eq!(job.retries, 1);
    assert_eq!(
        job.reason.as_deref(),
        Some("requeued (attempt 1): worker w1.kiln.test handed it back (told to stop at once)")
    );
    let status = first.child.wait().unwrap();
    assert!(
        status.success(),
        "the worker's exit: {status}\n{}",
        first.log()
    );
    assert!(
        first.executors().is_empty(),
        "the executor outlived the abort"
    );
    // What the build logged before it stopped is kept, still open: the job
    // runs again.
    let logs: Value = kiln
        .http
        .get(format!("{}/composes/{id}/logs", kiln.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let builds: Vec<&Value> = logs["image_builds"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["type"] == json!("build"))
        .collect();
    let log = &builds[0]["log"];
    assert!(log["lines"].as_i64() > Some(0), "{logs}");
    assert_eq!(log["complete"], json!(false));

    // The request id, from the API to the job, the worker and the executor.
    assert_eq!(build.request_id.as_deref(), Some(request_id));
    let worker_log = strip_ansi(&first.log());
    let job_lines: Vec<&str> = worker_log
        .lines()
        .filter(|l| l.contains(&build.id.to_string()))
        .collect();
    assert!(
        job_lines.len() >= 2,
        "the job taken and given back: {worker_log}"
    );
    for line in &job_lines {
        assert!(
            line.contains(&format!("request_id={request_id}")),
            "a line of the job without its request id: {line}\n{worker_log}"
        );
    }
    let text = log["text"].as_str().unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l == format!("kiln-osbuild: request_id={request_id}")),
        "the executor's output names the request: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_mid_build_stops_the_executor_within_5_seconds() {
    let kiln = Kiln::start(|_| {}).await;
    let local = kiln.dir.path().join("images");
    std::fs::create_dir_all(&local).unwrap();
    let (worker, id) = build_started(
        &kiln,
        &local_target(&local),
        json!({"type": "local", "upload_options": {}}),
    )
    .await;
    assert!(
        !worker.executors().is_empty(),
        "no executor runs: {}",
        worker.log()
    );
    let r = kiln
        .http
        .post(format!("{}/composes/{id}/cancel", kiln.api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let asked = Instant::now();
    while !worker.executors().is_empty() && asked.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worker.executors().is_empty(),
        "the executor still runs 5 s after the cancel"
    );
    let status = kiln.status(&id).await;
    assert_eq!(status["canceled"], json!(true), "{status}");
    assert_eq!(status["status"], json!("failure"));
    assert!(attachments_under(&worker.home).is_empty());
    assert_eq!(
        std::fs::read_dir(&local).unwrap().count(),
        0,
        "nothing was uploaded"
    );
    // The executor cleaned its working directories on the way out.
    let tmp: Vec<_> = std::fs::read_dir(worker.home.join("store/tmp"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker.log().contains("job canceled") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(worker.log().contains("job canceled"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storage_server_that_goes_away_fails_the_upload_with_its_reason() {
    let kiln = Kiln::start(|_| {}).await;
    let s3 = S3Server::start("images").unwrap();
    let targets = format!(
        "[targets.\"aws.s3\"]\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"images\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\npath_style = true\nretry = {{ max_attempts = 3, initial_backoff_ms = 200 }}\n",
        s3.endpoint(),
        s3.access_key_id,
        s3.secret_access_key
    );
    let upload = json!({"type": "aws.s3", "upload_options": {"region": "us-east-1"}});
    let (worker, id) = build_started(&kiln, &targets, upload).await;
    s3.stop();
    let done = kiln.wait(&id, Duration::from_secs(600), finished).await;
    assert_eq!(done["status"], json!("failure"), "{done}\n{}", worker.log());
    let upload = &done["image_status"]["upload_statuses"][0];
    assert_eq!(upload["type"], json!("aws.s3"));
    assert_eq!(upload["status"], json!("failure"));
    let reason = upload["options"]["reason"].as_str().unwrap();
    assert!(reason.contains("after 3 attempt(s)"), "{reason}");
    assert!(
        !reason.contains(&s3.secret_access_key),
        "the secret leaked: {reason}"
    );
    let error = done["image_status"]["error"]["reason"].as_str().unwrap();
    assert!(error.contains("upload to aws.s3 failed"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_the_composer_does_not_trust_get_no_job() {
    let kiln = Kiln::start(|_| {}).await;
    let local = kiln.dir.path().join("images");
    // A certificate of the right name from another CA, and one of this CA
    // whose name is outside allowed_domains.
    let other = tempfile::tempdir().unwrap();
    gen_certs(other.path(), &["--worker", "w1.kiln.test"]);
    let forged = kiln.worker_with("w1.kiln.test", &local_target(&local), other.path());
    let outsider = kiln.worker("intruder.example", &local_target(&local));
    let id = kiln
        .submit(&kiln.request(json!([{"type": "local", "upload_options": {}}])))
        .await;
    // The composer's own jobs finish; the build waits for a trusted worker.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = kiln
            .state
            .queue
            .compose_jobs(uuid::Uuid::parse_str(&id).unwrap())
            .await
            .unwrap();
        let manifest_done = jobs
            .iter()
            .any(|j| j.job_type == "manifest" && j.state == kiln_queue::JobState::Success);
        if manifest_done {
            break;
        }
        assert!(Instant::now() < deadline, "the manifest job never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let job = build_job(&kiln, &id).await;
    assert_eq!(job.state, kiln_queue::JobState::Queued, "{job:?}");
    assert!(job.worker.is_none());
    for w in [&forged, &outsider] {
        let log = w.log();
        assert!(log.contains("asking for a job"), "{log}");
    }
}
