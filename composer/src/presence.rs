//! Which workers the fleet has heard from. Every worker API request
//! records its worker in the queue's `workers` table
//! ([`JobQueue::worker_seen`](kiln_queue::JobQueue::worker_seen)), so that
//! every composer lists the same workers (`GET /workers`, the
//! active-workers gauge): what it asks for at each `POST /jobs`, otherwise
//! at most every few seconds a worker, before and after the request (a long
//! poll keeps its worker listed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::worker_api::WorkerIdentity;
use crate::AppState;

pub struct Presence {
    /// When this composer last recorded each worker.
    recorded: Mutex<HashMap<String, Instant>>,
    /// How long a worker counts as active after its last request.
    window: Duration,
}

impl Presence {
    /// `window`: the heartbeat timeout.
    pub fn new(window: Duration) -> Presence {
        Presence {
            recorded: Mutex::new(HashMap::new()),
            window,
        }
    }

    /// How long a worker counts as active after its last request.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a request of this worker should be recorded: at most every
    /// quarter window, 5 s at most (a worker's heartbeats and log reports
    /// are many; its row needs no finer time than that).
    fn due(&self, worker: &str) -> bool {
        let Ok(mut recorded) = self.recorded.lock() else {
            return true;
        };
        let now = Instant::now();
        let every = (self.window / 4).min(Duration::from_secs(5));
        match recorded.get(worker) {
            Some(at) if now.duration_since(*at) < every => false,
            _ => {
                recorded.insert(worker.to_owned(), now);
                true
            }
        }
    }
}

/// Records that `worker` was heard from (with what it asks for, which is
/// always recorded); a failure is logged, never the worker's.
pub async fn seen(state: &AppState, worker: &str, asks: Option<(&str, &[String])>) {
    if asks.is_none() && !state.presence.due(worker) {
        return;
    }
    if let Err(e) = state.queue.worker_seen(worker, asks).await {
        tracing::warn!(worker, error = %e, "could not record the worker as seen");
    }
}

/// The worker API's layer: records the worker before and after each request.
pub async fn layer(
    State(state): State<AppState>,
    worker: Option<axum::Extension<WorkerIdentity>>,
    req: Request,
    next: Next,
) -> Response {
    let name = worker.map(|w| w.0 .0);
    if let Some(n) = &name {
        seen(&state, n, None).await;
    }
    let resp = next.run(req).await;
    if let Some(n) = &name {
        seen(&state, n, None).await;
    }
    resp
}
