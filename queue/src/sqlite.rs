//! The SQLite backend: the embedded single-host default.
//!
//! One process owns the database. Every write goes through one connection
//! behind a mutex (SQLite has one writer anyway, and this avoids lock-upgrade
//! deadlocks between transactions); reads use a pool and proceed in parallel
//! thanks to WAL. Events are sent in-process after each commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{broadcast, Mutex};
use uuid::Uuid;

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

const JOB_COLUMNS: &str =
    "id, compose_id, job_type, arch, channel, args, priority, state, result, \
    reason, worker, retries, created_at, queued_at, started_at, finished_at, request_id, \
    (SELECT json_group_array(depends_on) FROM job_deps d WHERE d.job_id = jobs.id) AS deps";

/// Columns that make a [`JobEvent`].
const EVENT_COLUMNS: &str = "id, compose_id, state, job_type, arch, channel";

pub struct SqliteQueue {
    writer: Arc<Mutex<SqliteConnection>>,
    readers: SqlitePool,
    events: broadcast::Sender<JobEvent>,
    live: broadcast::Sender<LiveEvent>,
    waiters: Arc<Waiters>,
}

fn publish(waiters: &Waiters, sender: &broadcast::Sender<JobEvent>, events: Vec<JobEvent>) {
    for e in events.iter().filter(|e| e.state == JobState::Queued) {
        waiters.job_queued(&e.job_type, &e.arch, &e.channel);
    }
    for e in events.into_iter().filter(crate::announced) {
        let _ = sender.send(e);
    }
}

/// A dequeue in progress. If its caller drops it (a long-poll whose client
/// went away) once the lease may have been taken, the lease goes back to the
/// queue: otherwise the job would sit `running`, leased to nobody, until the
/// heartbeat reaper counted a retry against it.
struct Unreceived {
    token: Uuid,
    writer: Arc<Mutex<SqliteConnection>>,
    waiters: Arc<Waiters>,
    events: broadcast::Sender<JobEvent>,
    armed: bool,
}

impl Drop for Unreceived {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (token, writer) = (self.token, self.writer.clone());
        let (waiters, events) = (self.waiters.clone(), self.events.clone());
        rt.spawn(async move {
            // After whatever the dropped call left running on the connection.
            let mut conn = writer.lock().await;
            let back = sqlx::query(&format!(
                "UPDATE jobs SET state = 'queued', token = NULL, worker = NULL, started_at = NULL, \
                 heartbeat_at = NULL, queued_at = ?2 WHERE token = ?1 AND state = 'running' \
                 RETURNING {EVENT_COLUMNS}"
            ))
            .bind(token.to_string())
            .bind(now_us())
            .fetch_optional(&mut *conn)
            .await;
            drop(conn);
            match back {
                Ok(Some(row)) => match event_from_row(&row) {
                    Ok(ev) => publish(&waiters, &events, vec![ev]),
                    Err(e) => tracing::warn!(error = %e, "handing back a lease nobody received"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "handing back a lease nobody received"),
            }
        });
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn time(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| QueueError::Corrupt(format!("time {us} out of range")))
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| QueueError::Corrupt(format!("id {s:?}: {e}")))
}

fn json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| QueueError::Corrupt(format!("JSON column: {e}")))
}

fn event_from_row(r: &SqliteRow) -> Result<JobEvent> {
    let compose: Option<String> = r.try_get("compose_id")?;
    let state: String = r.try_get("state")?;
    Ok(JobEvent {
        job: uuid(r.try_get("id")?)?,
        compose: compose.as_deref().map(uuid).transpose()?,
        state: state.parse()?,
        job_type: r.try_get("job_type")?,
        arch: r.try_get("arch")?,
        channel: r.try_get("channel")?,
    })
}

fn blueprint_from_row(r: &SqliteRow) -> Result<BlueprintRecord> {
    let body: String = r.try_get("body")?;
    Ok(BlueprintRecord {
        channel: r.try_get("channel")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        blueprint: json(&body)?,
        created_at: time(r.try_get("created_at")?)?,
    })
}

