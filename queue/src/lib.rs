//! kiln's job queue: one contract ([`JobQueue`]), two backends.
//!
//! - [`postgres::PgQueue`] for production: several composers may share it; dequeue
//!   uses `FOR UPDATE SKIP LOCKED` and waiting dequeuers are woken by
//!   `LISTEN/NOTIFY` (a trigger announces jobs becoming ready and every change
//!   of a compose's job). Concurrent enqueues, dequeues and finishes are
//!   gathered into one statement each (`batch.rs`).
//! - [`sqlite::SqliteQueue`], the embedded single-host default: one process owns
//!   the database file; writes go through one connection, and waiters are woken
//!   in-process.
//!
//! A job belongs to a compose (the job graph of one image request set) or stands
//! alone. It becomes `queued` when all its dependencies succeeded; a failed or
//! canceled dependency fails it with a reason that names the dependency.
//! A running job is held under a lease token: the worker heart-beats with it and
//! finishes with it. A lease whose heartbeats stop is taken back by
//! [`JobQueue::requeue_stale`], up to a retry limit.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod batch;
mod graph;
pub mod live;
pub mod postgres;
pub mod sqlite;
mod wait;

pub use graph::validate_graph;
pub use live::{JobLogText, LiveEvent, LiveState};

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Some dependency has not finished yet.
    Waiting,
    /// Ready to be handed to a worker.
    Queued,
    /// Leased by a worker.
    Running,
    Success,
    Failed,
    Canceled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Canceled
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = QueueError;
    fn from_str(s: &str) -> std::result::Result<Self, QueueError> {
        Ok(match s {
            "waiting" => JobState::Waiting,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "success" => JobState::Success,
            "failed" => JobState::Failed,
            "canceled" => JobState::Canceled,
            other => return Err(QueueError::Corrupt(format!("unknown job state {other:?}"))),
        })
    }
}

/// A job to enqueue. Its id is chosen by the caller so that a graph can be
/// built before it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    pub id: Uuid,
    pub job_type: String,
    pub arch: String,
    pub channel: String,
    pub args: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Jobs that must succeed before this one is queued: earlier jobs of the same
    /// batch, or jobs already stored.
    pub dependencies: Vec<Uuid>,
    /// The request id of the API call that made the job (its
    /// `X-Request-Id`), carried to the worker and the executor's logs.
    pub request_id: Option<String>,
}

impl NewJob {
    pub fn new(job_type: &str, arch: &str, channel: &str, args: Value) -> NewJob {
        NewJob {
            id: Uuid::new_v4(),
            job_type: job_type.to_owned(),
            arch: arch.to_owned(),
            channel: channel.to_owned(),
            args,
            priority: 0,
            dependencies: Vec::new(),
            request_id: None,
        }
    }

    /// The same job, made by the API request `request_id`.
    pub fn with_request_id(mut self, request_id: Option<String>) -> NewJob {
        self.request_id = request_id;
        self
    }

    pub fn depends_on(mut self, ids: &[Uuid]) -> NewJob {
        self.dependencies.extend_from_slice(ids);
        self
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub compose_id: Option<Uuid>,
    pub job_type: String,
    pub arch: String,
    pub channel: String,
    pub args: Value,
    pub priority: i32,
    pub dependencies: Vec<Uuid>,
    pub state: JobState,
    pub result: Option<Value>,
    /// Why the job failed or was canceled, or why it was requeued.
    pub reason: Option<String>,
    pub worker: Option<String>,
    /// How many times the job was taken back from a silent worker.
    pub retries: i32,
    pub created_at: DateTime<Utc>,
    /// When it last became ready for a worker (none while it waits for
    /// dependencies).
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The request id of the API call that made the job, if any.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// A compose: the owner of a job graph, with the request that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComposeRecord {
    pub id: Uuid,
    pub channel: String,
    pub request: Value,
    pub created_at: DateTime<Utc>,
}

/// Which jobs a dequeuer takes. Empty `arches` or `channels` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DequeueFilter {
    pub job_types: Vec<String>,
    pub arches: Vec<String>,
    pub channels: Vec<String>,
}

impl DequeueFilter {
    pub fn types(types: &[&str]) -> DequeueFilter {
        DequeueFilter {
            job_types: types.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// A job handed to a worker, with the token that proves the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub token: Uuid,
    pub job: Job,
}

/// What a heartbeat learns about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still the worker's job; keep going.
    Alive,
    /// The job was canceled: stop the work.
    Canceled,
    /// The lease is gone (taken back after missed heartbeats, or finished).
    Lost,
}

impl LeaseStatus {
    /// What a heartbeat means for a job found in `state` under the token.
    pub(crate) fn of_state(state: Option<&str>) -> LeaseStatus {
        match state {
            Some("running") => LeaseStatus::Alive,
            Some("canceled") => LeaseStatus::Canceled,
            _ => LeaseStatus::Lost,
        }
    }
}

/// How a worker ends its job.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success(Value),
    Failure {
        reason: String,
        result: Option<Value>,
    },
}

