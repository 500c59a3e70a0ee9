//! Live state of running builds: the phase and progress workers report, and
//! their log lines, kept in memory and broadcast to event streams. The queue
//! stays the record of what happened; this is what is happening now, so it
//! lives as long as the job runs and only on the composer the worker talks to.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_api::events::LogEventData;
use kiln_api::status::Progress;
use kiln_api::worker::BuildPhase;
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct LiveJob {
    pub compose: Option<Uuid>,
    pub phase: Option<BuildPhase>,
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone)]
pub enum LiveEvent {
    Progress {
        compose: Option<Uuid>,
        job: Uuid,
    },
    /// New log lines, as the `log` event sends them.
    Log {
        compose: Option<Uuid>,
        log: LogEventData,
    },
}

impl LiveEvent {
    pub fn compose(&self) -> Option<Uuid> {
        match self {
            LiveEvent::Progress { compose, .. } | LiveEvent::Log { compose, .. } => *compose,
        }
    }
}

pub struct Live {
    jobs: Mutex<HashMap<Uuid, LiveJob>>,
    /// Lease token → (job, compose) of the leases this composer handed out.
    leases: Mutex<HashMap<Uuid, (Uuid, Option<Uuid>)>>,
    tx: broadcast::Sender<LiveEvent>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            jobs: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Live {
    /// Remembers which job a lease token is for.
    pub fn leased(&self, token: Uuid, job: Uuid, compose: Option<Uuid>) {
        if let Ok(mut l) = self.leases.lock() {
            l.insert(token, (job, compose));
        }
    }

    /// The job and compose of a lease this composer handed out.
    pub fn lease(&self, token: Uuid) -> Option<(Uuid, Option<Uuid>)> {
        self.leases.lock().ok().and_then(|l| l.get(&token).copied())
    }

    /// Forgets a lease and its job's live state.
    pub fn ended(&self, token: Uuid) {
        let lease = self.leases.lock().ok().and_then(|mut l| l.remove(&token));
        if let Some((job, _)) = lease {
            self.remove(job);
        }
    }

    /// Records a worker's update and tells the event streams.
    pub fn update(
        &self,
        job: Uuid,
        compose: Option<Uuid>,
        phase: Option<BuildPhase>,
        progress: Option<Progress>,
        lines: Vec<String>,
    ) {
        if let Ok(mut jobs) = self.jobs.lock() {
            let entry = jobs.entry(job).or_insert(LiveJob {
                compose,
                phase: None,
                progress: None,
            });
            if phase.is_some() {
                entry.phase = phase;
            }
            if progress.is_some() {
                entry.progress = progress;
            }
        }
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(LiveEvent::Progress { compose, job });
        if !lines.is_empty() {
            let _ = self.tx.send(LiveEvent::Log {
                compose,
                log: LogEventData { job, lines },
            });
        }
    }

    pub fn get(&self, job: Uuid) -> Option<LiveJob> {
        self.jobs.lock().ok().and_then(|j| j.get(&job).cloned())
    }

    /// Forgets jobs taken back from their workers, with their leases: a
    /// lease that is never finished would otherwise stay for good.
    pub fn forget(&self, jobs: impl IntoIterator<Item = Uuid>) {
        let jobs: std::collections::HashSet<Uuid> = jobs.into_iter().collect();
        if let Ok(mut l) = self.leases.lock() {
            l.retain(|_, (job, _)| !jobs.contains(job));
        }
        if let Ok(mut live) = self.jobs.lock() {
            live.retain(|job, _| !jobs.contains(job));
        }
    }

    /// How many leases and jobs are kept.
    pub fn held(&self) -> (usize, usize) {
        let leases = self.leases.lock().map(|l| l.len()).unwrap_or(0);
        let jobs = self.jobs.lock().map(|j| j.len()).unwrap_or(0);
        (leases, jobs)
    }

    /// Forgets a job that ended.
    pub fn remove(&self, job: Uuid) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&job);
        }
    }

    /// How many event streams listen (each holds one subscription).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}
