//! The queue contract, run against both backends: a real SQLite file and a real
//! PostgreSQL cluster started for this test binary.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_queue::{
    BootChangeRecord, ComposeRecord, DeleteOutcome, DequeueFilter, JobQueue, JobState, LeaseStatus,
    NewJob, NodeBootRecord, Outcome, QueueError,
};
use kiln_testsupport::PgCluster;
use serde_json::json;
use uuid::Uuid;

/// A queue on a fresh database, and what keeps that database alive.
struct Fixture {
    queue: Arc<dyn JobQueue>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kiln.db").display());
    Fixture {
        queue: kiln_queue::connect(&url).await.unwrap(),
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
    let url = PgCluster::shared().unwrap().create_database().unwrap();
    Fixture {
        queue: kiln_queue::connect(&url).await.unwrap(),
        _dir: None,
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let f = super::sqlite().await;
                super::$name(f.queue.clone()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let f = super::postgres().await;
                super::$name(f.queue.clone()).await;
            }
        }
    )*};
}

on_both_backends!(
    chain_runs_in_dependency_order,
    failed_dependency_fails_dependants_with_chained_reason,
    cancel_reaches_queued_running_and_dependants,
    silent_worker_is_requeued_then_failed,
    racing_dequeuers_never_share_a_job,
    waiting_dequeuer_is_woken_by_enqueue,
    every_sleeping_dequeuer_gets_a_job,
    dequeue_honours_types_arches_channels_and_priority,
    expired_composes_are_deleted_with_their_jobs,
    old_unfinished_composes_are_found,
    delete_refuses_unfinished_composes,
    events_follow_every_state_change,
    lone_jobs_announce_only_becoming_ready,
    rejected_graph_writes_nothing,
    compose_listing_pages_by_channel,
    blueprints_keep_every_version_per_channel,
    simultaneous_finishes_release_a_shared_dependant_once,
    simultaneous_enqueues_blame_only_the_duplicate,
    a_dequeue_given_up_leaves_no_job_leased,
    boot_changes_are_kept_per_channel_and_found_by_node,
    nodes_boot_what_was_seen_last,
    live_reports_are_kept_bounded_and_sealed,
    a_job_handed_back_is_queued_at_once_and_counted,
    request_ids_round_trip,
    workers_are_listed_with_the_jobs_they_hold,
);

const WAIT: Duration = Duration::from_secs(5);

fn job(t: &str) -> NewJob {
    NewJob::new(t, "x86_64", "default", json!({"t": t}))
}

fn compose(channel: &str) -> ComposeRecord {
    ComposeRecord {
        id: Uuid::new_v4(),
        channel: channel.into(),
        request: json!({"distribution": "debian-12"}),
        created_at: Utc::now(),
    }
}

async fn state(q: &Arc<dyn JobQueue>, id: Uuid) -> JobState {
    q.job(id).await.unwrap().unwrap().state
}

async fn chain_runs_in_dependency_order(q: Arc<dyn JobQueue>) {
    let a = job("depsolve");
    let b = job("manifest").depends_on(&[a.id]);
    let c = job("build").depends_on(&[b.id]);
    let d = job("build").depends_on(&[a.id, b.id]);
    let c_rec = compose("default");
    q.create_compose(&c_rec, &[a.clone(), b.clone(), c.clone(), d.clone()])
        .await
        .unwrap();
    let any = DequeueFilter::types(&["depsolve", "manifest", "build"]);

    let l = q.dequeue(&any, "w1", WAIT).await.unwrap().unwrap();
    assert_eq!(l.job.id, a.id);
    assert_eq!(l.job.state, JobState::Running);
    assert_eq!(l.job.worker.as_deref(), Some("w1"));
    let held = q.leased(l.token).await.unwrap().expect("the leased job");
    assert_eq!((held.id, held.worker.as_deref()), (l.job.id, Some("w1")));
    assert!(q.leased(uuid::Uuid::new_v4()).await.unwrap().is_none());
    // Nothing else is ready while `a` runs.
    assert!(q
        .dequeue(&any, "w1", Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    let done = q
        .finish(l.token, Outcome::Success(json!({"packages": 3})))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success);
    assert_eq!(done.result, Some(json!({"packages": 3})));
    assert_eq!(state(&q, b.id).await, JobState::Queued);
    // `d` still waits for `b`.
    assert_eq!(state(&q, d.id).await, JobState::Waiting);

    let l = q.dequeue(&any, "w1", WAIT).await.unwrap().unwrap();
    assert_eq!(l.job.id, b.id);
    assert_eq!(l.job.dependencies, vec![a.id]);
    q.finish(l.token, Outcome::Success(json!(null)))
        .await
        .unwrap();
    let mut rest: Vec<Uuid> = Vec::new();
    for _ in 0..2 {
        let l = q.dequeue(&any, "w1", WAIT).await.unwrap().unwrap();
        rest.push(l.job.id);
        q.finish(l.token, Outcome::Success(json!(null)))
            .await
            .unwrap();
    }
    rest.sort();
    let mut want = vec![c.id, d.id];
    want.sort();
    assert_eq!(rest, want);
    // A second finish with a used token is refused.
    let jobs = q.compose_jobs(c_rec.id).await.unwrap();
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j.state == JobState::Success));
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![a.id, b.id, c.id, d.id]
    );
}