/// Result of deleting a compose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// Some job of it has not finished: cancel it first.
    Unfinished,
}

/// What [`JobQueue::requeue_stale`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: Vec<Uuid>,
    pub failed: Vec<Uuid>,
}

/// A change of a job's state, as every subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job: Uuid,
    pub compose: Option<Uuid>,
    pub state: JobState,
    pub job_type: String,
    pub arch: String,
    pub channel: String,
}

/// How many unfinished jobs of a type and channel are in a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    pub job_type: String,
    pub channel: String,
    pub state: JobState,
    pub count: i64,
}

/// A worker as every composer of a fleet knows it (the `workers` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The name its client certificate proves.
    pub name: String,
    /// The architecture it last asked jobs for ("" before it asked).
    pub arch: String,
    /// The channels it last asked jobs of (empty: any).
    pub channels: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The running jobs it holds.
    pub jobs: Vec<WorkerJob>,
}

/// A row of the `workers` table: name, arch, channels as JSON, first and
/// last seen.
pub(crate) type WorkerRow = (String, String, String, DateTime<Utc>, DateTime<Utc>);

impl WorkerRecord {
    /// The records of `workers`, each with its jobs of `held` (worker
    /// name, job).
    pub(crate) fn assemble(
        workers: Vec<WorkerRow>,
        held: Vec<(String, WorkerJob)>,
    ) -> Result<Vec<WorkerRecord>> {
        let mut by_worker: std::collections::HashMap<String, Vec<WorkerJob>> = Default::default();
        for (worker, job) in held {
            by_worker.entry(worker).or_default().push(job);
        }
        let mut records = workers
            .into_iter()
            .map(|(name, arch, channels, first_seen, last_seen)| {
                let channels = serde_json::from_str(&channels).map_err(|e| {
                    QueueError::Corrupt(format!("worker {name:?}: channels {channels:?}: {e}"))
                })?;
                Ok(WorkerRecord {
                    jobs: by_worker.remove(&name).unwrap_or_default(),
                    name,
                    arch,
                    channels,
                    first_seen,
                    last_seen,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // By name in bytes, whatever the database's collation.
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }
}

/// What [`JobQueue::worker_seen`] stores of what a worker asked for: its
/// architecture and its channels as JSON.
pub(crate) fn asked(asks: Option<(&str, &[String])>) -> (Option<String>, Option<String>) {
    match asks {
        Some((arch, channels)) => (
            Some(arch.to_owned()),
            Some(serde_json::to_string(channels).unwrap_or_else(|_| "[]".into())),
        ),
        None => (None, None),
    }
}

/// A running job a worker holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerJob {
    pub id: Uuid,
    pub compose_id: Option<Uuid>,
    pub job_type: String,
    pub channel: String,
    pub started_at: Option<DateTime<Utc>>,
}

/// Counts of stored rows, for checks that nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCounts {
    pub composes: i64,
    pub jobs: i64,
    pub boot_changes: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The error of a statement that served several calls, for all but one.
    #[error("database error: {0}")]
    SharedDatabase(String),
    #[error("migrating the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job {job} depends on unknown job {dependency}")]
    UnknownDependency { job: Uuid, dependency: Uuid },
    #[error("job {0} is listed twice")]
    DuplicateJob(Uuid),
    #[error("compose {0} already exists")]
    ComposeExists(Uuid),
    #[error("no job is leased under this token")]
    LeaseLost,
    #[error("job {0} was canceled")]
    Canceled(Uuid),
    #[error("stored data is not what kiln wrote: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use postgres://… or sqlite:…")]
    UnsupportedUrl(String),
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// One stored version of a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueprintRecord {
    pub channel: String,
    pub name: String,
    /// 1 for the first push of a name, then one more per push.
    pub version: i64,
    pub blueprint: Value,
    pub created_at: DateTime<Utc>,
}

/// One boot change a job made, for the audit history: the record itself is
/// opaque here (the composer types it), with the columns it is found by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootChangeRecord {
    /// The deployment id kiln-boot recorded the change under.
    pub id: String,
    pub channel: String,
    pub job_id: Uuid,
    /// The xnames the change touched.
    pub nodes: Vec<String>,
    pub record: Value,
    pub created_at: DateTime<Utc>,
}

/// What one node boots, as a job last read or set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBootRecord {
    pub xname: String,
    pub record: Value,
    pub observed_at: DateTime<Utc>,
}

