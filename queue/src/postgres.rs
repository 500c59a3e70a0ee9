//! The PostgreSQL backend: shared by every composer of a cluster.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::batch::Batcher;
use crate::graph::{self, StoredDependency};
use crate::live;
use crate::wait::{wait_for_job, Waiters};
use crate::{
    dependency_reason, node_list, node_pattern, parse_node_list, requeue_reason, stale_reason,
    BlueprintRecord, BootChangeRecord, ComposeRecord, DeleteOutcome, DequeueFilter, Job, JobCount,
    JobEvent, JobLogText, JobQueue, JobState, Lease, LeaseStatus, LiveEvent, LiveState, NewJob,
    NodeBootRecord, Outcome, QueueError, ReapReport, Result, RowCounts, TakenBack, WorkerJob,
    WorkerRecord,
};

const CHANNEL: &str = "kiln_jobs";
/// Where [`JobQueue::report_live`] announces reports.
const LIVE_CHANNEL: &str = "kiln_live";

const JOB_COLUMNS: &str =
    "id, compose_id, job_type, arch, channel, args, priority, state, result, \
    reason, worker, retries, created_at, queued_at, started_at, finished_at, \
    deps, request_id";

/// Runs of one batched statement in flight at once, per kind of call, each on
/// a connection of its own. Beyond that, calls gather into bigger batches.
const BATCH_SLOTS: usize = 2;
const ENQUEUE_SLOTS: usize = 1;
/// The most calls one statement serves.
const MAX_BATCH: usize = 128;

pub struct PgQueue {
    pool: PgPool,
    events: broadcast::Sender<JobEvent>,
    live: broadcast::Sender<LiveEvent>,
    waiters: Arc<Waiters>,
    listener: tokio::task::JoinHandle<()>,
    /// Lone jobs without dependencies, the common `enqueue`.
    enqueues: Batcher<NewJob, ()>,
    dequeues: Batcher<(DequeueFilter, String), Option<Lease>>,
    /// Successful finishes; failures fail dependants in a transaction of their own.
    successes: Batcher<(Uuid, Value), Job>,
}

impl PgQueue {
    /// Connects, applies migrations (serialised across composers by an
    /// advisory lock), and starts listening for job events.
    pub async fn connect(url: &str) -> Result<PgQueue> {
        let pool = PgPoolOptions::new()
            .max_connections(32)
            // No ping before every query (sqlx's default): it doubles the
            // round trips; a broken connection still fails its query and is
            // replaced.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Self::with_pool(pool).await
    }

