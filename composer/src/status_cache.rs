//! Compose statuses this composer answered lately, so that clients polling
//! `GET /composes/{id}` (osbuild-composer's clients poll) cost a lookup,
//! not two queries. Never stale beyond what the queue announces:
//!
//! - every state change of a compose's job is announced to every composer
//!   sharing the database ([`JobQueue::subscribe`]) and drops that
//!   compose's entry here; a status read while a change came in is not
//!   kept (an epoch counts the drops);
//! - a compose with a running job is not kept (its progress changes
//!   without a state change);
//! - entries live at most `status_cache_secs` (default 1 s), which bounds
//!   what no announcement covers: a compose deleted or expired on another
//!   composer, and announcements lost while the listener reconnected;
//! - a change made through this composer (cancel, delete, a finish or
//!   release of its worker API, its own jobs' finishes) drops the entry at
//!   once, so a client reads its own writes without waiting for the
//!   announcement to come back;
//! - at most [`MAX_ENTRIES`]: when full, the cache starts over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_api::status::ComposeStatus;
use kiln_queue::JobQueue;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

pub const MAX_ENTRIES: usize = 100_000;

struct Entry {
    channel: String,
    status: ComposeStatus,
    at: Instant,
}

pub struct StatusCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
    epoch: AtomicU64,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl StatusCache {
    /// A cache whose entries live `ttl` (zero: nothing is kept), dropping
    /// what the queue announces as changed.
    pub fn new(queue: &dyn JobQueue, ttl: Duration) -> std::sync::Arc<StatusCache> {
        let cache = std::sync::Arc::new_cyclic(|weak: &std::sync::Weak<StatusCache>| {
            let follower = (!ttl.is_zero()).then(|| {
                let mut rx = queue.subscribe();
                let weak = weak.clone();
                tokio::spawn(async move {
                    loop {
                        let ev = rx.recv().await;
                        let Some(cache) = weak.upgrade() else { return };
                        match ev {
                            Ok(ev) => {
                                if let Some(c) = ev.compose {
                                    cache.forget(c);
                                }
                            }
                            // Some announcements were missed: start over.
                            Err(RecvError::Lagged(_)) => cache.clear(),
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            });
            StatusCache {
                ttl,
                entries: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                follower,
            }
        });
        cache
    }

    /// The epoch to pass to [`StatusCache::keep`] for a status read now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A kept status of compose `id`, with its channel.
    pub fn get(&self, id: Uuid) -> Option<(String, ComposeStatus)> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(&id)?;
        (e.at.elapsed() < self.ttl).then(|| (e.channel.clone(), e.status.clone()))
    }

    /// Keeps a status read since `epoch`, unless something was dropped
    /// meanwhile (it may be older than the change that dropped it).
    pub fn keep(&self, epoch: u64, id: Uuid, channel: &str, status: &ComposeStatus) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            id,
            Entry {
                channel: channel.to_owned(),
                status: status.clone(),
                at: Instant::now(),
            },
        );
    }

    /// Drops what is kept of a compose.
    pub fn forget(&self, id: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            entries.remove(&id);
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
    }

    /// How many statuses are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StatusCache {
    fn drop(&mut self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
    }
}