fn job_from_row(r: &SqliteRow) -> Result<Job> {
    let compose: Option<String> = r.try_get("compose_id")?;
    let state: String = r.try_get("state")?;
    let result: Option<String> = r.try_get("result")?;
    let deps: String = r.try_get("deps")?;
    let deps: Vec<String> = serde_json::from_str(&deps)
        .map_err(|e| QueueError::Corrupt(format!("dependency list: {e}")))?;
    let mut dependencies = deps.iter().map(|d| uuid(d)).collect::<Result<Vec<_>>>()?;
    dependencies.sort();
    Ok(Job {
        id: uuid(r.try_get("id")?)?,
        compose_id: compose.as_deref().map(uuid).transpose()?,
        job_type: r.try_get("job_type")?,
        arch: r.try_get("arch")?,
        channel: r.try_get("channel")?,
        args: json(r.try_get("args")?)?,
        priority: r.try_get("priority")?,
        dependencies,
        state: state.parse()?,
        result: result.as_deref().map(json).transpose()?,
        reason: r.try_get("reason")?,
        worker: r.try_get("worker")?,
        retries: r.try_get("retries")?,
        created_at: time(r.try_get("created_at")?)?,
        queued_at: r
            .try_get::<Option<i64>, _>("queued_at")?
            .map(time)
            .transpose()?,
        started_at: r
            .try_get::<Option<i64>, _>("started_at")?
            .map(time)
            .transpose()?,
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at")?
            .map(time)
            .transpose()?,
        request_id: r.try_get("request_id")?,
    })
}