    pub async fn with_pool(pool: PgPool) -> Result<PgQueue> {
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all([CHANNEL, LIVE_CHANNEL]).await?;
        let (events, _) = broadcast::channel(4096);
        let (live, _) = broadcast::channel(4096);
        let waiters = Arc::new(Waiters::default());
        let listener = tokio::spawn(listen(
            listener,
            events.clone(),
            live.clone(),
            waiters.clone(),
            pool.clone(),
        ));
        // The batched statements find every row through an index. Planned
        // while the table is small (a fresh database, or before autovacuum's
        // next ANALYZE), they would keep a sequential scan in their cached
        // plan as the table grows; on these connections they cannot.
        let options = Arc::new(
            (*pool.connect_options())
                .clone()
                .options([("enable_seqscan", "off")]),
        );
        let slots = |n: usize| (0..n).map(|_| None).collect::<Vec<Slot>>();
        let enqueues = {
            let options = options.clone();
            Batcher::new(
                MAX_BATCH,
                slots(ENQUEUE_SLOTS),
                move |slot, jobs| with_slot(options.clone(), slot, jobs, enqueue_lone),
                |()| {},
            )
        };
        let dequeues = {
            // A lease may be forgotten by a database that crashes right after
            // granting it: the job is then still queued, and the worker's
            // first heartbeat hears that its lease is lost, so it stops. So a
            // dequeue does not wait for its commit to reach the disk; enqueues
            // and finishes (which must never be forgotten) do.
            let options = Arc::new((*options).clone().options([("synchronous_commit", "off")]));
            let back = pool.clone();
            Batcher::new(
                MAX_BATCH,
                slots(BATCH_SLOTS),
                move |slot, calls| with_slot(options.clone(), slot, calls, dequeue_many),
                move |lease: Option<Lease>| {
                    if let Some(lease) = lease {
                        tokio::spawn(hand_back(back.clone(), lease.token));
                    }
                },
            )
        };
        let successes = {
            let options = options.clone();
            Batcher::new(
                MAX_BATCH,
                slots(BATCH_SLOTS),
                move |slot, calls| with_slot(options.clone(), slot, calls, succeed_many),
                |_| {},
            )
        };
        Ok(PgQueue {
            pool,
            events,
            live,
            waiters,
            listener,
            enqueues,
            dequeues,
            successes,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn insert_jobs(
        conn: &mut PgConnection,
        compose: Option<Uuid>,
        jobs: &[NewJob],
    ) -> Result<()> {
        let external = graph::validate_graph(jobs)?;
        let mut stored = HashMap::new();
        if !external.is_empty() {
            let rows =
                sqlx::query("SELECT id, state, job_type, reason FROM jobs WHERE id = ANY($1)")
                    .bind(&external)
                    .fetch_all(&mut *conn)
                    .await?;
            for r in rows {
                let state: String = r.try_get("state")?;
                stored.insert(
                    r.try_get::<Uuid, _>("id")?,
                    StoredDependency {
                        state: state.parse()?,
                        job_type: r.try_get("job_type")?,
                        reason: r.try_get("reason")?,
                    },
                );
            }
        }
        let planned = graph::plan(jobs, &stored)?;
        for (job, p) in jobs.iter().zip(planned) {
            sqlx::query(
                "INSERT INTO jobs (id, compose_id, job_type, arch, channel, args, priority, state, \
                 pending_deps, reason, deps, request_id, queued_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 CASE WHEN $8 = 'queued' THEN now() END, CASE WHEN $8 = 'failed' THEN now() END)",
            )
            .bind(job.id)
            .bind(compose)
            .bind(&job.job_type)
            .bind(&job.arch)
            .bind(&job.channel)
            .bind(&job.args)
            .bind(job.priority)
            .bind(p.state.as_str())
            .bind(p.pending)
            .bind(&p.reason)
            .bind(sorted(&job.dependencies))
            .bind(&job.request_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| duplicate_as(e, || QueueError::DuplicateJob(job.id)))?;
            if !job.dependencies.is_empty() {
                sqlx::query(
                    "INSERT INTO job_deps (job_id, depends_on) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
                )
                .bind(job.id)
                .bind(&job.dependencies)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    /// Takes a running job (`row`: its id, job_type, worker and retries,
    /// locked) from its worker: queued again, or failed at the retry limit.
    async fn take_back(
        conn: &mut PgConnection,
        row: &PgRow,
        max_retries: u32,
        why: TakenBack<'_>,
    ) -> Result<JobState> {
        let id: Uuid = row.try_get("id")?;
        let retries: i32 = row.try_get("retries")?;
        let worker: Option<String> = row.try_get("worker")?;
        if retries < max_retries as i32 {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', retries = retries + 1, token = NULL, worker = NULL, \
                 started_at = NULL, heartbeat_at = NULL, queued_at = now(), reason = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(requeue_reason(worker.as_deref(), retries + 1, why))
            .execute(&mut *conn)
            .await?;
            return Ok(JobState::Queued);
        }
        let reason = stale_reason(max_retries, why);
        sqlx::query(
            "UPDATE jobs SET state = 'failed', token = NULL, finished_at = now(), reason = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(&reason)
        .execute(&mut *conn)
        .await?;
        let job_type: String = row.try_get("job_type")?;
        Self::fail_dependants(conn, id, &job_type, JobState::Failed, Some(&reason)).await?;
        Ok(JobState::Failed)
    }

    /// A job's log chunks in order.
    async fn chunks(conn: &mut PgConnection, job: Uuid) -> Result<Vec<Vec<String>>> {
        let rows: Vec<sqlx::types::Json<Vec<String>>> =
            sqlx::query_scalar("SELECT lines FROM job_log_chunks WHERE job_id = $1 ORDER BY chunk")
                .bind(job)
                .fetch_all(&mut *conn)
                .await?;
        Ok(rows.into_iter().map(|j| j.0).collect())
    }

    /// Fails every unfinished job downstream of `id` with a reason naming it.
    async fn fail_dependants(
        conn: &mut PgConnection,
        id: Uuid,
        job_type: &str,
        state: JobState,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "WITH RECURSIVE down(id) AS ( \
                SELECT job_id FROM job_deps WHERE depends_on = $1 \
                UNION SELECT d.job_id FROM job_deps d JOIN down ON d.depends_on = down.id) \
             UPDATE jobs SET state = 'failed', reason = $2, finished_at = now(), token = NULL \
             WHERE id IN (SELECT id FROM down) AND state IN ('waiting', 'queued')",
        )
        .bind(id)
        .bind(dependency_reason(job_type, id, state, reason))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn listen(
    mut listener: PgListener,
    events: broadcast::Sender<JobEvent>,
    live: broadcast::Sender<LiveEvent>,
    waiters: Arc<Waiters>,
    pool: PgPool,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == LIVE_CHANNEL => {
                match serde_json::from_str::<LiveEvent>(n.payload()) {
                    Ok(ev) => {
                        let _ = live.send(with_lines(&pool, ev).await);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable live event"),
                }
            }
            Ok(Some(n)) => match serde_json::from_str::<JobEvent>(n.payload()) {
                Ok(ev) => {
                    if ev.state == JobState::Queued {
                        waiters.job_queued(&ev.job_type, &ev.arch, &ev.channel);
                    }
                    let _ = events.send(ev);
                }
                Err(e) => tracing::warn!(error = %e, payload = n.payload(), "unreadable job event"),
            },
            Ok(None) => {
                // The connection dropped and notifications may have been
                // missed: make every waiter look again. The next call reconnects.
                tracing::warn!("job event listener lost its connection; reconnecting");
                waiters.wake_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, "job event listener failed; retrying");
                waiters.wake_all();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// A live event announced without its lines, with them read from its chunk
/// (gone already when the log outgrew its bound: then without).
async fn with_lines(pool: &PgPool, mut ev: LiveEvent) -> LiveEvent {
    let Some(chunk) = ev.chunk.take() else {
        return ev;
    };
    let lines: std::result::Result<Option<sqlx::types::Json<Vec<String>>>, _> =
        sqlx::query_scalar("SELECT lines FROM job_log_chunks WHERE job_id = $1 AND chunk = $2")
            .bind(ev.job)
            .bind(chunk)
            .fetch_optional(pool)
            .await;
    match lines {
        Ok(lines) => ev.lines = lines.map(|l| l.0).unwrap_or_default(),
        Err(e) => tracing::warn!(error = %e, job = %ev.job, "reading a live event's lines"),
    }
    ev
}

/// Dependencies as stored: each once, in id order.
fn sorted(deps: &[Uuid]) -> Vec<Uuid> {
    let mut v = deps.to_vec();
    v.sort();
    v.dedup();
    v
}

fn duplicate_as(e: sqlx::Error, f: impl FnOnce() -> QueueError) -> QueueError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => f(),
        _ => QueueError::Database(e),
    }
}

/// Leases up to `$6` queued jobs matching a filter, job k to caller k.
static DEQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH picked AS ( \
                SELECT id, row_number() OVER () AS k FROM ( \
                    SELECT id FROM jobs WHERE state = 'queued' AND job_type = ANY($3) \
                    AND (cardinality($4::text[]) = 0 OR arch = ANY($4)) \
                    AND (cardinality($5::text[]) = 0 OR channel = ANY($5)) \
                    ORDER BY priority DESC, seq LIMIT $6 FOR UPDATE SKIP LOCKED) ready) \
             UPDATE jobs j SET state = 'running', token = ($1::uuid[])[picked.k], \
                 worker = ($2::text[])[picked.k], started_at = now(), heartbeat_at = now() \
             FROM picked WHERE j.id = picked.id \
             RETURNING {}, j.token",
        job_columns("j")
    )
});

/// Marks leases `$1` successful with results `$2` and queues the dependants
/// whose last dependency that was.
static SUCCEED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH leased AS (SELECT id, token, state FROM jobs WHERE token = ANY($1) FOR UPDATE), \
         done AS ( \
            UPDATE jobs j SET state = 'success', result = ($2::jsonb[])[array_position($1, l.token)], \
                finished_at = now(), token = NULL \
            FROM leased l WHERE j.id = l.id AND l.state = 'running' \
            RETURNING {}, l.token AS lease), \
         unblocked AS ( \
            SELECT d.job_id, count(*)::int AS n FROM job_deps d JOIN done ON d.depends_on = done.id \
            GROUP BY d.job_id), \
         promoted AS ( \
            UPDATE jobs j SET pending_deps = j.pending_deps - u.n, \
                state = CASE WHEN j.pending_deps = u.n THEN 'queued' ELSE j.state END, \
                queued_at = CASE WHEN j.pending_deps = u.n THEN now() ELSE j.queued_at END \
            FROM unblocked u WHERE j.id = u.job_id AND j.state = 'waiting' RETURNING j.id) \
         SELECT * FROM done",
        job_columns("j")
    )
});

fn job_columns(table: &str) -> String {
    JOB_COLUMNS
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn lease_error<'c, E>(db: E, token: Uuid) -> Result<QueueError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let row = sqlx::query("SELECT id, state FROM jobs WHERE token = $1")
        .bind(token)
        .fetch_optional(db)
        .await?;
    Ok(match row {
        Some(r) if r.try_get::<String, _>("state")? == "canceled" => {
            QueueError::Canceled(r.try_get("id")?)
        }
        _ => QueueError::LeaseLost,
    })
}

/// One error for every call of a batch: the first gets the database's error
/// itself, the others its text.
fn shared_error(e: sqlx::Error, n: usize) -> Vec<QueueError> {
    let text = e.to_string();
    std::iter::once(QueueError::Database(e))
        .chain((1..n).map(|_| QueueError::SharedDatabase(text.clone())))
        .collect()
}

/// A batcher slot's own connection: made on first use, and again after one
/// breaks. Statements on it skip the pool's checkout and its check on return
/// (sqlx pings every connection given back to a pool: a second round trip).
type Slot = Option<PgConnection>;

/// Runs `f` on the slot's connection; calls fail with the connect error if
/// there is none to be had. A connection that failed other than with an error
/// from the database itself is dropped.
async fn with_slot<Req, Resp, F>(
    options: Arc<PgConnectOptions>,
    mut slot: Slot,
    calls: Vec<Req>,
    f: F,
) -> (Slot, Vec<Result<Resp>>)
where
    F: for<'c> AsyncBatch<'c, Req, Resp>,
{
    let conn = match slot.as_mut() {
        Some(conn) => conn,
        None => match PgConnection::connect_with(&options).await {
            Ok(conn) => slot.insert(conn),
            Err(e) => {
                return (
                    None,
                    shared_error(e, calls.len()).into_iter().map(Err).collect(),
                )
            }
        },
    };
    let results = f.call(conn, calls).await;
    let broken = results.iter().any(
        |r| matches!(r, Err(QueueError::Database(e)) if !matches!(e, sqlx::Error::Database(_))),
    );
    (if broken { None } else { slot }, results)
}

/// An async function of a connection and a batch of calls.
trait AsyncBatch<'c, Req, Resp> {
    type Fut: std::future::Future<Output = Vec<Result<Resp>>> + Send + 'c;
    fn call(&self, conn: &'c mut PgConnection, calls: Vec<Req>) -> Self::Fut;
}

impl<'c, Req, Resp, F, Fut> AsyncBatch<'c, Req, Resp> for F
where
    F: Fn(&'c mut PgConnection, Vec<Req>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<Resp>>> + Send + 'c,
{
    type Fut = Fut;
    fn call(&self, conn: &'c mut PgConnection, calls: Vec<Req>) -> Fut {
        self(conn, calls)
    }
}

/// Lone jobs without dependencies, queued at once: one INSERT for the batch.
/// If it fails (a duplicate id, say), each job is inserted alone, so that the
/// error lands on the call that caused it.
async fn enqueue_lone(conn: &mut PgConnection, jobs: Vec<NewJob>) -> Vec<Result<()>> {
    fn insert(
        jobs: &[NewJob],
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "INSERT INTO jobs (id, job_type, arch, channel, args, priority, request_id, state, \
                 queued_at) \
             SELECT id, job_type, arch, channel, args, priority, request_id, 'queued', now() \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int[], \
                 $7::text[]) AS t(id, job_type, arch, channel, args, priority, request_id)",
        )
        .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.job_type.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.arch.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.channel.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| &j.args).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| j.request_id.as_deref())
                .collect::<Vec<_>>(),
        )
    }
    match insert(&jobs).execute(&mut *conn).await {
        Ok(_) => return jobs.iter().map(|_| Ok(())).collect(),
        Err(e) if jobs.len() == 1 => {
            return vec![Err(duplicate_as(e, || {
                QueueError::DuplicateJob(jobs[0].id)
            }))]
        }
        Err(e) => tracing::debug!(error = %e, n = jobs.len(), "batched enqueue failed; one by one"),
    }
    let mut out = Vec::with_capacity(jobs.len());
    for job in &jobs {
        out.push(
            insert(std::slice::from_ref(job))
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| duplicate_as(e, || QueueError::DuplicateJob(job.id))),
        );
    }
    out
}

