//! The compose API end to end over HTTP, on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::{pxe_request, read_to_end, read_until, start, start_with, Backend};
use kiln_queue::{DequeueFilter, JobState, Outcome};
use serde_json::{json, Value};

on_both_backends!(
    compose_is_listed_has_a_job_graph_and_cancels_with_an_sse_event,
    several_images_and_targets_make_one_chain_each,
    delete_needs_a_finished_compose,
    without_auth_there_is_one_tenant,
    silent_worker_fails_the_compose_with_the_reason,
    finished_composes_expire,
    unfinished_composes_are_canceled_when_too_old,
    failed_job_shows_its_reason_in_the_status,
    every_request_has_a_request_id_and_its_jobs_carry_it,
);

async fn compose_is_listed_has_a_job_graph_and_cancels_with_an_sse_event(b: Backend) {
    let c = start(b).await;
    let (status, body) = c.post("/compose", &pxe_request()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "ComposeId");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        body["href"],
        format!("/api/image-builder-composer/v2/composes/{id}")
    );

    // Listed, pending.
    let (status, list) = c.get("/composes/").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["status"], "pending");
    let (_, st) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(st["status"], "pending");
    assert_eq!(st["image_status"]["status"], "pending");
    // No progress and no upload status before a worker reports any.
    assert!(st["image_status"].get("progress").is_none(), "{st}");
    assert!(st["image_status"].get("upload_statuses").is_none(), "{st}");

    // The job graph: depsolve -> manifest -> build, only depsolve queued.
    let (status, graph) = c.get(&format!("/composes/{id}/jobs")).await;
    assert_eq!(status, 200);
    let jobs = graph["jobs"].as_array().unwrap();
    let types: Vec<&str> = jobs.iter().map(|j| j["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["depsolve", "manifest", "build"]);
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["queued", "waiting", "waiting"]);
    assert_eq!(jobs[1]["dependencies"], json!([jobs[0]["id"]]));
    assert_eq!(jobs[2]["dependencies"], json!([jobs[1]["id"]]));
    let depsolve = c
        .queue
        .job(jobs[0]["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let pkgs: Vec<String> = serde_json::from_value(depsolve.args["packages"].clone()).unwrap();
    assert!(
        pkgs.contains(&"linux-image-amd64".to_string()) && pkgs.contains(&"chrony".to_string()),
        "{pkgs:?}"
    );

    // Metadata has the request and no packages yet; no manifests yet.
    let (_, meta) = c.get(&format!("/composes/{id}/metadata")).await;
    assert_eq!(meta["request"], pxe_request());
    assert!(meta.get("packages").is_none());
    let (_, manifests) = c.get(&format!("/composes/{id}/manifests")).await;
    assert_eq!(manifests["manifests"], json!([]));

    // Follow the event stream, then cancel.
    let resp = c
        .http
        .get(c.url(&format!("/composes/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let first = read_until(&mut stream, &mut text, "\n\n").await;
    assert!(
        first.contains("event: status") && first.contains("\"pending\""),
        "{first}"
    );

    let (status, after) = c.post(&format!("/composes/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(after["status"], "failure");
    assert_eq!(after["canceled"], true);
    assert_eq!(after["image_status"]["error"]["reason"], "compose canceled");

    // The stream reports each canceled job, then the final status, then ends.
    let rest = read_to_end(&mut stream, &mut text).await;
    assert_eq!(rest.matches("event: job").count(), 3, "{rest}");
    assert!(rest.contains("\"state\":\"canceled\""), "{rest}");
    let last = rest.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.contains("event: status") && last.contains("\"canceled\":true"),
        "{last}"
    );

    // Canceling again changes nothing; logs tell each job's end.
    let (status, again) = c.post(&format!("/composes/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "failure");
    let (_, logs) = c.get(&format!("/composes/{id}/logs")).await;
    let log_jobs = logs["image_builds"][0]["jobs"].as_array().unwrap();
    assert!(log_jobs.iter().all(|j| j["state"] == "canceled"), "{logs}");
}

async fn several_images_and_targets_make_one_chain_each(b: Backend) {
    let c = start(b).await;
    let req = json!({
        "distribution": "debian-12",
        "image_requests": [
            {"architecture": "x86_64", "image_type": "tar",
             "upload_targets": [{"type": "local", "upload_options": {}},
                                {"type": "aws.s3", "upload_options": {"region": "local"}}]},
            {"architecture": "aarch64", "image_type": "oci",
             "upload_targets": [{"type": "gcp", "upload_options": {"region": "eu", "bucket": "images"}}]}
        ]
    });
    let (status, body) = c.post("/compose", &req).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, graph) = c.get(&format!("/composes/{id}/jobs")).await;
    let jobs = graph["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 6);
    assert_eq!(jobs.iter().filter(|j| j["image"] == 1).count(), 3);
    assert!(jobs
        .iter()
        .filter(|j| j["image"] == 1)
        .all(|j| j["arch"] == "aarch64"));
    let (_, st) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(st["image_statuses"].as_array().unwrap().len(), 2);
    // Each image's build job carries that image's targets.
    let builds: Vec<_> = c
        .queue
        .compose_jobs(id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.job_type == "build")
        .collect();
    let types = |i: usize| -> Vec<String> {
        builds[i].args["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(types(0), vec!["local", "aws.s3"]);
    assert_eq!(types(1), vec!["gcp"]);
    assert_eq!(
        builds[1].args["targets"][0]["upload_options"]["bucket"],
        "images"
    );
}

async fn delete_needs_a_finished_compose(b: Backend) {
    let c = start(b).await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let id = body["id"].as_str().unwrap();
    let (status, err) = c.delete(&format!("/composes/{id}")).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-14");
    c.post(&format!("/composes/{id}/cancel"), &json!({})).await;
    let (status, del) = c.delete(&format!("/composes/{id}")).await;
    assert_eq!(status, 200, "{del}");
    assert_eq!(del["kind"], "ComposeDeleteStatus");
    let (status, _) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(status, 404);
    let counts = c.queue.row_counts().await.unwrap();
    assert_eq!((counts.composes, counts.jobs), (0, 0));
}

/// Without `[auth]` every request belongs to the one tenant `default`:
/// naming another channel is refused (it needs an admin's token) and
/// writes nothing.
async fn without_auth_there_is_one_tenant(b: Backend) {
    let c = start(b).await;
    let r = c
        .http
        .post(c.url("/compose"))
        .header("X-Kiln-Channel", "team-a")
        .json(&pxe_request())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let counts = c.queue.row_counts().await.unwrap();
    assert_eq!((counts.composes, counts.jobs), (0, 0));
    let (status, body) = c.post("/compose", &pxe_request()).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let jobs = c.queue.compose_jobs(id.parse().unwrap()).await.unwrap();
    assert!(!jobs.is_empty() && jobs.iter().all(|j| j.channel == "default"));
}

async fn silent_worker_fails_the_compose_with_the_reason(b: Backend) {
    let c = start_with(b, |cfg| {
        cfg.queue.heartbeat_timeout_secs = 1;
        cfg.queue.reap_interval_secs = 1;
        cfg.queue.max_retries = 0;
    })
    .await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let id = body["id"].as_str().unwrap().to_owned();
    // A worker takes the depsolve job and goes silent.
    let lease = c
        .queue
        .dequeue(
            &DequeueFilter::types(&["depsolve"]),
            "silent-worker",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = c.get(&format!("/composes/{id}")).await;
        if st["status"] == "failure" {
            let reason = st["image_status"]["error"]["reason"].as_str().unwrap();
            assert!(reason.contains("stopped heart-beating"), "{reason}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent worker's job was never failed: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.queue.job(lease.job.id).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

async fn finished_composes_expire(b: Backend) {
    let c = start_with(b, |cfg| {
        cfg.retention.max_age_secs = 1;
        cfg.retention.interval_secs = 1;
    })
    .await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let done = body["id"].as_str().unwrap().to_owned();
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let open = body["id"].as_str().unwrap().to_owned();
    c.post(&format!("/composes/{done}/cancel"), &json!({}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.get(&format!("/composes/{done}")).await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "finished compose never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The unfinished one stays.
    assert_eq!(c.get(&format!("/composes/{open}")).await.0, 200);
}

async fn unfinished_composes_are_canceled_when_too_old(b: Backend) {
    let c = start_with(b, |cfg| {
        cfg.retention.unfinished_max_age_secs = 1;
        cfg.retention.interval_secs = 1;
    })
    .await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = c.get(&format!("/composes/{id}")).await;
        if status["status"] == "failure" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an unfinished compose outlived its age: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let jobs = c.queue.compose_jobs(id.parse().unwrap()).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.state == JobState::Canceled),
        "{jobs:?}"
    );
}

async fn failed_job_shows_its_reason_in_the_status(b: Backend) {
    let c = start(b).await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let lease = c
        .queue
        .dequeue(
            &DequeueFilter::types(&["depsolve"]),
            "w",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .unwrap();
    c.queue
        .finish(
            lease.token,
            Outcome::Failure {
                reason: "package nosuch not found".into(),
                result: None,
            },
        )
        .await
        .unwrap();
    let (_, st) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(st["status"], "failure");
    assert_eq!(
        st["image_status"]["error"]["reason"],
        "depsolve job failed: package nosuch not found"
    );
    let (_, graph) = c.get(&format!("/composes/{id}/jobs")).await;
    let reason = graph["jobs"][2]["reason"].as_str().unwrap();
    // The chained reason names the root cause, whatever the depth.
    assert_eq!(
        reason,
        format!(
            "dependency depsolve job {} failed: package nosuch not found",
            lease.job.id
        )
    );
}

/// An event stream whose client goes away ends at once, also while its
/// compose is quiet: its task and subscriptions are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_when_its_client_goes_away() {
    let c = start(Backend::Sqlite).await;
    let (_, body) = c.post("/compose", &pxe_request()).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let before = c.state.live.listeners();
    let mut stream = c
        .http
        .get(c.url(&format!("/composes/{id}/events")))
        .send()
        .await
        .unwrap();
    // The first event (the status) has come: the stream's task runs.
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("status"));
    assert_eq!(c.state.live.listeners(), before + 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.state.live.listeners() != before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's task outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answer of the compose API carries `X-Request-Id`: the caller's
/// when it is a sane token, a fresh UUID when it is missing or is not one
/// (never echoed), on errors too; and every job a request makes (`POST
/// /compose`, `POST /blueprints/{name}/compose`, `POST /boot/changes`)
/// carries the id, shown in `GET /composes/{id}/jobs`.
async fn every_request_has_a_request_id_and_its_jobs_carry_it(b: Backend) {
    let c = start_with(b, |config| {
        config.auth.boot_grants = vec![kiln_composer::config::BootGrant {
            tenant: config.default_channel.clone(),
            image_names: vec!["compute".into()],
            groups: vec!["compute".into()],
            xnames: vec![],
            macs: vec![],
            nids: vec![],
        }];
    })
    .await;
    let send = |method: reqwest::Method, path: &str, id: Option<&str>, body: Option<Value>| {
        let mut r = c.http.request(method, c.url(path));
        if let Some(id) = id {
            r = r.header("X-Request-Id", id);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let ids: Vec<String> = r
                .headers()
                .get_all("x-request-id")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(ids.len(), 1, "one X-Request-Id: {ids:?}");
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, ids[0].clone(), body)
        }
    };
    let is_uuid = |s: &str| uuid::Uuid::parse_str(s).is_ok();
    use reqwest::Method;

    // The caller's id comes back, and the compose's jobs carry it.
    let (status, rid, body) = send(
        Method::POST,
        "/compose",
        Some("client-req.42:a_b-c"),
        Some(pxe_request()),
    )
    .await;
    assert_eq!(
        (status, rid.as_str()),
        (201, "client-req.42:a_b-c"),
        "{body}"
    );
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, rid, graph) = send(Method::GET, &format!("/composes/{id}/jobs"), None, None).await;
    assert_eq!(status, 200);
    assert!(is_uuid(&rid), "a fresh id: {rid}");
    let jobs = graph["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    for j in jobs {
        assert_eq!(j["request_id"], "client-req.42:a_b-c", "{j}");
        let stored = c
            .queue
            .job(j["id"].as_str().unwrap().parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.request_id.as_deref(), Some("client-req.42:a_b-c"));
    }

    // No header: a fresh UUID, and the jobs carry that one.
    let (status, fresh, body) = send(Method::POST, "/compose", None, Some(pxe_request())).await;
    assert_eq!(status, 201, "{body}");
    assert!(is_uuid(&fresh), "{fresh}");
    let (_, _, graph) = send(
        Method::GET,
        &format!("/composes/{}/jobs", body["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    for j in graph["jobs"].as_array().unwrap() {
        assert_eq!(j["request_id"], fresh.as_str(), "{j}");
    }

    // Ids that are not sane tokens are replaced, never echoed.
    let long = "x".repeat(129);
    for bad in [
        "has space",
        "a\"quote",
        "semi;colon",
        "",
        long.as_str(),
        "é",
    ] {
        let r = c
            .http
            .get(c.url("/composes/"))
            .header(
                "X-Request-Id",
                reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(is_uuid(&rid) && rid != bad, "{bad:?} -> {rid}");
    }

    // Errors carry it too: 404 (no compose, no route), 400 (bad id, bad body), 405.
    let missing = uuid::Uuid::new_v4();
    for (method, path, body, want) in [
        (Method::GET, format!("/composes/{missing}"), None, 404),
        (Method::GET, "/nothing/here".to_owned(), None, 404),
        (Method::GET, "/composes/not-a-uuid".to_owned(), None, 400),
        (
            Method::POST,
            "/compose".to_owned(),
            Some(json!({"distribution": 1})),
            400,
        ),
        (Method::DELETE, "/compose".to_owned(), None, 405),
    ] {
        let (status, rid, _) = send(method.clone(), &path, Some("err-req-1"), body.clone()).await;
        assert_eq!(
            (status, rid.as_str()),
            (want, "err-req-1"),
            "{method} {path}"
        );
        let (status, rid, _) = send(method.clone(), &path, None, body).await;
        assert_eq!(status, want, "{method} {path}");
        assert!(is_uuid(&rid), "{method} {path}: {rid}");
    }
    // Outside the API's prefix as well.
    let r = c
        .http
        .get(
            c.base
                .replace("/api/image-builder-composer/v2", "/elsewhere"),
        )
        .header("X-Request-Id", "outside-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "outside-1");

    // A compose from a stored blueprint, and a boot change.
    let (status, _, _) = send(
        Method::POST,
        "/blueprints",
        None,
        Some(json!({"name": "bp", "distro": "debian-12", "packages": [{"name": "chrony"}]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, rid, body) = send(
        Method::POST,
        "/blueprints/bp/compose",
        Some("bp-req-7"),
        Some(
            json!({"image_request": {"architecture": "x86_64", "image_type": "tar",
            "upload_targets": [{"type": "local", "upload_options": {}}]}}),
        ),
    )
    .await;
    assert_eq!((status, rid.as_str()), (201, "bp-req-7"), "{body}");
    let (_, _, graph) = send(
        Method::GET,
        &format!("/composes/{}/jobs", body["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    let jobs = graph["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty());
    for j in jobs {
        assert_eq!(j["request_id"], "bp-req-7", "{j}");
    }
    let (status, rid, body) = send(
        Method::POST,
        "/boot/changes",
        Some("boot-req-9"),
        Some(json!({"action": "show", "nodes": {"group": "compute"}})),
    )
    .await;
    assert_eq!((status, rid.as_str()), (201, "boot-req-9"), "{body}");
    let change = c
        .queue
        .job(body["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.request_id.as_deref(), Some("boot-req-9"));
}
