//! Live state of running builds: the phase and progress workers report,
//! and their log lines. Workers report to whichever composer they talk to,
//! and that composer writes the report to the queue's database
//! ([`JobQueue::report_live`]), which announces it to every composer sharing
//! it (PostgreSQL: `NOTIFY`; SQLite: in process). So a status read or an
//! event stream on any composer shows every build's progress and log lines,
//! and a build's log is kept after it ends (`GET /composes/{id}/logs`).

use std::collections::HashMap;

use kiln_api::events::LogEventData;
use kiln_api::status::Progress;
use kiln_api::worker::BuildPhase;
use kiln_queue::{Job, JobQueue, JobState, QueueError};
use tokio::sync::broadcast;
use uuid::Uuid;

/// What the worker of a running job last reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveJob {
    pub phase: Option<BuildPhase>,
    pub progress: Option<Progress>,
}

/// The live state of some jobs, by job id.
pub type LiveJobs = HashMap<Uuid, LiveJob>;

/// The live state of those of `jobs` that are running, read from the queue;
/// no query when none is.
pub async fn of_jobs(queue: &dyn JobQueue, jobs: &[Job]) -> Result<LiveJobs, QueueError> {
    let running: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.state == JobState::Running)
        .map(|j| j.id)
        .collect();
    if running.is_empty() {
        return Ok(LiveJobs::new());
    }
    let mut out = LiveJobs::new();
    for s in queue.live_states(&running).await? {
        out.insert(
            s.job,
            LiveJob {
                // Written by a composer from typed values; one that cannot
                // be read back is shown as unknown rather than failing.
                phase: s.phase.and_then(|p| serde_json::from_value(p).ok()),
                progress: s.progress.and_then(|p| serde_json::from_value(p).ok()),
            },
        );
    }
    Ok(out)
}

/// A worker's report on a running job, as the event streams send it: the
/// job's compose, and its new log lines (none for a progress report).
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub compose: Option<Uuid>,
    pub log: LogEventData,
}

/// The queue's live reports, from every composer, for this composer's event
/// streams.
pub struct Live {
    tx: broadcast::Sender<LiveEvent>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Live {
    /// Follows the queue's live reports (from now on).
    pub fn new(queue: &dyn JobQueue) -> Live {
        let (tx, _) = broadcast::channel(1024);
        let mut rx = queue.subscribe_live();
        let out = tx.clone();
        let forwarder = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        // No subscriber is fine: nobody is watching.
                        let _ = out.send(LiveEvent {
                            compose: ev.compose,
                            log: LogEventData {
                                job: ev.job,
                                lines: ev.lines,
                            },
                        });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "live reports came faster than they were read");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Live { tx, forwarder }
    }

    /// How many event streams listen (each holds one subscription).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}