fn compose_from_row(r: &SqliteRow) -> Result<ComposeRecord> {
    Ok(ComposeRecord {
        id: uuid(r.try_get("id")?)?,
        channel: r.try_get("channel")?,
        request: json(r.try_get("request")?)?,
        created_at: time(r.try_get("created_at")?)?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

impl SqliteQueue {
    /// Opens (creating if needed) the database named by a `sqlite:` URL and
    /// applies migrations.
    pub async fn connect(url: &str) -> Result<SqliteQueue> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let mut writer = SqliteConnection::connect_with(&opts).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        let (events, _) = broadcast::channel(4096);
        let (live, _) = broadcast::channel(4096);
        let waiters = Arc::new(Waiters::default());
        Ok(SqliteQueue {
            writer: Arc::new(Mutex::new(writer)),
            readers,
            events,
            live,
            waiters,
        })
    }

    /// Sends the events of a committed write.
    fn publish(&self, events: Vec<JobEvent>) {
        publish(&self.waiters, &self.events, events);
    }

    async fn insert_jobs(
        conn: &mut SqliteConnection,
        compose: Option<Uuid>,
        jobs: &[NewJob],
        events: &mut Vec<JobEvent>,
    ) -> Result<()> {
        let external = graph::validate_graph(jobs)?;
        let mut stored = HashMap::new();
        for dep in external {
            let row = sqlx::query("SELECT state, job_type, reason FROM jobs WHERE id = ?1")
                .bind(dep.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(r) = row {
                let state: String = r.try_get("state")?;
                stored.insert(
                    dep,
                    StoredDependency {
                        state: state.parse()?,
                        job_type: r.try_get("job_type")?,
                        reason: r.try_get("reason")?,
                    },
                );
            }
        }
        let planned = graph::plan(jobs, &stored)?;
        let now = now_us();
        for (job, p) in jobs.iter().zip(planned) {
            sqlx::query(
                "INSERT INTO jobs (id, compose_id, job_type, arch, channel, args, priority, state, \
                 pending_deps, reason, created_at, request_id, queued_at, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 CASE WHEN ?8 = 'queued' THEN ?11 END, CASE WHEN ?8 = 'failed' THEN ?11 END)",
            )
            .bind(job.id.to_string())
            .bind(compose.map(|c| c.to_string()))
            .bind(&job.job_type)
            .bind(&job.arch)
            .bind(&job.channel)
            .bind(job.args.to_string())
            .bind(job.priority)
            .bind(p.state.as_str())
            .bind(p.pending)
            .bind(&p.reason)
            .bind(now)
            .bind(&job.request_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    QueueError::DuplicateJob(job.id)
                } else {
                    e.into()
                }
            })?;
            for dep in &job.dependencies {
                sqlx::query("INSERT OR IGNORE INTO job_deps (job_id, depends_on) VALUES (?1, ?2)")
                    .bind(job.id.to_string())
                    .bind(dep.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            events.push(JobEvent {
                job: job.id,
                compose,
                state: p.state,
                job_type: job.job_type.clone(),
                arch: job.arch.clone(),
                channel: job.channel.clone(),
            });
        }
        Ok(())
    }

    async fn try_dequeue(&self, filter: &DequeueFilter, worker: &str) -> Result<Option<Lease>> {
        let token = Uuid::new_v4();
        let mut unreceived = Unreceived {
            token,
            writer: self.writer.clone(),
            waiters: self.waiters.clone(),
            events: self.events.clone(),
            armed: true,
        };
        let mut conn = self.writer.lock().await;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'running', token = ?1, worker = ?2, started_at = ?3, heartbeat_at = ?3 \
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' \
                 AND job_type IN (SELECT value FROM json_each(?4)) \
                 AND (json_array_length(?5) = 0 OR arch IN (SELECT value FROM json_each(?5))) \
                 AND (json_array_length(?6) = 0 OR channel IN (SELECT value FROM json_each(?6))) \
                 ORDER BY priority DESC, seq LIMIT 1) \
             RETURNING id",
        )
        .bind(token.to_string())
        .bind(worker)
        .bind(now_us())
        .bind(list(&filter.job_types))
        .bind(list(&filter.arches))
        .bind(list(&filter.channels))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(id) = id else {
            unreceived.armed = false;
            return Ok(None);
        };
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        unreceived.armed = false;
        let job = job_from_row(&row)?;
        self.publish(vec![JobEvent {
            job: job.id,
            compose: job.compose_id,
            state: JobState::Running,
            job_type: job.job_type.clone(),
            arch: job.arch.clone(),
            channel: job.channel.clone(),
        }]);
        Ok(Some(Lease { token, job }))
    }

    async fn fail_dependants(
        conn: &mut SqliteConnection,
        id: Uuid,
        job_type: &str,
        state: JobState,
        reason: Option<&str>,
        events: &mut Vec<JobEvent>,
    ) -> Result<()> {
        let rows = sqlx::query(&format!(
            "WITH RECURSIVE down(id) AS ( \
                SELECT job_id FROM job_deps WHERE depends_on = ?1 \
                UNION SELECT d.job_id FROM job_deps d JOIN down ON d.depends_on = down.id) \
             UPDATE jobs SET state = 'failed', reason = ?2, finished_at = ?3, token = NULL \
             WHERE id IN (SELECT id FROM down) AND state IN ('waiting', 'queued') RETURNING {EVENT_COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(dependency_reason(job_type, id, state, reason))
        .bind(now_us())
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            events.push(event_from_row(r)?);
        }
        Ok(())
    }

    /// Takes a running job (`row`: its id, job_type, worker and retries)
    /// from its worker: queued again, or failed at the retry limit.
    async fn take_back(
        conn: &mut SqliteConnection,
        row: &SqliteRow,
        max_retries: u32,
        why: TakenBack<'_>,
        events: &mut Vec<JobEvent>,
    ) -> Result<JobState> {
        let id: String = row.try_get("id")?;
        let retries: i32 = row.try_get("retries")?;
        let worker: Option<String> = row.try_get("worker")?;
        let now = now_us();
        if retries < max_retries as i32 {
            let row = sqlx::query(&format!(
                "UPDATE jobs SET state = 'queued', retries = retries + 1, token = NULL, worker = NULL, \
                 started_at = NULL, heartbeat_at = NULL, queued_at = ?2, reason = ?3 WHERE id = ?1 \
                 RETURNING {EVENT_COLUMNS}"
            ))
            .bind(&id)
            .bind(now)
            .bind(requeue_reason(worker.as_deref(), retries + 1, why))
            .fetch_one(&mut *conn)
            .await?;
            events.push(event_from_row(&row)?);
            return Ok(JobState::Queued);
        }
        let reason = stale_reason(max_retries, why);
        let updated = sqlx::query(&format!(
            "UPDATE jobs SET state = 'failed', token = NULL, finished_at = ?2, reason = ?3 WHERE id = ?1 \
             RETURNING {EVENT_COLUMNS}"
        ))
        .bind(&id)
        .bind(now)
        .bind(&reason)
        .fetch_one(&mut *conn)
        .await?;
        events.push(event_from_row(&updated)?);
        let job_type: String = row.try_get("job_type")?;
        let id = uuid(&id)?;
        Self::fail_dependants(conn, id, &job_type, JobState::Failed, Some(&reason), events).await?;
        Ok(JobState::Failed)
    }

    /// A job's log chunks in order.
    async fn chunks(conn: &mut SqliteConnection, job: Uuid) -> Result<Vec<Vec<String>>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT lines FROM job_log_chunks WHERE job_id = ?1 ORDER BY chunk")
                .bind(job.to_string())
                .fetch_all(&mut *conn)
                .await?;
        rows.iter().map(|l| live::parse_lines(l)).collect()
    }

    async fn lease_error(conn: &mut SqliteConnection, token: Uuid) -> Result<QueueError> {
        let row = sqlx::query("SELECT id, state FROM jobs WHERE token = ?1")
            .bind(token.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match row {
            Some(r) if r.try_get::<String, _>("state")? == "canceled" => {
                QueueError::Canceled(uuid(r.try_get("id")?)?)
            }
            _ => QueueError::LeaseLost,
        })
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn create_compose(&self, compose: &ComposeRecord, jobs: &[NewJob]) -> Result<()> {
        let mut events = Vec::new();
        {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            sqlx::query(
                "INSERT INTO composes (id, channel, request, created_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(compose.id.to_string())
            .bind(&compose.channel)
            .bind(compose.request.to_string())
            .bind(compose.created_at.timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    QueueError::ComposeExists(compose.id)
                } else {
                    e.into()
                }
            })?;
            Self::insert_jobs(&mut tx, Some(compose.id), jobs, &mut events).await?;
            tx.commit().await?;
        }
        self.publish(events);
        Ok(())
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Result<()> {
        let mut events = Vec::new();
        {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            Self::insert_jobs(&mut tx, None, jobs, &mut events).await?;
            tx.commit().await?;
        }
        self.publish(events);
        Ok(())
    }

    async fn dequeue(
        &self,
        filter: &DequeueFilter,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<Lease>> {
        wait_for_job(&self.waiters, filter, wait, || {
            self.try_dequeue(filter, worker)
        })
        .await
    }

    async fn heartbeat(&self, token: Uuid) -> Result<LeaseStatus> {
        let mut conn = self.writer.lock().await;
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET heartbeat_at = ?2 WHERE token = ?1 RETURNING state",
        )
        .bind(token.to_string())
        .bind(now_us())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(LeaseStatus::of_state(state.as_deref()))
    }

    async fn leased(&self, token: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE token = ?1"))
            .bind(token.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn finish(&self, token: Uuid, outcome: Outcome) -> Result<Job> {
        let mut events = Vec::new();
        let job = {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let now = now_us();
            let (state, reason, result) = match &outcome {
                Outcome::Success(r) => ("success", None, Some(r.to_string())),
                Outcome::Failure { reason, result } => (
                    "failed",
                    Some(reason.as_str()),
                    result.as_ref().map(|r| r.to_string()),
                ),
            };
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = ?2, reason = ?3, result = ?4, finished_at = ?5, token = NULL \
                 WHERE token = ?1 AND state = 'running' RETURNING id",
            )
            .bind(token.to_string())
            .bind(state)
            .bind(reason)
            .bind(result)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                return Err(Self::lease_error(&mut tx, token).await?);
            };
            let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            let job = job_from_row(&row)?;
            events.push(JobEvent {
                job: job.id,
                compose: job.compose_id,
                state: job.state,
                job_type: job.job_type.clone(),
                arch: job.arch.clone(),
                channel: job.channel.clone(),
            });
            if job.state == JobState::Success {
                let promoted = sqlx::query(&format!(
                    "UPDATE jobs SET pending_deps = pending_deps - 1, \
                        state = CASE WHEN pending_deps = 1 THEN 'queued' ELSE state END, \
                        queued_at = CASE WHEN pending_deps = 1 THEN ?2 ELSE queued_at END \
                     WHERE state = 'waiting' AND id IN (SELECT job_id FROM job_deps WHERE depends_on = ?1) \
                     RETURNING {EVENT_COLUMNS}"
                ))
                .bind(&id)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                for r in &promoted {
                    let ev = event_from_row(r)?;
                    if ev.state == JobState::Queued {
                        events.push(ev);
                    }
                }
            } else {
                Self::fail_dependants(
                    &mut tx,
                    job.id,
                    &job.job_type,
                    JobState::Failed,
                    reason,
                    &mut events,
                )
                .await?;
            }
            tx.commit().await?;
            job
        };
        self.publish(events);
        Ok(job)
    }

    async fn cancel_job(&self, id: Uuid) -> Result<bool> {
        let mut events = Vec::new();
        {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let row = sqlx::query(&format!(
                "UPDATE jobs SET state = 'canceled', reason = 'canceled', finished_at = ?2 \
                 WHERE id = ?1 AND state IN ('waiting', 'queued', 'running') RETURNING {EVENT_COLUMNS}"
            ))
            .bind(id.to_string())
            .bind(now_us())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(false) };
            let ev = event_from_row(&row)?;
            let job_type = ev.job_type.clone();
            events.push(ev);
            Self::fail_dependants(
                &mut tx,
                id,
                &job_type,
                JobState::Canceled,
                None,
                &mut events,
            )
            .await?;
            tx.commit().await?;
        }
        self.publish(events);
        Ok(true)
    }

    async fn cancel_compose(&self, id: Uuid) -> Result<Option<u64>> {
        let mut events = Vec::new();
        let count = {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM composes WHERE id = ?1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let rows = sqlx::query(&format!(
                "UPDATE jobs SET state = 'canceled', reason = 'compose canceled', finished_at = ?2 \
                 WHERE compose_id = ?1 AND state IN ('waiting', 'queued', 'running') RETURNING {EVENT_COLUMNS}"
            ))
            .bind(id.to_string())
            .bind(now_us())
            .fetch_all(&mut *tx)
            .await?;
            let canceled = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>>>()?;
            for ev in &canceled {
                Self::fail_dependants(
                    &mut tx,
                    ev.job,
                    &ev.job_type,
                    JobState::Canceled,
                    Some("compose canceled"),
                    &mut events,
                )
                .await?;
            }
            tx.commit().await?;
            let n = canceled.len() as u64;
            events.splice(0..0, canceled);
            n
        };
        self.publish(events);
        Ok(Some(count))
    }

    async fn requeue_stale(&self, timeout: Duration, max_retries: u32) -> Result<ReapReport> {
        let mut events = Vec::new();
        let mut report = ReapReport::default();
        {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let stale = sqlx::query(
                "SELECT id, job_type, worker, retries FROM jobs WHERE state = 'running' AND heartbeat_at < ?1 ORDER BY seq",
            )
            .bind(now_us() - micros(timeout))
            .fetch_all(&mut *tx)
            .await?;
            for r in stale {
                let id = uuid(r.try_get("id")?)?;
                let why = TakenBack::Silent;
                match Self::take_back(&mut tx, &r, max_retries, why, &mut events).await? {
                    JobState::Queued => report.requeued.push(id),
                    _ => report.failed.push(id),
                }
            }
            tx.commit().await?;
        }
        self.publish(events);
        Ok(report)
    }

    async fn unfinished_counts(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(
            "SELECT job_type, channel, state, count(*) AS n FROM jobs \
             WHERE state IN ('waiting', 'queued', 'running') GROUP BY job_type, channel, state",
        )
        .fetch_all(&self.readers)
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
        let mut conn = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO workers (name, arch, channels, first_seen, last_seen) \
             VALUES (?1, COALESCE(?2, ''), COALESCE(?3, '[]'), ?4, ?4) \
             ON CONFLICT (name) DO UPDATE SET last_seen = ?4, \
             arch = COALESCE(?2, workers.arch), channels = COALESCE(?3, workers.channels)",
        )
        .bind(worker)
        .bind(arch)
        .bind(channels)
        .bind(now_us())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn workers(&self, window: Duration) -> Result<Vec<WorkerRecord>> {
        let rows = sqlx::query(
            "SELECT name, arch, channels, first_seen, last_seen FROM workers \
             WHERE last_seen >= ?1 \
             OR name IN (SELECT worker FROM jobs WHERE state = 'running' AND worker IS NOT NULL)",
        )
        .bind(now_us().saturating_sub(micros(window)))
        .fetch_all(&self.readers)
        .await?;
        let workers = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("arch")?,
                    r.try_get("channels")?,
                    time(r.try_get("first_seen")?)?,
                    time(r.try_get("last_seen")?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT worker, id, compose_id, job_type, channel, started_at FROM jobs \
             WHERE state = 'running' AND worker IS NOT NULL ORDER BY started_at, id",
        )
        .fetch_all(&self.readers)
        .await?;
        let held = rows
            .iter()
            .map(|r| {
                let compose: Option<String> = r.try_get("compose_id")?;
                let started: Option<i64> = r.try_get("started_at")?;
                Ok((
                    r.try_get("worker")?,
                    WorkerJob {
                        id: uuid(r.try_get("id")?)?,
                        compose_id: compose.as_deref().map(uuid).transpose()?,
                        job_type: r.try_get("job_type")?,
                        channel: r.try_get("channel")?,
                        started_at: started.map(time).transpose()?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        WorkerRecord::assemble(workers, held)
    }

    async fn hand_back(&self, token: Uuid, reason: &str, max_retries: u32) -> Result<JobState> {
        let mut events = Vec::new();
        let state = {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let row = sqlx::query(
                "SELECT id, job_type, worker, retries FROM jobs WHERE token = ?1 AND state = 'running'",
            )
            .bind(token.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Self::lease_error(&mut tx, token).await?);
            };
            let why = TakenBack::HandedBack(reason);
            let state = Self::take_back(&mut tx, &row, max_retries, why, &mut events).await?;
            tx.commit().await?;
            state
        };
        self.publish(events);
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
        let text = |v: Option<&Value>| v.map(Value::to_string);
        {
            let mut conn = self.writer.lock().await;
            let mut tx = conn.begin().await?;
            let row = sqlx::query(
                "INSERT INTO job_live AS l (job_id, compose_id, phase, progress, log_bytes, next_chunk, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job_id) DO UPDATE SET \
                 phase = COALESCE(excluded.phase, l.phase), progress = COALESCE(excluded.progress, l.progress), \
                 log_bytes = l.log_bytes + ?5, next_chunk = l.next_chunk + ?6, updated_at = ?7 \
                 RETURNING next_chunk, log_bytes",
            )
            .bind(job.to_string())
            .bind(compose.map(|c| c.to_string()))
            .bind(text(phase))
            .bind(text(progress))
            .bind(bytes)
            .bind(i64::from(!lines.is_empty()))
            .bind(now_us())
            .fetch_one(&mut *tx)
            .await?;
            let chunk = row.try_get::<i64, _>("next_chunk")? - 1;
            if !lines.is_empty() {
                sqlx::query(
                    "INSERT INTO job_log_chunks (job_id, chunk, lines, n, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(job.to_string())
                .bind(chunk)
                .bind(list(lines))
                .bind(lines.len() as i64)
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
                if row.try_get::<i64, _>("log_bytes")? > live::LOG_MAX_BYTES {
                    // The oldest chunks beyond the bound go (never the newest).
                    let gone = sqlx::query(
                        "DELETE FROM job_log_chunks WHERE job_id = ?1 AND chunk < ?3 AND chunk IN ( \
                             SELECT chunk FROM (SELECT chunk, sum(bytes) OVER (ORDER BY chunk DESC) AS kept \
                             FROM job_log_chunks WHERE job_id = ?1) WHERE kept > ?2) RETURNING n, bytes",
                    )
                    .bind(job.to_string())
                    .bind(live::LOG_MAX_BYTES)
                    .bind(chunk)
                    .fetch_all(&mut *tx)
                    .await?;
                    let (mut n, mut b) = (0i64, 0i64);
                    for r in &gone {
                        n += r.try_get::<i64, _>("n")?;
                        b += r.try_get::<i64, _>("bytes")?;
                    }
                    sqlx::query(
                        "UPDATE job_live SET log_bytes = log_bytes - ?2, dropped = dropped + ?3 WHERE job_id = ?1",
                    )
                    .bind(job.to_string())
                    .bind(b)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
        }
        let _ = self.live.send(LiveEvent {
            job,
            compose,
            lines: lines.to_vec(),
            chunk: None,
        });
        Ok(())
    }

    async fn live_states(&self, jobs: &[Uuid]) -> Result<Vec<LiveState>> {
        let ids: Vec<String> = jobs.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(
            "SELECT job_id, phase, progress, updated_at FROM job_live \
             WHERE job_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(list(&ids))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let phase: Option<String> = r.try_get("phase")?;
                let progress: Option<String> = r.try_get("progress")?;
                Ok(LiveState {
                    job: uuid(r.try_get("job_id")?)?,
                    phase: phase.as_deref().map(json).transpose()?,
                    progress: progress.as_deref().map(json).transpose()?,
                    updated_at: time(r.try_get("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn seal_log(&self, job: Uuid) -> Result<bool> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let dropped: Option<i64> = sqlx::query_scalar(
            "SELECT l.dropped FROM job_live l JOIN jobs j ON j.id = l.job_id \
             WHERE l.job_id = ?1 AND j.state IN ('success', 'failed', 'canceled')",
        )
        .bind(job.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(dropped) = dropped else {
            return Ok(false);
        };
        let (text, lines) = live::join_chunks(&Self::chunks(&mut tx, job).await?);
        sqlx::query(
            "INSERT INTO job_logs (job_id, body, lines, dropped) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (job_id) DO UPDATE SET body = excluded.body, lines = excluded.lines, dropped = excluded.dropped",
        )
        .bind(job.to_string())
        .bind(live::compress(&text)?)
        .bind(lines)
        .bind(dropped)
        .execute(&mut *tx)
        .await?;
        for table in ["job_log_chunks", "job_live"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = ?1"))
                .bind(job.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn seal_finished_logs(&self) -> Result<u64> {
        let jobs: Vec<String> = sqlx::query_scalar(
            "SELECT l.job_id FROM job_live l JOIN jobs j ON j.id = l.job_id \
             WHERE j.state IN ('success', 'failed', 'canceled')",
        )
        .fetch_all(&self.readers)
        .await?;
        let mut sealed = 0;
        for job in jobs {
            sealed += u64::from(self.seal_log(uuid(&job)?).await?);
        }
        Ok(sealed)
    }

    async fn job_log(&self, job: Uuid) -> Result<Option<JobLogText>> {
        // One read transaction: the log is either sealed or still in chunks.
        let mut conn = self.readers.acquire().await?;
        let mut tx = conn.begin().await?;
        let sealed = sqlx::query("SELECT body, lines, dropped FROM job_logs WHERE job_id = ?1")
            .bind(job.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = sealed {
            return Ok(Some(JobLogText {
                text: live::decompress(&r.try_get::<Vec<u8>, _>("body")?)?,
                lines: r.try_get("lines")?,
                dropped: r.try_get("dropped")?,
                sealed: true,
            }));
        }
        let dropped: Option<i64> =
            sqlx::query_scalar("SELECT dropped FROM job_live WHERE job_id = ?1")
                .bind(job.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(dropped) = dropped else {
            return Ok(None);
        };
        let (text, lines) = live::join_chunks(&Self::chunks(&mut tx, job).await?);
        Ok(Some(JobLogText {
            text,
            lines,
            dropped,
            sealed: false,
        }))
    }

    async fn expire(&self, max_age: Duration) -> Result<u64> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let cutoff = now_us() - micros(max_age);
        let deleted = sqlx::query(
            "DELETE FROM composes WHERE created_at < ?1 AND NOT EXISTS (SELECT 1 FROM jobs j \
             WHERE j.compose_id = composes.id AND (j.state IN ('waiting', 'queued', 'running') OR j.finished_at >= ?1))",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM jobs WHERE compose_id IS NULL AND finished_at < ?1 AND state IN ('success', 'failed', 'canceled')",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn unfinished_before(&self, max_age: Duration) -> Result<Vec<Uuid>> {
        let cutoff = now_us() - micros(max_age);
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT c.id FROM composes c WHERE c.created_at < ?1 AND EXISTS (SELECT 1 FROM jobs j \
             WHERE j.compose_id = c.id AND j.state IN ('waiting', 'queued', 'running')) \
             ORDER BY c.created_at",
        )
        .bind(cutoff)
        .fetch_all(&self.readers)
        .await?;
        ids.iter()
            .map(|s| {
                Uuid::parse_str(s)
                    .map_err(|e| QueueError::Corrupt(format!("compose id {s:?}: {e}")))
            })
            .collect()
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn compose(&self, id: Uuid) -> Result<Option<ComposeRecord>> {
        let row =
            sqlx::query("SELECT id, channel, request, created_at FROM composes WHERE id = ?1")
                .bind(id.to_string())
                .fetch_optional(&self.readers)
                .await?;
        row.map(|r| compose_from_row(&r)).transpose()
    }

    async fn compose_jobs(&self, id: Uuid) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE compose_id = ?1 ORDER BY seq"
        ))
        .bind(id.to_string())
        .fetch_all(&self.readers)
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
            "SELECT id, channel, request, created_at FROM composes WHERE (?1 IS NULL OR channel = ?1) \
             ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3",
        )
        .bind(channel)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.readers)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM composes WHERE (?1 IS NULL OR channel = ?1)")
                .bind(channel)
                .fetch_one(&self.readers)
                .await?;
        Ok((
            rows.iter().map(compose_from_row).collect::<Result<_>>()?,
            total,
        ))
    }

    async fn delete_compose(&self, id: Uuid) -> Result<DeleteOutcome> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM composes WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(DeleteOutcome::NotFound);
        }
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE compose_id = ?1 AND state IN ('waiting', 'queued', 'running')",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if unfinished > 0 {
            return Ok(DeleteOutcome::Unfinished);
        }
        sqlx::query("DELETE FROM composes WHERE id = ?1")
            .bind(id.to_string())
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
        .fetch_one(&self.readers)
        .await?;
        Ok(RowCounts {
            composes,
            jobs,
            boot_changes,
        })
    }

    async fn record_boot_change(&self, c: &BootChangeRecord) -> Result<bool> {
        let mut conn = self.writer.lock().await;
        let done = sqlx::query(
            "INSERT INTO boot_changes (id, channel, job_id, nodes, body, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.channel)
        .bind(c.job_id.to_string())
        .bind(node_list(&c.nodes))
        .bind(c.record.to_string())
        .bind(c.created_at.timestamp_micros())
        .execute(&mut *conn)
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
        let filter = "channel = ?1 AND (?2 IS NULL OR nodes LIKE ?2)";
        let rows = sqlx::query(&format!(
            "SELECT id, channel, job_id, nodes, body, created_at FROM boot_changes WHERE {filter} \
             ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4"
        ))
        .bind(channel)
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.readers)
        .await?;
        let (total,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM boot_changes WHERE {filter}"))
                .bind(channel)
                .bind(&pattern)
                .fetch_one(&self.readers)
                .await?;
        let changes = rows
            .iter()
            .map(|r| {
                let nodes: String = r.try_get("nodes")?;
                let body: String = r.try_get("body")?;
                Ok(BootChangeRecord {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    job_id: uuid(r.try_get("job_id")?)?,
                    nodes: parse_node_list(&nodes),
                    record: json(&body)?,
                    created_at: time(r.try_get("created_at")?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((changes, total))
    }

    async fn observe_nodes(&self, channel: &str, nodes: &[NodeBootRecord]) -> Result<()> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        for n in nodes {
            let (body, at) = (n.record.to_string(), n.observed_at.timestamp_micros());
            sqlx::query(
                "UPDATE boot_nodes SET body = ?2, observed_at = ?3 WHERE xname = ?1 AND observed_at <= ?3",
            )
            .bind(&n.xname)
            .bind(&body)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO boot_nodes (channel, xname, body, observed_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (channel, xname) DO NOTHING",
            )
            .bind(channel)
            .bind(&n.xname)
            .bind(&body)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn node_boots(&self, channel: &str) -> Result<Vec<NodeBootRecord>> {
        let rows = sqlx::query(
            "SELECT xname, body, observed_at FROM boot_nodes WHERE channel = ?1 ORDER BY xname",
        )
        .bind(channel)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(NodeBootRecord {
                    xname: r.try_get("xname")?,
                    record: json(&body)?,
                    observed_at: time(r.try_get("observed_at")?)?,
                })
            })
            .collect()
    }

    async fn put_blueprint(
        &self,
        channel: &str,
        name: &str,
        blueprint: &Value,
    ) -> Result<BlueprintRecord> {
        let mut conn = self.writer.lock().await;
        let row = sqlx::query(
            "INSERT INTO blueprints (channel, name, version, body, created_at) \
             VALUES (?1, ?2, (SELECT coalesce(max(version), 0) + 1 FROM blueprints WHERE channel = ?1 AND name = ?2), ?3, ?4) \
             RETURNING channel, name, version, body, created_at",
        )
        .bind(channel)
        .bind(name)
        .bind(blueprint.to_string())
        .bind(now_us())
        .fetch_one(&mut *conn)
        .await?;
        blueprint_from_row(&row)
    }

    async fn blueprints(&self, channel: &str) -> Result<Vec<BlueprintRecord>> {
        let rows = sqlx::query(
            "SELECT channel, name, version, body, created_at FROM blueprints b WHERE channel = ?1 \
             AND version = (SELECT max(version) FROM blueprints WHERE channel = b.channel AND name = b.name) ORDER BY name",
        )
        .bind(channel)
        .fetch_all(&self.readers)
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
            "SELECT channel, name, version, body, created_at FROM blueprints WHERE channel = ?1 AND name = ?2 \
             AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
        )
        .bind(channel)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(blueprint_from_row).transpose()
    }

    async fn delete_blueprint(&self, channel: &str, name: &str) -> Result<bool> {
        let mut conn = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM blueprints WHERE channel = ?1 AND name = ?2")
            .bind(channel)
            .bind(name)
            .execute(&mut *conn)
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