/// The queue contract, the same on every backend.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Stores a compose and its job graph atomically: all of it or nothing.
    async fn create_compose(&self, compose: &ComposeRecord, jobs: &[NewJob]) -> Result<()>;

    /// Enqueues jobs that belong to no compose (atomically).
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<()>;

    /// Takes the most urgent queued job that matches `filter`, waiting up to
    /// `wait` for one to be queued. `None` when none came in time.
    async fn dequeue(
        &self,
        filter: &DequeueFilter,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<Lease>>;

    /// Renews a lease and tells the worker whether to go on.
    async fn heartbeat(&self, token: Uuid) -> Result<LeaseStatus>;

    /// The job leased under `token` (also after a cancel, until it is
    /// finished or taken back); its `worker` holds the lease, so a caller
    /// can check that the lease is its own and what the job is.
    async fn leased(&self, token: Uuid) -> Result<Option<Job>>;

    /// Ends a leased job. Fails with [`QueueError::Canceled`] when the job was
    /// canceled meanwhile and [`QueueError::LeaseLost`] when the lease is gone.
    async fn finish(&self, token: Uuid, outcome: Outcome) -> Result<Job>;

    /// Cancels a job that has not finished, and fails its dependants.
    /// Returns false when the job was already finished or does not exist.
    async fn cancel_job(&self, id: Uuid) -> Result<bool>;

    /// Cancels every unfinished job of a compose. `None` when there is no such
    /// compose; otherwise how many jobs were canceled.
    async fn cancel_compose(&self, id: Uuid) -> Result<Option<u64>>;

    /// Takes back running jobs whose last heartbeat is older than `timeout`:
    /// queued again while they were requeued fewer than `max_retries` times,
    /// failed otherwise.
    async fn requeue_stale(&self, timeout: Duration, max_retries: u32) -> Result<ReapReport>;

    /// Deletes composes (and their jobs) and lone jobs that finished longer
    /// than `max_age` ago. Returns the number of composes deleted.
    async fn expire(&self, max_age: Duration) -> Result<u64>;

    /// Composes created longer than `max_age` ago that still have an
    /// unfinished job (waiting, queued or running), oldest first.
    async fn unfinished_before(&self, max_age: Duration) -> Result<Vec<Uuid>>;

    async fn job(&self, id: Uuid) -> Result<Option<Job>>;
    async fn compose(&self, id: Uuid) -> Result<Option<ComposeRecord>>;
    /// The jobs of a compose in creation order.
    async fn compose_jobs(&self, id: Uuid) -> Result<Vec<Job>>;
    /// Composes of a channel (all channels with `None`), newest first, and the total.
    async fn list_composes(
        &self,
        channel: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ComposeRecord>, i64)>;
    async fn delete_compose(&self, id: Uuid) -> Result<DeleteOutcome>;
    async fn row_counts(&self) -> Result<RowCounts>;

    /// Stores `blueprint` as the next version of `name` in `channel`.
    async fn put_blueprint(
        &self,
        channel: &str,
        name: &str,
        blueprint: &Value,
    ) -> Result<BlueprintRecord>;
    /// The latest version of every blueprint of a channel, by name.
    async fn blueprints(&self, channel: &str) -> Result<Vec<BlueprintRecord>>;
    /// One version of a blueprint (the latest with `None`).
    async fn blueprint(
        &self,
        channel: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<BlueprintRecord>>;
    /// Deletes every version of a blueprint; false when there was none.
    async fn delete_blueprint(&self, channel: &str, name: &str) -> Result<bool>;

    /// Appends a boot change to the history; false when one with its id is
    /// there already (a finish that is reported twice records once).
    async fn record_boot_change(&self, change: &BootChangeRecord) -> Result<bool>;

    /// A channel's boot changes, newest first (only those touching `node`
    /// when given), and their total.
    async fn boot_changes(
        &self,
        channel: &str,
        node: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<BootChangeRecord>, i64)>;

    /// Stores what nodes boot as `channel`'s job saw it; the same node's
    /// record of every other channel that has seen it follows (a node
    /// boots one thing). An older observation never replaces a newer one.
    async fn observe_nodes(&self, channel: &str, nodes: &[NodeBootRecord]) -> Result<()>;

    /// What the nodes `channel` has seen boot, by xname.
    async fn node_boots(&self, channel: &str) -> Result<Vec<NodeBootRecord>>;

    /// How many jobs are waiting, queued and running, by type and channel.
    async fn unfinished_counts(&self) -> Result<Vec<JobCount>>;

    /// Records that `worker` was heard from now, by any composer; `asks`
    /// (architecture, channels) when it asked for jobs.
    async fn worker_seen(&self, worker: &str, asks: Option<(&str, &[String])>) -> Result<()>;

    /// The workers heard from within `window`, and those holding a running
    /// job, sorted by name (bytes), each with the running jobs it holds.
    async fn workers(&self, window: Duration) -> Result<Vec<WorkerRecord>>;

    /// Gives a leased job back at once (its worker stops without a result):
    /// queued again, counted as a requeue like a job whose heartbeats
    /// stopped, or failed once it was requeued `max_retries` times. Returns
    /// the job's new state; [`QueueError::LeaseLost`] when the lease is gone.
    async fn hand_back(&self, token: Uuid, reason: &str, max_retries: u32) -> Result<JobState>;

    /// Records a worker's report on a running job: its phase and progress
    /// (each kept until a report brings a new one) and new log lines (kept
    /// up to [`live::LOG_MAX_BYTES`] per job, the oldest dropped first),
    /// and announces it to every subscriber of [`JobQueue::subscribe_live`]
    /// in every process sharing the database.
    async fn report_live(
        &self,
        job: Uuid,
        compose: Option<Uuid>,
        phase: Option<&Value>,
        progress: Option<&Value>,
        lines: &[String],
    ) -> Result<()>;

    /// The live state of those of `jobs` that have one.
    async fn live_states(&self, jobs: &[Uuid]) -> Result<Vec<LiveState>>;

    /// Seals a finished job's log: its chunks become one compressed log
    /// and its live state goes. False when the job has not finished or has
    /// nothing to seal.
    async fn seal_log(&self, job: Uuid) -> Result<bool>;

    /// Seals the log of every finished job whose log is not sealed yet
    /// (canceled jobs, jobs failed by the reaper, a composer that stopped
    /// between a finish and its seal). Returns how many.
    async fn seal_finished_logs(&self) -> Result<u64>;

    /// A job's log: sealed once the job ended, growing before.
    async fn job_log(&self, job: Uuid) -> Result<Option<JobLogText>>;

    /// From now on, from any process sharing the database: every report of
    /// [`JobQueue::report_live`].
    fn subscribe_live(&self) -> tokio::sync::broadcast::Receiver<LiveEvent>;

    /// From now on, from any process sharing the database: every state change
    /// of a compose's job, and every job becoming `queued`. (Other changes of
    /// jobs outside composes are not announced: nobody follows them, and on
    /// PostgreSQL each announcement costs commit throughput.)
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<JobEvent>;
}

/// Opens the queue named by a database URL (`postgres://…` or `sqlite:…`) and
/// applies the schema migrations.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn JobQueue>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgQueue::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteQueue::connect(url).await?,
        ))
    } else {
        Err(QueueError::UnsupportedUrl(url.to_owned()))
    }
}

