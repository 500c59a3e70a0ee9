//! Long-polling dequeue, shared by both backends.
//!
//! A dequeuer looks for a job; if there is none it registers as a waiter with
//! its filter and sleeps. Each newly queued job wakes *one* waiter whose filter
//! matches, rather than all of them: with many idle workers, waking everyone
//! for every job would make each job cost one query per waiter.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{DequeueFilter, Lease, Result};

struct Waiter {
    id: u64,
    filter: DequeueFilter,
    notify: Arc<Notify>,
    /// Woken and not yet looked again: a second job should go to someone else.
    woken: bool,
}

/// The dequeuers of this process that are sleeping, oldest first.
#[derive(Default)]
pub(crate) struct Waiters {
    inner: Mutex<(u64, Vec<Waiter>)>,
}

fn matches(f: &DequeueFilter, job_type: &str, arch: &str, channel: &str) -> bool {
    f.job_types.iter().any(|t| t == job_type)
        && (f.arches.is_empty() || f.arches.iter().any(|a| a == arch))
        && (f.channels.is_empty() || f.channels.iter().any(|c| c == channel))
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Waiter>)> {
        // A panic while holding this lock leaves the list consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, filter: &DequeueFilter) -> (u64, Arc<Notify>) {
        let mut g = self.lock();
        g.0 += 1;
        let id = g.0;
        let notify = Arc::new(Notify::new());
        g.1.push(Waiter {
            id,
            filter: filter.clone(),
            notify: notify.clone(),
            woken: false,
        });
        (id, notify)
    }

    fn unregister(&self, id: u64) {
        self.lock().1.retain(|w| w.id != id);
    }

    /// A job became ready: wake the oldest matching waiter not already woken.
    pub(crate) fn job_queued(&self, job_type: &str, arch: &str, channel: &str) {
        let mut g = self.lock();
        if let Some(w) =
            g.1.iter_mut()
                .find(|w| !w.woken && matches(&w.filter, job_type, arch, channel))
        {
            w.woken = true;
            w.notify.notify_one();
        }
    }

    /// Something may have been missed (a lost connection): everyone looks again.
    pub(crate) fn wake_all(&self) {
        let mut g = self.lock();
        for w in g.1.iter_mut() {
            w.woken = true;
            w.notify.notify_one();
        }
    }
}

pub(crate) async fn wait_for_job<F, Fut>(
    waiters: &Waiters,
    filter: &DequeueFilter,
    wait: Duration,
    mut attempt: F,
) -> Result<Option<Lease>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Lease>>>,
{
    if let Some(lease) = attempt().await? {
        return Ok(Some(lease));
    }
    let deadline = Instant::now() + wait;
    loop {
        if Instant::now() >= deadline {
            return Ok(None);
        }
        // Register before looking again, so that a job queued between the
        // look and the sleep still wakes us (Notify keeps the permit).
        let (id, notify) = waiters.register(filter);
        let found = attempt().await;
        if !matches!(found, Ok(None)) {
            waiters.unregister(id);
            return found;
        }
        let woken = tokio::time::timeout_at(deadline, notify.notified()).await;
        waiters.unregister(id);
        if woken.is_err() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(t: &str) -> DequeueFilter {
        DequeueFilter::types(&[t])
    }

    async fn woken(n: &Arc<Notify>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn one_job_wakes_one_matching_waiter() {
        let w = Waiters::default();
        let (_, a) = w.register(&filter("build"));
        let (_, b) = w.register(&filter("build"));
        let (_, other) = w.register(&filter("depsolve"));
        w.job_queued("build", "x86_64", "default");
        assert!(woken(&a).await);
        assert!(!woken(&b).await);
        assert!(!woken(&other).await);
        // The next job goes to the next waiter, not again to the first.
        w.job_queued("build", "x86_64", "default");
        assert!(woken(&b).await);
        // A job nobody waits for wakes nobody.
        w.job_queued("upload", "x86_64", "default");
        assert!(!woken(&other).await);
        w.wake_all();
        assert!(woken(&other).await);
    }
}
