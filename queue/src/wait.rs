//! Long-polling dequeue, shared by both backends: look, and if nothing is
//! there, sleep until the backend announces a newly queued job (or time is up).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Lease, Result};

pub(crate) async fn wait_for_job<F, Fut>(
    wake: &watch::Sender<u64>,
    wait: Duration,
    mut attempt: F,
) -> Result<Option<Lease>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Lease>>>,
{
    let deadline = Instant::now() + wait;
    // Subscribe before looking, so a job queued between the look and the
    // sleep still wakes us.
    let mut rx = wake.subscribe();
    loop {
        rx.borrow_and_update();
        if let Some(lease) = attempt().await? {
            return Ok(Some(lease));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            // The sender lives as long as the queue; a closed channel means the
            // queue is going away.
            Ok(Err(_)) | Err(_) => return Ok(None),
        }
    }
}