/// Dequeues for several callers: one statement per distinct filter leases up
/// to as many jobs as it has callers, each under a fresh token.
async fn dequeue_many(
    conn: &mut PgConnection,
    calls: Vec<(DequeueFilter, String)>,
) -> Vec<Result<Option<Lease>>> {
    let mut out: Vec<Result<Option<Lease>>> = calls.iter().map(|_| Ok(None)).collect();
    let mut groups: Vec<(&DequeueFilter, Vec<usize>)> = Vec::new();
    for (i, (filter, _)) in calls.iter().enumerate() {
        match groups.iter_mut().find(|(f, _)| *f == filter) {
            Some((_, members)) => members.push(i),
            None => groups.push((filter, vec![i])),
        }
    }
    for (filter, members) in groups {
        let tokens: Vec<Uuid> = members.iter().map(|_| Uuid::new_v4()).collect();
        let workers: Vec<&str> = members.iter().map(|&i| calls[i].1.as_str()).collect();
        let rows = sqlx::query(&DEQUEUE)
            .bind(&tokens)
            .bind(&workers)
            .bind(&filter.job_types)
            .bind(&filter.arches)
            .bind(&filter.channels)
            .bind(members.len() as i64)
            .fetch_all(&mut *conn)
            .await;
        match rows {
            Ok(rows) => {
                let mut leased = HashMap::new();
                for r in &rows {
                    let token: Uuid = match r.try_get("token") {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(error = %e, "a dequeued row without its token");
                            continue;
                        }
                    };
                    leased.insert(token, job_from_row(r));
                }
                for (&i, token) in members.iter().zip(&tokens) {
                    if let Some(job) = leased.remove(token) {
                        out[i] = job.map(|job| Some(Lease { token: *token, job }));
                    }
                }
            }
            Err(e) => {
                for (&i, e) in members.iter().zip(shared_error(e, members.len())) {
                    out[i] = Err(e);
                }
            }
        }
    }
    out
}