async fn failed_dependency_fails_dependants_with_chained_reason(q: Arc<dyn JobQueue>) {
    let a = job("depsolve");
    let b = job("manifest").depends_on(&[a.id]);
    let c = job("build").depends_on(&[b.id]);
    let other = job("depsolve");
    q.create_compose(
        &compose("default"),
        &[a.clone(), b.clone(), c.clone(), other.clone()],
    )
    .await
    .unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["depsolve"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.job.id, a.id);
    let token = l.token;
    let failed = q
        .finish(
            token,
            Outcome::Failure {
                reason: "package foo not found".into(),
                result: Some(json!({"error": 1})),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(matches!(
        q.finish(token, Outcome::Success(json!(null))).await,
        Err(QueueError::LeaseLost)
    ));
    for id in [b.id, c.id] {
        let j = q.job(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(
            j.reason.as_deref(),
            Some(
                format!(
                    "dependency depsolve job {} failed: package foo not found",
                    a.id
                )
                .as_str()
            )
        );
        assert!(j.finished_at.is_some());
    }
    // An unrelated job is untouched.
    assert_eq!(state(&q, other.id).await, JobState::Queued);
    // A job enqueued later on the failed one starts failed.
    let late = job("build").depends_on(&[a.id]);
    q.enqueue(std::slice::from_ref(&late)).await.unwrap();
    let late = q.job(late.id).await.unwrap().unwrap();
    assert_eq!(late.state, JobState::Failed);
    assert!(late.reason.unwrap().contains(&a.id.to_string()));
}

async fn cancel_reaches_queued_running_and_dependants(q: Arc<dyn JobQueue>) {
    // A running job and its dependant.
    let a = job("build");
    let b = job("upload").depends_on(&[a.id]);
    let c = compose("default");
    q.create_compose(&c, &[a.clone(), b.clone()]).await.unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["build"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(q.heartbeat(l.token).await.unwrap(), LeaseStatus::Alive);
    assert!(q.cancel_job(a.id).await.unwrap());
    assert_eq!(q.heartbeat(l.token).await.unwrap(), LeaseStatus::Canceled);
    assert!(
        matches!(q.finish(l.token, Outcome::Success(json!(null))).await, Err(QueueError::Canceled(id)) if id == a.id)
    );
    assert_eq!(state(&q, a.id).await, JobState::Canceled);
    let bj = q.job(b.id).await.unwrap().unwrap();
    assert_eq!(bj.state, JobState::Failed);
    assert_eq!(
        bj.reason.unwrap(),
        format!("dependency build job {} was canceled", a.id)
    );
    // Canceling a finished job is a no-op.
    assert!(!q.cancel_job(a.id).await.unwrap());

    // Canceling a whole compose reaches queued and waiting jobs.
    let x = job("depsolve");
    let y = job("manifest").depends_on(&[x.id]);
    let c2 = compose("default");
    q.create_compose(&c2, &[x.clone(), y.clone()])
        .await
        .unwrap();
    assert_eq!(q.cancel_compose(c2.id).await.unwrap(), Some(2));
    assert_eq!(state(&q, x.id).await, JobState::Canceled);
    assert_eq!(state(&q, y.id).await, JobState::Canceled);
    assert_eq!(q.cancel_compose(c2.id).await.unwrap(), Some(0));
    assert_eq!(q.cancel_compose(Uuid::new_v4()).await.unwrap(), None);
    // Nothing of it can be dequeued any more.
    assert!(q
        .dequeue(
            &DequeueFilter::types(&["depsolve", "manifest"]),
            "w",
            Duration::ZERO
        )
        .await
        .unwrap()
        .is_none());
}

async fn silent_worker_is_requeued_then_failed(q: Arc<dyn JobQueue>) {
    let a = job("build");
    let b = job("upload").depends_on(&[a.id]);
    q.create_compose(&compose("default"), &[a.clone(), b.clone()])
        .await
        .unwrap();
    let f = DequeueFilter::types(&["build"]);
    let timeout = Duration::from_millis(300);
    let max_retries = 2;

    // A worker that heart-beats keeps its job.
    let l = q.dequeue(&f, "alive", WAIT).await.unwrap().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(q.heartbeat(l.token).await.unwrap(), LeaseStatus::Alive);
        assert!(q
            .requeue_stale(timeout, max_retries)
            .await
            .unwrap()
            .requeued
            .is_empty());
    }
    let mut token = l.token;
    // Then it goes silent, max_retries times over, on different workers.
    for attempt in 1..=max_retries {
        tokio::time::sleep(timeout + Duration::from_millis(100)).await;
        let report = q.requeue_stale(timeout, max_retries).await.unwrap();
        assert_eq!(report.requeued, vec![a.id]);
        assert_eq!(q.heartbeat(token).await.unwrap(), LeaseStatus::Lost);
        assert!(matches!(
            q.finish(token, Outcome::Success(json!(null))).await,
            Err(QueueError::LeaseLost)
        ));
        let j = q.job(a.id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Queued);
        assert_eq!(j.retries, attempt as i32);
        assert!(j.reason.unwrap().contains("stopped heart-beating"));
        let l = q
            .dequeue(&f, &format!("w{attempt}"), WAIT)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.job.id, a.id);
        token = l.token;
    }
    tokio::time::sleep(timeout + Duration::from_millis(100)).await;
    let report = q.requeue_stale(timeout, max_retries).await.unwrap();
    assert_eq!(report.failed, vec![a.id]);
    let j = q.job(a.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(
        j.reason.as_deref(),
        Some("worker stopped heart-beating; the job was already requeued 2 time(s), the limit")
    );
    let bj = q.job(b.id).await.unwrap().unwrap();
    assert_eq!(bj.state, JobState::Failed);
    assert!(bj.reason.unwrap().contains("stopped heart-beating"));
}

async fn racing_dequeuers_never_share_a_job(q: Arc<dyn JobQueue>) {
    const N: usize = 10_000;
    let jobs: Vec<NewJob> = (0..N).map(|_| job("build")).collect();
    for chunk in jobs.chunks(1000) {
        q.enqueue(chunk).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..2 {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let f = DequeueFilter::types(&["build"]);
            let mut got = Vec::new();
            while let Some(l) = q
                .dequeue(&f, &format!("racer{w}"), Duration::ZERO)
                .await
                .unwrap()
            {
                got.push(l.job.id);
                q.finish(l.token, Outcome::Success(json!(null)))
                    .await
                    .unwrap();
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut per_worker = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        per_worker.push(got.len());
        for id in got {
            assert!(seen.insert(id), "job {id} was handed out twice");
        }
    }
    assert_eq!(
        seen.len(),
        N,
        "every job handed out once (per worker: {per_worker:?})"
    );
    let want: HashSet<Uuid> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(seen, want);
}

async fn waiting_dequeuer_is_woken_by_enqueue(q: Arc<dyn JobQueue>) {
    // Without a wake-up the dequeuer would sleep the whole minute and get
    // nothing: the assertion below then fails.
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            q.dequeue(
                &DequeueFilter::types(&["build"]),
                "waiter",
                Duration::from_secs(60),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A job the waiter does not take must not satisfy it.
    q.enqueue(&[job("depsolve")]).await.unwrap();
    let j = job("build");
    q.enqueue(std::slice::from_ref(&j)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiting dequeuer was not woken")
        .unwrap()
        .unwrap()
        .expect("woken without a job");
    assert_eq!(got.job.id, j.id);
}

async fn every_sleeping_dequeuer_gets_a_job(q: Arc<dyn JobQueue>) {
    // Each queued job wakes one sleeper, not all: none may be left asleep
    // while a job waits, and none may get a job twice.
    const N: usize = 8;
    let mut sleepers = Vec::new();
    for i in 0..N {
        let q = q.clone();
        sleepers.push(tokio::spawn(async move {
            q.dequeue(
                &DequeueFilter::types(&["build"]),
                &format!("sleeper{i}"),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .map(|l| l.job.id)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs: Vec<NewJob> = (0..N).map(|_| job("build")).collect();
    for j in &jobs {
        q.enqueue(std::slice::from_ref(j)).await.unwrap();
    }
    let mut got = HashSet::new();
    for s in sleepers {
        let id = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("a sleeper was never woken")
            .unwrap()
            .expect("woken without a job");
        assert!(got.insert(id));
    }
    assert_eq!(got, jobs.iter().map(|j| j.id).collect::<HashSet<_>>());
}

async fn dequeue_honours_types_arches_channels_and_priority(q: Arc<dyn JobQueue>) {
    let mut arm = NewJob::new("build", "aarch64", "team-a", json!({}));
    arm.priority = 0;
    let x86_low = NewJob::new("build", "x86_64", "team-a", json!({}));
    let mut x86_high = NewJob::new("build", "x86_64", "team-a", json!({}));
    x86_high.priority = 10;
    let other_team = NewJob::new("build", "x86_64", "team-b", json!({}));
    q.enqueue(&[
        arm.clone(),
        x86_low.clone(),
        x86_high.clone(),
        other_team.clone(),
    ])
    .await
    .unwrap();

    let f = DequeueFilter {
        job_types: vec!["build".into()],
        arches: vec!["x86_64".into()],
        channels: vec!["team-a".into()],
    };
    let first = q.dequeue(&f, "w", WAIT).await.unwrap().unwrap();
    assert_eq!(first.job.id, x86_high.id, "higher priority first");
    let second = q.dequeue(&f, "w", WAIT).await.unwrap().unwrap();
    assert_eq!(second.job.id, x86_low.id);
    assert!(q.dequeue(&f, "w", Duration::ZERO).await.unwrap().is_none());
    assert!(q
        .dequeue(&DequeueFilter::types(&["upload"]), "w", Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    let arm_f = DequeueFilter {
        arches: vec!["aarch64".into()],
        ..DequeueFilter::types(&["build"])
    };
    assert_eq!(
        q.dequeue(&arm_f, "w", WAIT).await.unwrap().unwrap().job.id,
        arm.id
    );
    // Empty arches and channels take anything.
    let any = DequeueFilter::types(&["build"]);
    assert_eq!(
        q.dequeue(&any, "w", WAIT).await.unwrap().unwrap().job.id,
        other_team.id
    );
}

async fn old_unfinished_composes_are_found(q: Arc<dyn JobQueue>) {
    let hours_ago = |h| ComposeRecord {
        created_at: Utc::now() - chrono::Duration::hours(h),
        ..compose("default")
    };
    let (old, older, young, done) = (hours_ago(3), hours_ago(5), hours_ago(0), hours_ago(9));
    for c in [&old, &older, &young] {
        q.create_compose(c, &[job("depsolve")]).await.unwrap();
    }
    q.create_compose(&done, &[job("gone")]).await.unwrap();
    q.cancel_compose(done.id).await.unwrap();
    let hour = Duration::from_secs(3600);
    assert_eq!(
        q.unfinished_before(hour).await.unwrap(),
        vec![older.id, old.id]
    );
    q.cancel_compose(older.id).await.unwrap();
    assert_eq!(q.unfinished_before(hour).await.unwrap(), vec![old.id]);
    assert!(q.unfinished_before(hour * 24).await.unwrap().is_empty());
}

async fn expired_composes_are_deleted_with_their_jobs(q: Arc<dyn JobQueue>) {
    let finished = compose("default");
    let a = job("build");
    q.create_compose(&finished, std::slice::from_ref(&a))
        .await
        .unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["build"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    q.finish(l.token, Outcome::Success(json!(null)))
        .await
        .unwrap();
    let running = compose("default");
    q.create_compose(&running, &[job("depsolve")])
        .await
        .unwrap();
    let lone = job("cleanup");
    q.enqueue(std::slice::from_ref(&lone)).await.unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["cleanup"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    q.finish(l.token, Outcome::Success(json!(null)))
        .await
        .unwrap();

    // Nothing is old enough yet.
    assert_eq!(q.expire(Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(q.compose(finished.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.expire(Duration::from_millis(200)).await.unwrap(), 1);
    assert!(q.compose(finished.id).await.unwrap().is_none());
    assert!(q.job(a.id).await.unwrap().is_none());
    assert!(q.job(lone.id).await.unwrap().is_none());
    // A compose with unfinished work stays, however old.
    assert!(q.compose(running.id).await.unwrap().is_some());
    assert_eq!(q.row_counts().await.unwrap().jobs, 1);
}

async fn delete_refuses_unfinished_composes(q: Arc<dyn JobQueue>) {
    let c = compose("default");
    q.create_compose(&c, &[job("depsolve")]).await.unwrap();
    assert_eq!(
        q.delete_compose(c.id).await.unwrap(),
        DeleteOutcome::Unfinished
    );
    q.cancel_compose(c.id).await.unwrap();
    assert_eq!(
        q.delete_compose(c.id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        q.delete_compose(c.id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    let counts = q.row_counts().await.unwrap();
    assert_eq!((counts.composes, counts.jobs), (0, 0));
}

async fn events_follow_every_state_change(q: Arc<dyn JobQueue>) {
    let mut rx = q.subscribe();
    let c = compose("default");
    let a = job("depsolve");
    let b = job("manifest").depends_on(&[a.id]);
    q.create_compose(&c, &[a.clone(), b.clone()]).await.unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["depsolve"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    q.finish(l.token, Outcome::Success(json!(null)))
        .await
        .unwrap();
    q.cancel_compose(c.id).await.unwrap();
    let want = [
        (a.id, JobState::Queued),
        (b.id, JobState::Waiting),
        (a.id, JobState::Running),
        (a.id, JobState::Success),
        (b.id, JobState::Queued),
        (b.id, JobState::Canceled),
    ];
    let mut got = Vec::new();
    while got.len() < want.len() {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .unwrap();
        assert_eq!(ev.compose, Some(c.id));
        got.push((ev.job, ev.state));
    }
    // Creation events may come in either order; the rest in order.
    let mut first: Vec<_> = got[..2].to_vec();
    first.sort_by_key(|(_, s)| s.as_str());
    let mut first_want: Vec<_> = want[..2].to_vec();
    first_want.sort_by_key(|(_, s)| s.as_str());
    assert_eq!(first, first_want);
    assert_eq!(&got[2..], &want[2..]);
}

async fn lone_jobs_announce_only_becoming_ready(q: Arc<dyn JobQueue>) {
    let mut rx = q.subscribe();
    let lone = job("cleanup");
    q.enqueue(std::slice::from_ref(&lone)).await.unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["cleanup"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    q.finish(l.token, Outcome::Success(json!(null)))
        .await
        .unwrap();
    // A compose job afterwards: its events arrive, the lone job's running and
    // success never do.
    let c = compose("default");
    let a = job("depsolve");
    q.create_compose(&c, std::slice::from_ref(&a))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.job, first.state), (lone.id, JobState::Queued));
    let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.job, second.state), (a.id, JobState::Queued));
}

async fn rejected_graph_writes_nothing(q: Arc<dyn JobQueue>) {
    let a = job("depsolve");
    let b = job("manifest").depends_on(&[Uuid::new_v4()]);
    let err = q
        .create_compose(&compose("default"), &[a, b])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::UnknownDependency { .. }), "{err}");
    let dup = job("x");
    assert!(matches!(
        q.enqueue(&[dup.clone(), dup]).await,
        Err(QueueError::DuplicateJob(_))
    ));
    let c = compose("default");
    q.create_compose(&c, &[job("a")]).await.unwrap();
    assert!(matches!(
        q.create_compose(&c, &[job("b")]).await,
        Err(QueueError::ComposeExists(_))
    ));
    let counts = q.row_counts().await.unwrap();
    assert_eq!((counts.composes, counts.jobs), (1, 1));
}

async fn compose_listing_pages_by_channel(q: Arc<dyn JobQueue>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut c = compose(if i % 2 == 0 { "a" } else { "b" });
        c.created_at = Utc::now() + chrono::Duration::seconds(i);
        q.create_compose(&c, &[job("depsolve")]).await.unwrap();
        ids.push(c.id);
    }
    let (all, total) = q.list_composes(None, 0, 100).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        all.iter().map(|c| c.id).collect::<Vec<_>>(),
        ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    let (page, total) = q.list_composes(Some("a"), 1, 1).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, ids[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_migrations_are_safe_from_several_composers_at_once() {
    let url = PgCluster::shared().unwrap().create_database().unwrap();
    let opens = (0..4).map(|_| kiln_queue::connect(&url));
    let queues = futures::future::join_all(opens).await;
    for q in &queues {
        assert!(q.is_ok(), "{:?}", q.as_ref().err().map(|e| e.to_string()));
    }
    // Every composer sees the others' writes and events.
    let qs: Vec<_> = queues.into_iter().map(Result::unwrap).collect();
    let mut rx = qs[1].subscribe();
    let j = job("build");
    qs[0].enqueue(std::slice::from_ref(&j)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ev.job, ev.state), (j.id, JobState::Queued));
    let got = qs[2]
        .dequeue(&DequeueFilter::types(&["build"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.job.id, j.id);
}

#[tokio::test]
async fn sqlite_database_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kiln.db").display());
    let j = job("build");
    {
        let q = kiln_queue::connect(&url).await.unwrap();
        q.enqueue(std::slice::from_ref(&j)).await.unwrap();
    }
    let q = kiln_queue::connect(&url).await.unwrap();
    assert_eq!(q.job(j.id).await.unwrap().unwrap().state, JobState::Queued);
}

#[tokio::test]
async fn unknown_database_url_is_refused() {
    let err = kiln_queue::connect("mysql://x").await.err().unwrap();
    assert!(err.to_string().contains("mysql://x"));
}

async fn blueprints_keep_every_version_per_channel(q: Arc<dyn JobQueue>) {
    let v1 = json!({"name": "node", "packages": [{"name": "vim"}]});
    let v2 = json!({"name": "node", "packages": [{"name": "emacs"}]});
    assert_eq!(q.put_blueprint("a", "node", &v1).await.unwrap().version, 1);
    let second = q.put_blueprint("a", "node", &v2).await.unwrap();
    assert_eq!((second.version, second.blueprint.clone()), (2, v2.clone()));
    q.put_blueprint("a", "login", &json!({"name": "login"}))
        .await
        .unwrap();
    // Another channel has its own names and versions.
    assert_eq!(q.put_blueprint("b", "node", &v1).await.unwrap().version, 1);

    let latest: Vec<(String, i64)> = q
        .blueprints("a")
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.name, b.version))
        .collect();
    assert_eq!(latest, [("login".to_owned(), 1), ("node".to_owned(), 2)]);
    assert_eq!(
        q.blueprint("a", "node", None)
            .await
            .unwrap()
            .unwrap()
            .blueprint,
        v2
    );
    assert_eq!(
        q.blueprint("a", "node", Some(1))
            .await
            .unwrap()
            .unwrap()
            .blueprint,
        v1
    );
    assert!(q.blueprint("a", "node", Some(3)).await.unwrap().is_none());
    assert!(q.blueprint("c", "node", None).await.unwrap().is_none());

    // Concurrent pushes of one name get distinct versions.
    let pushes: Vec<_> = (0..4)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move {
                q.put_blueprint("a", "race", &json!({"n": i}))
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for p in pushes {
        versions.push(p.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4]);

    assert!(q.delete_blueprint("a", "node").await.unwrap());
    assert!(!q.delete_blueprint("a", "node").await.unwrap());
    assert!(q.blueprint("a", "node", None).await.unwrap().is_none());
    assert_eq!(
        q.blueprint("b", "node", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

/// Finishes that arrive together (PostgreSQL serves them with one statement)
/// count each dependency once: a job waiting on all of them is queued exactly
/// when the last succeeds, and a used token is refused for each caller.
async fn simultaneous_finishes_release_a_shared_dependant_once(q: Arc<dyn JobQueue>) {
    for round in 0..5 {
        let parents: Vec<NewJob> = (0..8).map(|_| job("depsolve")).collect();
        let ids: Vec<Uuid> = parents.iter().map(|j| j.id).collect();
        let child = job("build").depends_on(&ids);
        let half = job("manifest").depends_on(&ids[..4]);
        let mut graph = parents.clone();
        graph.push(child.clone());
        graph.push(half.clone());
        q.create_compose(&compose("default"), &graph).await.unwrap();
        let f = DequeueFilter::types(&["depsolve"]);
        let leases = futures::future::join_all((0..8).map(|w| {
            let (q, f) = (q.clone(), f.clone());
            async move {
                q.dequeue(&f, &format!("w{w}"), WAIT)
                    .await
                    .unwrap()
                    .unwrap()
            }
        }))
        .await;
        let got: HashSet<Uuid> = leases.iter().map(|l| l.job.id).collect();
        assert_eq!(got, ids.iter().copied().collect(), "round {round}");
        // The four parents of `half`, then the other four, each group at once.
        let (first, second): (Vec<_>, Vec<_>) =
            leases.iter().partition(|l| ids[..4].contains(&l.job.id));
        let finish_all = |ls: Vec<&kiln_queue::Lease>| {
            futures::future::join_all(ls.into_iter().map(|l| {
                let q = q.clone();
                let token = l.token;
                async move { q.finish(token, Outcome::Success(json!({"n": 1}))).await }
            }))
        };
        for r in finish_all(first.clone()).await {
            assert_eq!(r.unwrap().state, JobState::Success);
        }
        assert_eq!(state(&q, half.id).await, JobState::Queued, "round {round}");
        assert_eq!(
            state(&q, child.id).await,
            JobState::Waiting,
            "round {round}"
        );
        for r in finish_all(second).await {
            assert_eq!(r.unwrap().result, Some(json!({"n": 1})));
        }
        assert_eq!(state(&q, child.id).await, JobState::Queued, "round {round}");
        // The same tokens again, together: every one is refused.
        for r in finish_all(first).await {
            assert!(matches!(r, Err(QueueError::LeaseLost)), "{r:?}");
        }
        for l in [&child, &half] {
            let leased = q
                .dequeue(&DequeueFilter::types(&["build", "manifest"]), "w", WAIT)
                .await
                .unwrap()
                .unwrap();
            assert!(
                leased.job.id == child.id || leased.job.id == half.id,
                "{}",
                l.id
            );
            q.finish(leased.token, Outcome::Success(json!(null)))
                .await
                .unwrap();
        }
    }
}

/// Lone jobs enqueued together (PostgreSQL inserts them with one statement):
/// a duplicate id fails its own call only, and every other job is stored.
async fn simultaneous_enqueues_blame_only_the_duplicate(q: Arc<dyn JobQueue>) {
    let taken = job("build");
    q.enqueue(std::slice::from_ref(&taken)).await.unwrap();
    let mut jobs: Vec<NewJob> = (0..15).map(|_| job("build")).collect();
    let mut dup = job("build");
    dup.id = taken.id;
    jobs.insert(7, dup);
    let results = futures::future::join_all(jobs.iter().map(|j| {
        let q = q.clone();
        let j = j.clone();
        async move { q.enqueue(std::slice::from_ref(&j)).await }
    }))
    .await;
    for (j, r) in jobs.iter().zip(&results) {
        if j.id == taken.id {
            assert!(
                matches!(r, Err(QueueError::DuplicateJob(id)) if *id == taken.id),
                "{r:?}"
            );
        } else {
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(state(&q, j.id).await, JobState::Queued);
        }
    }
    // The duplicate did not overwrite the stored job.
    assert_eq!(q.job(taken.id).await.unwrap().unwrap().args, taken.args);
    assert_eq!(q.row_counts().await.unwrap().jobs, 16);
}

/// Two composers (two pools, two batchers) and eight dequeuers on one
/// database: SKIP LOCKED across processes and batches within each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_composers_racing_in_batches_never_share_a_job() {
    const N: usize = 4_000;
    let url = PgCluster::shared().unwrap().create_database().unwrap();
    let a = kiln_queue::connect(&url).await.unwrap();
    let b = kiln_queue::connect(&url).await.unwrap();
    let jobs: Vec<NewJob> = (0..N).map(|_| job("build")).collect();
    for chunk in jobs.chunks(1000) {
        a.enqueue(chunk).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..8 {
        let q = if w % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let f = DequeueFilter::types(&["build"]);
            let mut got = Vec::new();
            while let Some(l) = q
                .dequeue(&f, &format!("racer{w}"), Duration::ZERO)
                .await
                .unwrap()
            {
                assert_eq!(l.job.worker.as_deref(), Some(format!("racer{w}").as_str()));
                got.push(l.job.id);
                let done = q.finish(l.token, Outcome::Success(json!(w))).await.unwrap();
                assert_eq!((done.id, done.result), (l.job.id, Some(json!(w))));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.await.unwrap() {
            assert!(seen.insert(id), "job {id} was handed out twice");
        }
    }
    assert_eq!(seen, jobs.iter().map(|j| j.id).collect::<HashSet<_>>());
}

/// A dequeuer that gives up while its call is in the database (an HTTP
/// long-poll whose client went away) must not leave the job leased to nobody:
/// it is handed back and the next dequeuer gets it.
async fn a_dequeue_given_up_leaves_no_job_leased(q: Arc<dyn JobQueue>) {
    let f = DequeueFilter::types(&["build"]);
    let mut given_up = 0;
    for round in 0..40 {
        let j = job("build");
        q.enqueue(std::slice::from_ref(&j)).await.unwrap();
        // Dropped right after its first poll (the call is on its way), or
        // after a while: from "before the answer" to "after it came".
        let call = q.dequeue(&f, "impatient", WAIT);
        let outcome = if round % 2 == 0 {
            futures::FutureExt::now_or_never(call).ok_or(())
        } else {
            let patience = Duration::from_micros(100 * round);
            tokio::time::timeout(patience, call).await.map_err(|_| ())
        };
        match outcome {
            Ok(lease) => {
                let lease = lease.unwrap().unwrap();
                q.finish(lease.token, Outcome::Success(json!(null)))
                    .await
                    .unwrap();
            }
            Err(_) => {
                given_up += 1;
                // The hand-back is a task of its own: on a loaded machine
                // it may take longer than one usual wait.
                let l = q
                    .dequeue(&f, "patient", WAIT * 6)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: the job stayed leased"));
                assert_eq!(l.job.id, j.id);
                assert_eq!(l.job.retries, 0, "a hand-back is not a retry");
                q.finish(l.token, Outcome::Success(json!(null)))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(state(&q, j.id).await, JobState::Success);
    }
    assert!(given_up > 0, "no dequeue was given up");
}

async fn boot_changes_are_kept_per_channel_and_found_by_node(q: Arc<dyn JobQueue>) {
    // Both backends keep microseconds.
    let t0 = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let change = |id: &str, channel: &str, nodes: &[&str], secs: i64| BootChangeRecord {
        id: id.into(),
        channel: channel.into(),
        job_id: Uuid::new_v4(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        record: json!({"id": id}),
        created_at: t0 + chrono::Duration::seconds(secs),
    };
    let a1 = change("d1", "a", &["x1c0s0b0n0", "x1c0s0b0n1"], 0);
    assert!(q.record_boot_change(&a1).await.unwrap());
    assert!(
        !q.record_boot_change(&a1).await.unwrap(),
        "one id is recorded once"
    );
    q.record_boot_change(&change("d2", "a", &["x1c0s0b0n1"], 1))
        .await
        .unwrap();
    q.record_boot_change(&change("d3", "b", &["x1c0s0b0n0"], 2))
        .await
        .unwrap();
    assert_eq!(q.row_counts().await.unwrap().boot_changes, 3);
    let ids = |v: &(Vec<BootChangeRecord>, i64)| -> (Vec<String>, i64) {
        (v.0.iter().map(|c| c.id.clone()).collect(), v.1)
    };
    let all = q.boot_changes("a", None, 0, 10).await.unwrap();
    assert_eq!(
        ids(&all),
        (vec!["d2".into(), "d1".into()], 2),
        "newest first"
    );
    assert_eq!(all.0[1], a1, "read back as written");
    let n0 = q
        .boot_changes("a", Some("x1c0s0b0n0"), 0, 10)
        .await
        .unwrap();
    assert_eq!(ids(&n0), (vec!["d1".into()], 1));
    let page = q.boot_changes("a", None, 1, 1).await.unwrap();
    assert_eq!(ids(&page), (vec!["d1".into()], 2));
    // A node name is not a pattern.
    let wild = q.boot_changes("a", Some("%"), 0, 10).await.unwrap();
    assert_eq!(ids(&wild), (vec![], 0));
    let other = q.boot_changes("b", None, 0, 10).await.unwrap();
    assert_eq!(ids(&other), (vec!["d3".into()], 1));
}

async fn nodes_boot_what_was_seen_last(q: Arc<dyn JobQueue>) {
    let t0 = Utc::now();
    let node = |x: &str, kernel: &str, secs: i64| NodeBootRecord {
        xname: x.into(),
        record: json!({"kernel": kernel}),
        observed_at: t0 + chrono::Duration::seconds(secs),
    };
    q.observe_nodes(
        "a",
        &[node("x1c0s0b0n0", "k1", 0), node("x1c0s0b0n1", "k1", 0)],
    )
    .await
    .unwrap();
    q.observe_nodes("b", &[node("x1c0s0b0n0", "k2", 5)])
        .await
        .unwrap();
    // An older observation does not win.
    q.observe_nodes("a", &[node("x1c0s0b0n0", "k0", 1)])
        .await
        .unwrap();
    let seen = |v: Vec<NodeBootRecord>| -> Vec<(String, String)> {
        v.into_iter()
            .map(|n| (n.xname, n.record["kernel"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(
        seen(q.node_boots("a").await.unwrap()),
        [
            ("x1c0s0b0n0".to_string(), "k2".to_string()),
            ("x1c0s0b0n1".to_string(), "k1".to_string())
        ],
        "b's newer change of a node a has seen reaches a's view"
    );
    assert_eq!(
        seen(q.node_boots("b").await.unwrap()),
        [("x1c0s0b0n0".to_string(), "k2".to_string())],
        "b sees only the node it saw"
    );
    assert!(q.node_boots("c").await.unwrap().is_empty());
}

/// Receives the next live event, or panics after a few seconds.
async fn next_live(
    rx: &mut tokio::sync::broadcast::Receiver<kiln_queue::LiveEvent>,
) -> kiln_queue::LiveEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no live event within 10 s")
        .unwrap()
}

async fn live_reports_are_kept_bounded_and_sealed(q: Arc<dyn JobQueue>) {
    let c = compose("default");
    let a = job("build");
    q.create_compose(&c, std::slice::from_ref(&a))
        .await
        .unwrap();
    let l = q
        .dequeue(&DequeueFilter::types(&["build"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    let mut rx = q.subscribe_live();
    let lines = |n: usize, tag: &str| (0..n).map(|i| format!("{tag} {i}")).collect::<Vec<_>>();
    q.report_live(
        a.id,
        Some(c.id),
        Some(&json!("building")),
        Some(&json!({"done": 1, "total": 4})),
        &lines(2, "first"),
    )
    .await
    .unwrap();
    let ev = next_live(&mut rx).await;
    assert_eq!(
        (ev.job, ev.compose, ev.lines.clone()),
        (a.id, Some(c.id), lines(2, "first"))
    );
    // A report without a phase keeps the phase; one without lines adds none.
    q.report_live(
        a.id,
        Some(c.id),
        None,
        Some(&json!({"done": 2, "total": 4})),
        &[],
    )
    .await
    .unwrap();
    assert!(next_live(&mut rx).await.lines.is_empty());
    let live = q.live_states(&[a.id, Uuid::new_v4()]).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].phase, Some(json!("building")));
    assert_eq!(live[0].progress, Some(json!({"done": 2, "total": 4})));
    let log = q.job_log(a.id).await.unwrap().unwrap();
    assert_eq!(
        (log.text.as_str(), log.lines, log.dropped, log.sealed),
        ("first 0\nfirst 1\n", 2, 0, false)
    );

    // Lines beyond the bound: the oldest chunks go, counted; a report too
    // large for one announcement still reaches subscribers with its lines.
    let long = |tag: &str| {
        (0..1000)
            .map(|i| format!("{tag} {i} {}", "x".repeat(1100)))
            .collect::<Vec<_>>()
    };
    for tag in ["a", "b", "c", "d", "e"] {
        q.report_live(a.id, Some(c.id), None, None, &long(tag))
            .await
            .unwrap();
        assert_eq!(next_live(&mut rx).await.lines, long(tag));
    }
    let log = q.job_log(a.id).await.unwrap().unwrap();
    assert!(
        log.text.len() as i64 <= kiln_queue::live::LOG_MAX_BYTES,
        "{} bytes kept",
        log.text.len()
    );
    assert_eq!(log.dropped, 2 + 1000 * (5 - log.lines / 1000));
    assert!(log.text.ends_with(&format!("e 999 {}\n", "x".repeat(1100))));
    assert!(!log.text.contains("first 0"));

    // Not sealed while the job runs; sealed once it finished, once.
    assert!(!q.seal_log(a.id).await.unwrap());
    q.finish(l.token, Outcome::Success(json!({})))
        .await
        .unwrap();
    assert!(q.seal_log(a.id).await.unwrap());
    assert!(!q.seal_log(a.id).await.unwrap());
    let sealed = q.job_log(a.id).await.unwrap().unwrap();
    assert!(sealed.sealed);
    assert_eq!(
        (sealed.text, sealed.lines, sealed.dropped),
        (log.text, log.lines, log.dropped)
    );
    assert!(q.live_states(&[a.id]).await.unwrap().is_empty());
    // A job that reported nothing has no log; a deleted compose takes its logs.
    assert!(q.job_log(Uuid::new_v4()).await.unwrap().is_none());
    assert_eq!(
        q.delete_compose(c.id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(q.job_log(a.id).await.unwrap().is_none());
}

async fn a_job_handed_back_is_queued_at_once_and_counted(q: Arc<dyn JobQueue>) {
    let a = job("build");
    let b = job("upload").depends_on(&[a.id]);
    q.create_compose(&compose("default"), &[a.clone(), b.clone()])
        .await
        .unwrap();
    let f = DequeueFilter::types(&["build"]);
    let l = q.dequeue(&f, "w1", WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.hand_back(l.token, "told to stop", 1).await.unwrap(),
        JobState::Queued
    );
    let j = q.job(a.id).await.unwrap().unwrap();
    assert_eq!((j.state, j.retries, j.worker), (JobState::Queued, 1, None));
    assert_eq!(
        j.reason.as_deref(),
        Some("requeued (attempt 1): worker w1 handed it back (told to stop)")
    );
    // The old lease is gone.
    assert_eq!(q.heartbeat(l.token).await.unwrap(), LeaseStatus::Lost);
    assert!(matches!(
        q.hand_back(l.token, "again", 1).await,
        Err(QueueError::LeaseLost)
    ));
    // At the retry limit a hand-back fails the job and its dependants.
    let l = q.dequeue(&f, "w2", WAIT).await.unwrap().unwrap();
    assert_eq!(l.job.id, a.id);
    assert_eq!(
        q.hand_back(l.token, "told to stop", 1).await.unwrap(),
        JobState::Failed
    );
    let j = q.job(a.id).await.unwrap().unwrap();
    assert_eq!(
        j.reason.as_deref(),
        Some("worker handed it back (told to stop); the job was already requeued 1 time(s), the limit")
    );
    assert_eq!(state(&q, b.id).await, JobState::Failed);
    // A canceled job's lease says so.
    let c = job("build");
    q.enqueue(std::slice::from_ref(&c)).await.unwrap();
    let l = q.dequeue(&f, "w3", WAIT).await.unwrap().unwrap();
    q.cancel_job(c.id).await.unwrap();
    assert!(
        matches!(q.hand_back(l.token, "x", 1).await, Err(QueueError::Canceled(id)) if id == c.id)
    );
}

/// Live reports made through one composer's connection reach another's
/// subscribers (NOTIFY), lines and all, also those too large to announce;
/// the other composer seals the logs the first left unsealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_live_reports_reach_every_composer() {
    let url = PgCluster::shared().unwrap().create_database().unwrap();
    let a = kiln_queue::connect(&url).await.unwrap();
    let b = kiln_queue::connect(&url).await.unwrap();
    let c = compose("default");
    let j = job("build");
    a.create_compose(&c, std::slice::from_ref(&j))
        .await
        .unwrap();
    let l = a
        .dequeue(&DequeueFilter::types(&["build"]), "w", WAIT)
        .await
        .unwrap()
        .unwrap();
    let mut rx = b.subscribe_live();
    let small = vec!["stage org.osbuild.mkdir".to_owned()];
    let large: Vec<String> = (0..20)
        .map(|i| format!("{i} {}", "y".repeat(1000)))
        .collect();
    a.report_live(j.id, Some(c.id), Some(&json!("building")), None, &small)
        .await
        .unwrap();
    a.report_live(j.id, Some(c.id), None, None, &large)
        .await
        .unwrap();
    let first = next_live(&mut rx).await;
    assert_eq!(
        (first.job, first.compose, first.lines),
        (j.id, Some(c.id), small.clone())
    );
    let second = next_live(&mut rx).await;
    assert_eq!((second.lines, second.chunk), (large.clone(), None));
    assert_eq!(
        b.live_states(&[j.id]).await.unwrap()[0].phase,
        Some(json!("building"))
    );
    a.finish(l.token, Outcome::Success(json!({})))
        .await
        .unwrap();
    assert_eq!(b.seal_finished_logs().await.unwrap(), 1);
    let log = a.job_log(j.id).await.unwrap().unwrap();
    assert!(log.sealed);
    assert_eq!(log.lines, 21);
}

/// A job's request id is stored as given and read back by every call that
/// returns the job: a compose's graph, lone enqueues (batched on PostgreSQL),
/// `job`, `compose_jobs`, `dequeue`, `leased` and `finish`. A job made
/// without one has none.
async fn request_ids_round_trip(q: Arc<dyn JobQueue>) {
    let rid = |s: &str| Some(s.to_owned());
    let a = job("depsolve").with_request_id(rid("req-graph.1:a"));
    let b = job("manifest")
        .depends_on(&[a.id])
        .with_request_id(rid("req-graph.1:a"));
    let plain = job("manifest");
    let c = compose("default");
    q.create_compose(&c, &[a.clone(), b.clone(), plain.clone()])
        .await
        .unwrap();
    let jobs = q.compose_jobs(c.id).await.unwrap();
    let by_id = |id: Uuid| jobs.iter().find(|j| j.id == id).unwrap().request_id.clone();
    assert_eq!(by_id(a.id), rid("req-graph.1:a"));
    assert_eq!(by_id(b.id), rid("req-graph.1:a"));
    assert_eq!(by_id(plain.id), None);

    // Lone jobs, enqueued together so that PostgreSQL batches them.
    let lone: Vec<NewJob> = (0..8)
        .map(|i| {
            let j = job("boot");
            if i % 2 == 0 {
                j.with_request_id(Some(format!("lone-{i}")))
            } else {
                j
            }
        })
        .collect();
    let calls = lone.iter().map(|j| {
        let q = q.clone();
        let j = j.clone();
        tokio::spawn(async move { q.enqueue(&[j]).await })
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap().unwrap();
    }
    for j in &lone {
        let stored = q.job(j.id).await.unwrap().unwrap();
        assert_eq!(stored.request_id, j.request_id, "{}", j.id);
    }

    let l = q
        .dequeue(&DequeueFilter::types(&["depsolve"]), "w1", WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.job.id, a.id);
    assert_eq!(l.job.request_id, rid("req-graph.1:a"));
    let held = q.leased(l.token).await.unwrap().unwrap();
    assert_eq!(held.request_id, rid("req-graph.1:a"));
    let done = q
        .finish(l.token, Outcome::Success(json!({})))
        .await
        .unwrap();
    assert_eq!(done.request_id, rid("req-graph.1:a"));
    assert_eq!(
        q.job(b.id).await.unwrap().unwrap().request_id,
        rid("req-graph.1:a")
    );
}

/// Every composer's reports of a worker land in one row; the list has the
/// workers heard from within the window, and silent ones only while they
/// hold a running job, each with its jobs.
async fn workers_are_listed_with_the_jobs_they_hold(q: Arc<dyn JobQueue>) {
    assert!(q.workers(Duration::from_secs(60)).await.unwrap().is_empty());
    let channels = vec!["tenant-a".to_owned()];
    q.worker_seen("w1.kiln.test", None).await.unwrap();
    q.worker_seen("w1.kiln.test", Some(("x86_64", &channels)))
        .await
        .unwrap();
    // A request other than a dequeue keeps what it asked for.
    q.worker_seen("w1.kiln.test", None).await.unwrap();
    q.worker_seen("w2.kiln.test", Some(("aarch64", &[])))
        .await
        .unwrap();
    let c = compose("tenant-a");
    let j = job("build");
    q.create_compose(&c, std::slice::from_ref(&j))
        .await
        .unwrap();
    let f = DequeueFilter::types(&["build"]);
    let lease = q.dequeue(&f, "w1.kiln.test", WAIT).await.unwrap().unwrap();
    let listed = q.workers(Duration::from_secs(60)).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["w1.kiln.test", "w2.kiln.test"]);
    let w1 = &listed[0];
    assert_eq!(w1.arch, "x86_64");
    assert_eq!(w1.channels, channels);
    assert!(w1.first_seen <= w1.last_seen);
    assert_eq!(w1.jobs.len(), 1, "{w1:?}");
    assert_eq!(w1.jobs[0].id, j.id);
    assert_eq!(w1.jobs[0].compose_id, Some(c.id));
    assert_eq!(w1.jobs[0].job_type, "build");
    assert_eq!(w1.jobs[0].channel, "default");
    assert!(w1.jobs[0].started_at.is_some());
    assert_eq!(listed[1].arch, "aarch64");
    assert!(listed[1].channels.is_empty());
    assert!(listed[1].jobs.is_empty());
    // Past the window: only the worker holding a job is listed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let listed = q.workers(Duration::from_millis(10)).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["w1.kiln.test"]);
    q.finish(lease.token, Outcome::Success(json!(null)))
        .await
        .unwrap();
    assert!(q
        .workers(Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    // Heard from again: back in the list, first seen as before.
    let first = w1.first_seen;
    q.worker_seen("w1.kiln.test", None).await.unwrap();
    let listed = q.workers(Duration::from_secs(60)).await.unwrap();
    assert_eq!(listed[0].first_seen, first);
    assert_eq!(listed[0].arch, "x86_64");
}
