//! Prometheus metrics of the composer, on a listener of their own
//! (`[metrics] listen`, loopback by default: they carry tenant labels).
//! Names and labels are osbuild-composer's, in the `image_builder`
//! namespace, so dashboards made for it work:
//!
//! - `image_builder_composer_total_requests`, `…_total_compose_requests`,
//!   `…_request_count{method,path,code,subsystem,tenant}` and
//!   `…_http_duration_seconds{path,tenant}` for the compose API (the path is
//!   the route, each `{parameter}` shown as `-`);
//!   `image_builder_worker_request_count{…}` for the worker API;
//! - `image_builder_worker_pending_jobs{type,tenant}` and `…_running_jobs`,
//!   read from the database at each scrape (so every composer of a fleet
//!   shows the fleet's queue);
//! - `image_builder_worker_total_jobs{type,status,tenant,arch}`,
//!   `…_job_duration_seconds{type,status,tenant,arch}` (finishes this
//!   composer took) and `…_job_wait_duration_seconds{type,tenant,arch}`
//!   (jobs this composer handed out);
//! - `image_builder_worker_active_workers{worker,tenant,arch}`: workers any
//!   composer of the fleet heard from within the heartbeat timeout, or that
//!   hold a running job (the database's `workers` table).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kiln_queue::{Job, JobQueue, JobState};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, Opts, Registry,
    TextEncoder,
};

use crate::AppState;

const NAMESPACE: &str = "image_builder";

/// osbuild-composer's buckets for HTTP durations (seconds).
const HTTP_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.075, 0.1, 0.2, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0,
    14.0, 16.0, 20.0,
];

/// osbuild-composer's buckets for job durations and waits (seconds).
const JOB_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0,
    300.0, 360.0, 420.0, 480.0, 540.0, 600.0, 720.0, 840.0, 960.0, 1080.0, 1200.0, 1320.0, 1440.0,
    1560.0, 1680.0, 1800.0, 2100.0, 2400.0, 2700.0, 3000.0, 3600.0, 4800.0, 6000.0, 7200.0, 9000.0,
    10800.0, 12600.0, 14400.0, 16200.0, 18000.0, 19800.0, 24000.0, 27000.0, 30000.0, 33000.0,
    36000.0, 39600.0, 43200.0, 57600.0, 86400.0,
];

/// The tenant of a compose API request, left by authentication on its
/// response for the metrics layer (empty when it was not authenticated).
#[derive(Debug, Clone)]
pub struct RequestTenant(pub String);

pub struct Metrics {
    registry: Registry,
    total_requests: IntCounter,
    compose_requests: IntCounter,
    request_count: CounterVec,
    worker_request_count: CounterVec,
    http_duration: HistogramVec,
    pending_jobs: GaugeVec,
    running_jobs: GaugeVec,
    total_jobs: CounterVec,
    job_duration: HistogramVec,
    job_wait: HistogramVec,
    active_workers: GaugeVec,
    /// How long a worker counts as active after its last request.
    active_window: Duration,
}

fn opts(subsystem: &str, name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace(NAMESPACE)
        .subsystem(subsystem)
}

fn histogram(subsystem: &str, name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .subsystem(subsystem)
        .buckets(buckets.to_vec())
}

const REQUEST_LABELS: &[&str] = &["method", "path", "code", "subsystem", "tenant"];