/// A lease whose caller went away before it got it: back to the queue, as if
/// it had never been taken (no retry counted).
async fn hand_back(pool: PgPool, token: Uuid) {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'queued', token = NULL, worker = NULL, started_at = NULL, \
         heartbeat_at = NULL, queued_at = now() WHERE token = $1 AND state = 'running'",
    )
    .bind(token)
    .execute(&pool)
    .await;
    if let Err(e) = done {
        // The heartbeat reaper takes it back later.
        tracing::warn!(error = %e, "handing back a lease nobody received");
    }
}

/// Successful finishes: one statement marks them all and counts each
/// dependant's newly succeeded dependencies at once (two finished jobs of a
/// batch may share a dependant). The leases are found by token alone and
/// locked, and the state is checked on the locked rows: any `state =
/// 'running'` condition on `jobs` makes the planner walk the partial index of
/// running jobs instead, and under load that index is mostly dead entries of
/// jobs finished since the last vacuum.
async fn succeed_many(conn: &mut PgConnection, calls: Vec<(Uuid, Value)>) -> Vec<Result<Job>> {
    let (tokens, results): (Vec<Uuid>, Vec<Value>) = calls.into_iter().unzip();
    let rows = sqlx::query(&SUCCEED)
        .bind(&tokens)
        .bind(&results)
        .fetch_all(&mut *conn)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return shared_error(e, tokens.len()).into_iter().map(Err).collect(),
    };
    let mut finished = HashMap::new();
    for r in &rows {
        match r.try_get::<Uuid, _>("lease") {
            Ok(lease) => {
                finished.insert(lease, job_from_row(r));
            }
            Err(e) => tracing::error!(error = %e, "a finished row without its lease"),
        }
    }
    let mut out = Vec::with_capacity(tokens.len());
    for token in tokens {
        out.push(match finished.remove(&token) {
            Some(job) => job,
            None => match lease_error(&mut *conn, token).await {
                Ok(e) | Err(e) => Err(e),
            },
        });
    }
    out
}