/// The `nodes` column of `boot_changes`: `,x1,x2,`, so that one node's
/// changes are `LIKE '%,x1,%'` (xnames hold letters and digits only).
pub(crate) fn node_list(nodes: &[String]) -> String {
    format!(",{},", nodes.join(","))
}

/// The xnames of a `nodes` column.
pub(crate) fn parse_node_list(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `LIKE` pattern of one node in that column; `None` for a name that is
/// not letters and digits (it cannot be in any row).
pub(crate) fn node_pattern(node: &str) -> Option<String> {
    node.bytes()
        .all(|b| b.is_ascii_alphanumeric())
        .then(|| format!("%,{node},%"))
}

/// The reason given to the dependants of a job that did not succeed.
pub(crate) fn dependency_reason(
    dep_type: &str,
    dep_id: Uuid,
    state: JobState,
    reason: Option<&str>,
) -> String {
    let what = if state == JobState::Canceled {
        "was canceled"
    } else {
        "failed"
    };
    match reason {
        Some(r) if !r.is_empty() => format!("dependency {dep_type} job {dep_id} {what}: {r}"),
        _ => format!("dependency {dep_type} job {dep_id} {what}"),
    }
}

/// Whether a state change is announced to subscribers (see [`JobQueue::subscribe`]).
pub(crate) fn announced(e: &JobEvent) -> bool {
    e.state == JobState::Queued || e.compose.is_some()
}

/// Why a running job is taken from its worker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TakenBack<'a> {
    /// Its heartbeats stopped.
    Silent,
    /// The worker gave it back, for this reason.
    HandedBack(&'a str),
}

impl TakenBack<'_> {
    fn what(&self) -> String {
        match self {
            TakenBack::Silent => "stopped heart-beating".to_owned(),
            TakenBack::HandedBack(why) => format!("handed it back ({why})"),
        }
    }
}

pub(crate) fn stale_reason(max_retries: u32, why: TakenBack) -> String {
    format!(
        "worker {}; the job was already requeued {max_retries} time(s), the limit",
        why.what()
    )
}

pub(crate) fn requeue_reason(worker: Option<&str>, attempt: i32, why: TakenBack) -> String {
    format!(
        "requeued (attempt {attempt}): worker {} {}",
        worker.unwrap_or("?"),
        why.what()
    )
}