impl Metrics {
    pub fn new(active_window: Duration) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            total_requests: IntCounter::with_opts(opts(
                "composer",
                "total_requests",
                "total number of http requests made to the composer",
            ))?,
            compose_requests: IntCounter::with_opts(opts(
                "composer",
                "total_compose_requests",
                "total number of compose requests made to the composer",
            ))?,
            request_count: CounterVec::new(
                opts("composer", "request_count", "total number of http requests"),
                REQUEST_LABELS,
            )?,
            worker_request_count: CounterVec::new(
                opts("worker", "request_count", "total number of http requests"),
                REQUEST_LABELS,
            )?,
            http_duration: HistogramVec::new(
                histogram(
                    "composer",
                    "http_duration_seconds",
                    "Duration of HTTP requests.",
                    HTTP_BUCKETS,
                ),
                &["path", "tenant"],
            )?,
            pending_jobs: GaugeVec::new(
                opts("worker", "pending_jobs", "Currently pending jobs"),
                &["type", "tenant"],
            )?,
            running_jobs: GaugeVec::new(
                opts("worker", "running_jobs", "Currently running jobs"),
                &["type", "tenant"],
            )?,
            total_jobs: CounterVec::new(
                opts("worker", "total_jobs", "Total jobs"),
                &["type", "status", "tenant", "arch"],
            )?,
            job_duration: HistogramVec::new(
                histogram(
                    "worker",
                    "job_duration_seconds",
                    "Duration spent by workers on a job.",
                    JOB_BUCKETS,
                ),
                &["type", "status", "tenant", "arch"],
            )?,
            job_wait: HistogramVec::new(
                histogram(
                    "worker",
                    "job_wait_duration_seconds",
                    "Duration a job spends on the queue.",
                    JOB_BUCKETS,
                ),
                &["type", "tenant", "arch"],
            )?,
            active_workers: GaugeVec::new(
                opts("worker", "active_workers", "Active workers"),
                &["worker", "tenant", "arch"],
            )?,
            active_window,
            registry,
        };
        m.registry.register(Box::new(m.total_requests.clone()))?;
        m.registry.register(Box::new(m.compose_requests.clone()))?;
        m.registry.register(Box::new(m.request_count.clone()))?;
        m.registry
            .register(Box::new(m.worker_request_count.clone()))?;
        m.registry.register(Box::new(m.http_duration.clone()))?;
        m.registry.register(Box::new(m.pending_jobs.clone()))?;
        m.registry.register(Box::new(m.running_jobs.clone()))?;
        m.registry.register(Box::new(m.total_jobs.clone()))?;
        m.registry.register(Box::new(m.job_duration.clone()))?;
        m.registry.register(Box::new(m.job_wait.clone()))?;
        m.registry.register(Box::new(m.active_workers.clone()))?;
        Ok(m)
    }

    /// A job handed to a worker: how long it was queued.
    pub fn dequeued(&self, job: &Job) {
        if let (Some(queued), Some(started)) = (job.queued_at, job.started_at) {
            let wait = (started - queued).num_milliseconds().max(0) as f64 / 1000.0;
            self.job_wait
                .with_label_values(&[&job.job_type, &job.channel, &job.arch])
                .observe(wait);
        }
    }

    /// A job a worker finished (as stored after the finish).
    pub fn finished(&self, job: &Job) {
        let status = match job.state {
            JobState::Success => "success",
            JobState::Canceled => return,
            _ => "failure",
        };
        let labels = [
            job.job_type.as_str(),
            status,
            job.channel.as_str(),
            job.arch.as_str(),
        ];
        self.total_jobs.with_label_values(&labels).inc();
        if let (Some(started), Some(finished)) = (job.started_at, job.finished_at) {
            let secs = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
            self.job_duration.with_label_values(&labels).observe(secs);
        }
    }

    /// The text exposition, with the queue's gauges read now.
    pub async fn render(&self, queue: &dyn JobQueue) -> Result<String, String> {
        let counts = queue.unfinished_counts().await.map_err(|e| e.to_string())?;
        self.pending_jobs.reset();
        self.running_jobs.reset();
        for c in counts {
            let gauge = match c.state {
                JobState::Waiting | JobState::Queued => &self.pending_jobs,
                JobState::Running => &self.running_jobs,
                _ => continue,
            };
            gauge
                .with_label_values(&[&c.job_type, &c.channel])
                .add(c.count as f64);
        }
        let workers = queue
            .workers(self.active_window)
            .await
            .map_err(|e| e.to_string())?;
        self.active_workers.reset();
        for w in workers {
            self.active_workers
                .with_label_values(&[&w.name, &w.channels.join(","), &w.arch])
                .set(1.0);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// The route of a request as a label: `{parameter}` segments as `-`.
fn path_label(req: &Request) -> String {
    let Some(path) = req.extensions().get::<MatchedPath>() else {
        // No route matched: one label for all of them, not the raw path.
        return "-".into();
    };
    path.as_str()
        .split('/')
        .map(|seg| if seg.starts_with('{') { "-" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// The compose API's layer: counts and times every request.
pub async fn compose_api_layer(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let m = &state.metrics;
    let method = req.method().as_str().to_owned();
    let path = path_label(&req);
    m.total_requests.inc();
    if method == "POST" && path.ends_with("/compose") {
        m.compose_requests.inc();
    }
    let start = Instant::now();
    let resp = next.run(req).await;
    let tenant = resp
        .extensions()
        .get::<RequestTenant>()
        .map(|t| t.0.clone())
        .unwrap_or_default();
    m.http_duration
        .with_label_values(&[&path, &tenant])
        .observe(start.elapsed().as_secs_f64());
    m.request_count
        .with_label_values(&[&method, &path, resp.status().as_str(), "composer", &tenant])
        .inc();
    resp
}

/// The worker API's layer: counts requests.
pub async fn worker_api_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let m = &state.metrics;
    let method = req.method().as_str().to_owned();
    let path = path_label(&req);
    let resp = next.run(req).await;
    m.worker_request_count
        .with_label_values(&[&method, &path, resp.status().as_str(), "worker", ""])
        .inc();
    resp
}

/// `GET /metrics` on the metrics listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Response {
    match state.metrics.render(state.queue.as_ref()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable\n",
            )
                .into_response()
        }
    }
}