fn blueprint_from_row(r: &PgRow) -> Result<BlueprintRecord> {
    Ok(BlueprintRecord {
        channel: r.try_get("channel")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        blueprint: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

fn job_from_row(r: &PgRow) -> Result<Job> {
    let state: String = r.try_get("state")?;
    Ok(Job {
        id: r.try_get("id")?,
        compose_id: r.try_get("compose_id")?,
        job_type: r.try_get("job_type")?,
        arch: r.try_get("arch")?,
        channel: r.try_get("channel")?,
        args: r.try_get("args")?,
        priority: r.try_get("priority")?,
        dependencies: r.try_get("deps")?,
        state: state.parse()?,
        result: r.try_get("result")?,
        reason: r.try_get("reason")?,
        worker: r.try_get("worker")?,
        retries: r.try_get("retries")?,
        created_at: r.try_get("created_at")?,
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        request_id: r.try_get("request_id")?,
    })
}

fn compose_from_row(r: &PgRow) -> Result<ComposeRecord> {
    Ok(ComposeRecord {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        request: r.try_get("request")?,
        created_at: r.try_get::<DateTime<Utc>, _>("created_at")?,
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[async_trait]
impl JobQueue for PgQueue {
    async fn create_compose(&self, compose: &ComposeRecord, jobs: &[NewJob]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO composes (id, channel, request, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(compose.id)
        .bind(&compose.channel)
        .bind(&compose.request)
        .bind(compose.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_as(e, || QueueError::ComposeExists(compose.id)))?;
        Self::insert_jobs(&mut tx, Some(compose.id), jobs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Result<()> {
        if let [job] = jobs {
            if job.dependencies.is_empty() {
                // The common case needs no transaction, and shares its
                // statement with whatever else is enqueued at the same time.
                return self.enqueues.call(job.clone()).await;
            }
        }
        let mut tx = self.pool.begin().await?;
        Self::insert_jobs(&mut tx, None, jobs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dequeue(
        &self,
        filter: &DequeueFilter,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<Lease>> {
        wait_for_job(&self.waiters, filter, wait, || {
            self.dequeues.call((filter.clone(), worker.to_owned()))
        })
        .await
    }

    async fn heartbeat(&self, token: Uuid) -> Result<LeaseStatus> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET heartbeat_at = now() WHERE token = $1 RETURNING state",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(LeaseStatus::of_state(state.as_deref()))
    }

    async fn leased(&self, token: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE token = $1"))
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn finish(&self, token: Uuid, outcome: Outcome) -> Result<Job> {
        match outcome {
            Outcome::Success(result) => self.successes.call((token, result)).await,
            Outcome::Failure { reason, result } => {
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(&format!(
                    "UPDATE jobs SET state = 'failed', reason = $2, result = $3, finished_at = now(), token = NULL \
                     WHERE token = $1 AND state = 'running' RETURNING {JOB_COLUMNS}"
                ))
                .bind(token)
                .bind(&reason)
                .bind(&result)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    drop(tx);
                    return Err(lease_error(&self.pool, token).await?);
                };
                let job = job_from_row(&row)?;
                Self::fail_dependants(
                    &mut tx,
                    job.id,
                    &job.job_type,
                    JobState::Failed,
                    Some(&reason),
                )
                .await?;
                tx.commit().await?;
                Ok(job)
            }
        }
    }

    async fn cancel_job(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let job_type: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = now() \
             WHERE id = $1 AND state IN ('waiting', 'queued', 'running') RETURNING job_type",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job_type) = job_type else {
            return Ok(false);
        };
        Self::fail_dependants(&mut tx, id, &job_type, JobState::Canceled, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_compose(&self, id: Uuid) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM composes WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let canceled = sqlx::query(
            "UPDATE jobs SET state = 'canceled', reason = 'compose canceled', finished_at = now() \
             WHERE compose_id = $1 AND state IN ('waiting', 'queued', 'running') RETURNING id, job_type",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for r in &canceled {
            let job_type: String = r.try_get("job_type")?;
            Self::fail_dependants(
                &mut tx,
                r.try_get("id")?,
                &job_type,
                JobState::Canceled,
                Some("compose canceled"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(canceled.len() as u64))
    }

    async fn requeue_stale(&self, timeout: Duration, max_retries: u32) -> Result<ReapReport> {
        let mut tx = self.pool.begin().await?;
        let stale = sqlx::query(
            "SELECT id, job_type, worker, retries FROM jobs WHERE state = 'running' \
             AND heartbeat_at < now() - make_interval(secs => $1) ORDER BY seq FOR UPDATE SKIP LOCKED",
        )
        .bind(secs(timeout))
        .fetch_all(&mut *tx)
        .await?;
        let mut report = ReapReport::default();
        for r in stale {
            let id: Uuid = r.try_get("id")?;
            match Self::take_back(&mut tx, &r, max_retries, TakenBack::Silent).await? {
                JobState::Queued => report.requeued.push(id),
                _ => report.failed.push(id),
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn unfinished_counts(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(
            "SELECT job_type, channel, state, count(*) AS n FROM jobs \
             WHERE state IN ('waiting', 'queued', 'running') GROUP BY job_type, channel, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JobCount {
                    job_type: r.try_get("job_type")?,
                    channel: r.try_get("channel")?,
                    state: r.try_get::<String, _>("state")?.parse()?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    async fn worker_seen(&self, worker: &str, asks: Option<(&str, &[String])>) -> Result<()> {
        let (arch, channels) = crate::asked(asks);
        sqlx::query(
            "INSERT INTO workers (name, arch, channels, first_seen, last_seen) \
             VALUES ($1, COALESCE($2, ''), COALESCE($3, '[]'), now(), now()) \
             ON CONFLICT (name) DO UPDATE SET last_seen = now(), \
             arch = COALESCE($2, workers.arch), channels = COALESCE($3, workers.channels)",
        )
        .bind(worker)
        .bind(arch)
        .bind(channels)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn workers(&self, window: Duration) -> Result<Vec<WorkerRecord>> {
        let workers = sqlx::query_as(
            "SELECT name, arch, channels, first_seen, last_seen FROM workers \
             WHERE last_seen >= now() - make_interval(secs => $1) \
             OR name IN (SELECT worker FROM jobs WHERE state = 'running' AND worker IS NOT NULL)",
        )
        .bind(window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT worker, id, compose_id, job_type, channel, started_at FROM jobs \
             WHERE state = 'running' AND worker IS NOT NULL ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let held = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("worker")?,
                    WorkerJob {
                        id: r.try_get("id")?,
                        compose_id: r.try_get("compose_id")?,
                        job_type: r.try_get("job_type")?,
                        channel: r.try_get("channel")?,
                        started_at: r.try_get("started_at")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        WorkerRecord::assemble(workers, held)
    }

    async fn hand_back(&self, token: Uuid, reason: &str, max_retries: u32) -> Result<JobState> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, job_type, worker, retries FROM jobs WHERE token = $1 AND state = 'running' FOR UPDATE",
        )
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(lease_error(&self.pool, token).await?);
        };
        let state =
            Self::take_back(&mut tx, &row, max_retries, TakenBack::HandedBack(reason)).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn report_live(
        &self,
        job: Uuid,
        compose: Option<Uuid>,
        phase: Option<&Value>,
        progress: Option<&Value>,
        lines: &[String],
    ) -> Result<()> {
        let bytes = live::chunk_bytes(lines);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO job_live AS l (job_id, compose_id, phase, progress, log_bytes, next_chunk, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (job_id) DO UPDATE SET \
             phase = COALESCE(EXCLUDED.phase, l.phase), progress = COALESCE(EXCLUDED.progress, l.progress), \
             log_bytes = l.log_bytes + $5, next_chunk = l.next_chunk + $6, updated_at = now() \
             RETURNING next_chunk, log_bytes",
        )
        .bind(job)
        .bind(compose)
        .bind(phase)
        .bind(progress)
        .bind(bytes)
        .bind(i64::from(!lines.is_empty()))
        .fetch_one(&mut *tx)
        .await?;
        let chunk = row.try_get::<i64, _>("next_chunk")? - 1;
        if !lines.is_empty() {
            sqlx::query("INSERT INTO job_log_chunks (job_id, chunk, lines, n, bytes) VALUES ($1, $2, $3, $4, $5)")
                .bind(job)
                .bind(chunk)
                .bind(sqlx::types::Json(lines))
                .bind(lines.len() as i64)
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
            if row.try_get::<i64, _>("log_bytes")? > live::LOG_MAX_BYTES {
                // The oldest chunks beyond the bound go (never the newest).
                sqlx::query(
                    "WITH gone AS (DELETE FROM job_log_chunks WHERE job_id = $1 AND chunk < $3 AND chunk IN ( \
                         SELECT chunk FROM (SELECT chunk, sum(bytes) OVER (ORDER BY chunk DESC) AS kept \
                         FROM job_log_chunks WHERE job_id = $1) t WHERE kept > $2) RETURNING n, bytes) \
                     UPDATE job_live SET log_bytes = log_bytes - (SELECT coalesce(sum(bytes), 0) FROM gone), \
                         dropped = dropped + (SELECT coalesce(sum(n), 0) FROM gone) WHERE job_id = $1",
                )
                .bind(job)
                .bind(live::LOG_MAX_BYTES)
                .bind(chunk)
                .execute(&mut *tx)
                .await?;
            }
        }
        let event = LiveEvent {
            job,
            compose,
            lines: lines.to_vec(),
            chunk: None,
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LIVE_CHANNEL)
            .bind(event.payload(chunk)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_states(&self, jobs: &[Uuid]) -> Result<Vec<LiveState>> {
        let rows = sqlx::query(
            "SELECT job_id, phase, progress, updated_at FROM job_live WHERE job_id = ANY($1)",
        )
        .bind(jobs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveState {
                    job: r.try_get("job_id")?,
                    phase: r.try_get("phase")?,
                    progress: r.try_get("progress")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn seal_log(&self, job: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let dropped: Option<i64> = sqlx::query_scalar(
            "SELECT l.dropped FROM job_live l JOIN jobs j ON j.id = l.job_id \
             WHERE l.job_id = $1 AND j.state IN ('success', 'failed', 'canceled') FOR UPDATE OF l",
        )
        .bind(job)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(dropped) = dropped else {
            return Ok(false);
        };
        let chunks = Self::chunks(&mut tx, job).await?;
        let (text, lines) = live::join_chunks(&chunks);
        sqlx::query(
            "INSERT INTO job_logs (job_id, body, lines, dropped) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id) DO UPDATE SET body = EXCLUDED.body, lines = EXCLUDED.lines, dropped = EXCLUDED.dropped",
        )
        .bind(job)
        .bind(live::compress(&text)?)
        .bind(lines)
        .bind(dropped)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM job_log_chunks WHERE job_id = $1")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM job_live WHERE job_id = $1")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn seal_finished_logs(&self) -> Result<u64> {
        let jobs: Vec<Uuid> = sqlx::query_scalar(
            "SELECT l.job_id FROM job_live l JOIN jobs j ON j.id = l.job_id \
             WHERE j.state IN ('success', 'failed', 'canceled')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut sealed = 0;
        for job in jobs {
            sealed += u64::from(self.seal_log(job).await?);
        }
        Ok(sealed)
    }

    async fn job_log(&self, job: Uuid) -> Result<Option<JobLogText>> {
        // Twice at most: a log sealed between the two reads is found sealed.
        for _ in 0..2 {
            let sealed = sqlx::query("SELECT body, lines, dropped FROM job_logs WHERE job_id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = sealed {
                return Ok(Some(JobLogText {
                    text: live::decompress(&r.try_get::<Vec<u8>, _>("body")?)?,
                    lines: r.try_get("lines")?,
                    dropped: r.try_get("dropped")?,
                    sealed: true,
                }));
            }
            let mut tx = self.pool.begin().await?;
            let dropped: Option<i64> =
                sqlx::query_scalar("SELECT dropped FROM job_live WHERE job_id = $1")
                    .bind(job)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(dropped) = dropped {
                let (text, lines) = live::join_chunks(&Self::chunks(&mut tx, job).await?);
                return Ok(Some(JobLogText {
                    text,
                    lines,
                    dropped,
                    sealed: false,
                }));
            }
        }
        Ok(None)
    }

    async fn expire(&self, max_age: Duration) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM composes c WHERE c.created_at < now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.compose_id = c.id AND \
                 (j.state IN ('waiting', 'queued', 'running') OR j.finished_at >= now() - make_interval(secs => $1)))",
        )
        .bind(secs(max_age))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM jobs WHERE compose_id IS NULL AND finished_at < now() - make_interval(secs => $1) \
             AND state IN ('success', 'failed', 'canceled')",
        )
        .bind(secs(max_age))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn unfinished_before(&self, max_age: Duration) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT c.id FROM composes c WHERE c.created_at < now() - make_interval(secs => $1) \
             AND EXISTS (SELECT 1 FROM jobs j WHERE j.compose_id = c.id \
                 AND j.state IN ('waiting', 'queued', 'running')) ORDER BY c.created_at",
        )
        .bind(secs(max_age))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn compose(&self, id: Uuid) -> Result<Option<ComposeRecord>> {
        let row =
            sqlx::query("SELECT id, channel, request, created_at FROM composes WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| compose_from_row(&r)).transpose()
    }

    async fn compose_jobs(&self, id: Uuid) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE compose_id = $1 ORDER BY seq"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn list_composes(
        &self,
        channel: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ComposeRecord>, i64)> {
        let rows = sqlx::query(
            "SELECT id, channel, request, created_at FROM composes WHERE ($1::text IS NULL OR channel = $1) \
             ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        )
        .bind(channel)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM composes WHERE ($1::text IS NULL OR channel = $1)",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            rows.iter().map(compose_from_row).collect::<Result<_>>()?,
            total,
        ))
    }

    async fn delete_compose(&self, id: Uuid) -> Result<DeleteOutcome> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM composes WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(DeleteOutcome::NotFound);
        }
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE compose_id = $1 AND state IN ('waiting', 'queued', 'running')",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if unfinished > 0 {
            return Ok(DeleteOutcome::Unfinished);
        }
        sqlx::query("DELETE FROM composes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    async fn row_counts(&self) -> Result<RowCounts> {
        let (composes, jobs, boot_changes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM composes), (SELECT count(*) FROM jobs), \
             (SELECT count(*) FROM boot_changes)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(RowCounts {
            composes,
            jobs,
            boot_changes,
        })
    }

    async fn record_boot_change(&self, c: &BootChangeRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO boot_changes (id, channel, job_id, nodes, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.channel)
        .bind(c.job_id)
        .bind(node_list(&c.nodes))
        .bind(&c.record)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn boot_changes(
        &self,
        channel: &str,
        node: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<BootChangeRecord>, i64)> {
        let pattern = match node.map(node_pattern) {
            Some(None) => return Ok((Vec::new(), 0)),
            Some(Some(p)) => Some(p),
            None => None,
        };
        let filter = "channel = $1 AND ($2::TEXT IS NULL OR nodes LIKE $2)";
        let rows = sqlx::query(&format!(
            "SELECT id, channel, job_id, nodes, body, created_at FROM boot_changes WHERE {filter} \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(channel)
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let (total,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM boot_changes WHERE {filter}"))
                .bind(channel)
                .bind(&pattern)
                .fetch_one(&self.pool)
                .await?;
        let changes = rows
            .iter()
            .map(|r| {
                let nodes: String = r.try_get("nodes")?;
                Ok(BootChangeRecord {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    job_id: r.try_get("job_id")?,
                    nodes: parse_node_list(&nodes),
                    record: r.try_get("body")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((changes, total))
    }

    async fn observe_nodes(&self, channel: &str, nodes: &[NodeBootRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for n in nodes {
            sqlx::query(
                "UPDATE boot_nodes SET body = $2, observed_at = $3 WHERE xname = $1 AND observed_at <= $3",
            )
            .bind(&n.xname)
            .bind(&n.record)
            .bind(n.observed_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO boot_nodes (channel, xname, body, observed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (channel, xname) DO NOTHING",
            )
            .bind(channel)
            .bind(&n.xname)
            .bind(&n.record)
            .bind(n.observed_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn node_boots(&self, channel: &str) -> Result<Vec<NodeBootRecord>> {
        let rows = sqlx::query(
            "SELECT xname, body, observed_at FROM boot_nodes WHERE channel = $1 ORDER BY xname",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeBootRecord {
                    xname: r.try_get("xname")?,
                    record: r.try_get("body")?,
                    observed_at: r.try_get("observed_at")?,
                })
            })
            .collect()
    }

    async fn put_blueprint(
        &self,
        channel: &str,
        name: &str,
        blueprint: &serde_json::Value,
    ) -> Result<BlueprintRecord> {
        // Two pushes of one name at once: the primary key refuses the second
        // insert of a version, so retry with the next one.
        for _ in 0..5 {
            let row = sqlx::query(
                "INSERT INTO blueprints (channel, name, version, body) \
                 VALUES ($1, $2, (SELECT coalesce(max(version), 0) + 1 FROM blueprints WHERE channel = $1 AND name = $2), $3) \
                 ON CONFLICT DO NOTHING RETURNING channel, name, version, body, created_at",
            )
            .bind(channel)
            .bind(name)
            .bind(blueprint)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return blueprint_from_row(&row);
            }
        }
        Err(QueueError::Corrupt(format!(
            "blueprint {name}: no free version after 5 concurrent pushes"
        )))
    }

    async fn blueprints(&self, channel: &str) -> Result<Vec<BlueprintRecord>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (name) channel, name, version, body, created_at FROM blueprints \
             WHERE channel = $1 ORDER BY name, version DESC",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(blueprint_from_row).collect()
    }

    async fn blueprint(
        &self,
        channel: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<BlueprintRecord>> {
        let row = sqlx::query(
            "SELECT channel, name, version, body, created_at FROM blueprints WHERE channel = $1 AND name = $2 \
             AND ($3::BIGINT IS NULL OR version = $3) ORDER BY version DESC LIMIT 1",
        )
        .bind(channel)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(blueprint_from_row).transpose()
    }

    async fn delete_blueprint(&self, channel: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM blueprints WHERE channel = $1 AND name = $2")
            .bind(channel)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }
}
