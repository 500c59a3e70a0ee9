//! What every target's tests share: artifacts of random bytes, a quick retry
//! policy, and an observer that counts retries and can act on progress.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use kiln_targets::{Event, RetryPolicy};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 24 MiB and an odd tail, so the last part is short.
pub(crate) const ARTIFACT_SIZE: usize = 24 * 1024 * 1024 + 12_345;

pub(crate) struct Artifact {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

pub(crate) fn artifact(size: usize) -> Artifact {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("disk.raw");
    let mut bytes = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut bytes);
    std::fs::write(&path, &bytes).expect("writing the artifact");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Artifact {
        _dir: dir,
        path,
        bytes,
        sha256,
    }
}

/// Three attempts, 50 ms then 100 ms apart: failures show quickly.
pub(crate) fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 50,
        max_backoff_ms: 200,
        request_timeout_secs: 30,
    }
}

/// Records what an upload reports.
#[derive(Default)]
pub(crate) struct Observed {
    pub retries: AtomicU32,
    pub last_done: AtomicU64,
    pub retry_errors: Mutex<Vec<String>>,
    fired: AtomicBool,
}

impl Observed {
    /// Handles one event; `at_progress` runs once, the first time at least
    /// `threshold` bytes are confirmed.
    pub(crate) fn see(&self, event: Event<'_>, threshold: u64, at_progress: impl FnOnce()) {
        match event {
            Event::Progress { done, total } => {
                assert!(done <= total, "progress {done} beyond {total}");
                let before = self.last_done.fetch_max(done, Ordering::SeqCst);
                assert!(done >= before, "progress went back from {before} to {done}");
                if done >= threshold && !self.fired.swap(true, Ordering::SeqCst) {
                    at_progress();
                }
            }
            Event::Retry { error, .. } => {
                self.retries.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut v) = self.retry_errors.lock() {
                    v.push(error.to_string());
                }
            }
        }
    }

    pub(crate) fn retries(&self) -> u32 {
        self.retries.load(Ordering::SeqCst)
    }
}

/// Asserts that an upload stopped by a dead server failed after retrying,
/// naming the reason.
pub(crate) fn assert_failed_after_retries(err: &kiln_targets::UploadError, observed: &Observed) {
    let text = err.to_string();
    assert!(
        observed.retries() >= 2,
        "expected retries before giving up, saw {}: {text}",
        observed.retries()
    );
    assert!(text.contains("after 3 attempt(s)"), "{text}");
    let lower = text.to_lowercase();
    assert!(
        lower.contains("connect") || lower.contains("refused") || lower.contains("reset"),
        "the error should say the connection failed: {text}"
    );
}

pub(crate) fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
