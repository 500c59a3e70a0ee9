//! The PostgreSQL backend: shared by every composer of a cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::graph::{self, StoredDependency};
use crate::wait::{wait_for_job, Waiters};
use crate::{
    dependency_reason, requeue_reason, stale_reason, BlueprintRecord, ComposeRecord, DeleteOutcome,
    DequeueFilter, Job, JobEvent, JobQueue, JobState, Lease, LeaseStatus, NewJob, Outcome,
    QueueError, ReapReport, Result, RowCounts,
};

const CHANNEL: &str = "kiln_jobs";

const JOB_COLUMNS: &str =
    "id, compose_id, job_type, arch, channel, args, priority, state, result, \
    reason, worker, retries, created_at, started_at, finished_at, \
    deps";

pub struct PgQueue {
    pool: PgPool,
    events: broadcast::Sender<JobEvent>,
    waiters: Arc<Waiters>,
    listener: tokio::task::JoinHandle<()>,
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
        listener.listen(CHANNEL).await?;
        let (events, _) = broadcast::channel(4096);
        let waiters = Arc::new(Waiters::default());
        let listener = tokio::spawn(listen(listener, events.clone(), waiters.clone()));
        Ok(PgQueue {
            pool,
            events,
            waiters,
            listener,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn insert_jobs(
        &self,
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
                 pending_deps, reason, deps, queued_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
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

    async fn try_dequeue(&self, filter: &DequeueFilter, worker: &str) -> Result<Option<Lease>> {
        let token = Uuid::new_v4();
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', token = $1, worker = $2, started_at = now(), heartbeat_at = now() \
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND job_type = ANY($3) \
                 AND (cardinality($4::text[]) = 0 OR arch = ANY($4)) \
                 AND (cardinality($5::text[]) = 0 OR channel = ANY($5)) \
                 ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(token)
        .bind(worker)
        .bind(&filter.job_types)
        .bind(&filter.arches)
        .bind(&filter.channels)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Lease {
                token,
                job: job_from_row(&r)?,
            })
        })
        .transpose()
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

    async fn lease_error(&self, token: Uuid) -> Result<QueueError> {
        let row = sqlx::query("SELECT id, state FROM jobs WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) if r.try_get::<String, _>("state")? == "canceled" => {
                QueueError::Canceled(r.try_get("id")?)
            }
            _ => QueueError::LeaseLost,
        })
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
    waiters: Arc<Waiters>,
) {
    loop {
        match listener.try_recv().await {
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
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
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
        self.insert_jobs(&mut tx, Some(compose.id), jobs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Result<()> {
        if let [job] = jobs {
            if job.dependencies.is_empty() {
                // The common case needs no transaction.
                let mut conn = self.pool.acquire().await?;
                return self.insert_jobs(&mut conn, None, jobs).await;
            }
        }
        let mut tx = self.pool.begin().await?;
        self.insert_jobs(&mut tx, None, jobs).await?;
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
            self.try_dequeue(filter, worker)
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

    async fn leased_to(&self, token: Uuid) -> Result<Option<String>> {
        let worker: Option<Option<String>> =
            sqlx::query_scalar("SELECT worker FROM jobs WHERE token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
        Ok(worker.flatten())
    }

    async fn finish(&self, token: Uuid, outcome: Outcome) -> Result<Job> {
        match outcome {
            Outcome::Success(result) => {
                let row = sqlx::query(&format!(
                    "WITH done AS ( \
                        UPDATE jobs SET state = 'success', result = $2, finished_at = now(), token = NULL \
                        WHERE token = $1 AND state = 'running' RETURNING {JOB_COLUMNS}), \
                     promoted AS ( \
                        UPDATE jobs j SET pending_deps = j.pending_deps - 1, \
                            state = CASE WHEN j.pending_deps = 1 THEN 'queued' ELSE j.state END, \
                            queued_at = CASE WHEN j.pending_deps = 1 THEN now() ELSE j.queued_at END \
                        FROM job_deps d, done WHERE d.depends_on = done.id AND j.id = d.job_id \
                            AND j.state = 'waiting' RETURNING j.id) \
                     SELECT * FROM done"
                ))
                .bind(token)
                .bind(&result)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => job_from_row(&r),
                    None => Err(self.lease_error(token).await?),
                }
            }
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
                    return Err(self.lease_error(token).await?);
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
            let retries: i32 = r.try_get("retries")?;
            let worker: Option<String> = r.try_get("worker")?;
            if retries < max_retries as i32 {
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', retries = retries + 1, token = NULL, worker = NULL, \
                     started_at = NULL, heartbeat_at = NULL, queued_at = now(), reason = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(requeue_reason(worker.as_deref(), retries + 1))
                .execute(&mut *tx)
                .await?;
                report.requeued.push(id);
            } else {
                let reason = stale_reason(max_retries);
                sqlx::query(
                    "UPDATE jobs SET state = 'failed', token = NULL, finished_at = now(), reason = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
                let job_type: String = r.try_get("job_type")?;
                Self::fail_dependants(&mut tx, id, &job_type, JobState::Failed, Some(&reason))
                    .await?;
                report.failed.push(id);
            }
        }
        tx.commit().await?;
        Ok(report)
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
        let (composes, jobs): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM composes), (SELECT count(*) FROM jobs)")
                .fetch_one(&self.pool)
                .await?;
        Ok(RowCounts { composes, jobs })
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
}
