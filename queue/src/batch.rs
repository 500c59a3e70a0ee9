//! Smart batching: calls of one kind that arrive while earlier ones are still
//! in the database are gathered and run as one statement.
//!
//! Each statement costs a PostgreSQL backend the same parse, plan, lock and
//! commit work whether it touches one row or fifty, and on a small machine
//! that work is the queue's ceiling. A [`Batcher`] adds no waiting: a call
//! that arrives while a slot is free runs at once, alone. Only when every slot
//! is busy do calls pile up, and the next free slot takes all of them.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{QueueError, Result};

type Call<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

/// Gathers calls and hands them, a batch at a time, to `run` with one of its
/// slots' resources (PostgreSQL: a connection of its own, so a statement needs
/// no pool checkout and no check on return).
pub(crate) struct Batcher<Req, Resp> {
    calls: mpsc::UnboundedSender<Call<Req, Resp>>,
    task: tokio::task::JoinHandle<()>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// `run` gets a free slot's resource and the gathered requests (at most
    /// `max_batch`), and gives back the resource and one result per request,
    /// in order (a call left without one fails as dropped). There are as many slots as `resources`; a run that panics
    /// fails its calls and leaves `R::default()` in its slot. `orphaned` is
    /// told of each successful result whose caller has gone.
    pub(crate) fn new<R, F, Fut, O>(
        max_batch: usize,
        resources: Vec<R>,
        run: F,
        orphaned: O,
    ) -> Self
    where
        R: Default + Send + 'static,
        F: Fn(R, Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (R, Vec<Result<Resp>>)> + Send + 'static,
        O: Fn(Resp) + Send + Sync + 'static,
    {
        let (calls, mut rx) = mpsc::unbounded_channel::<Call<Req, Resp>>();
        let (free, mut free_rx) = mpsc::unbounded_channel::<R>();
        for r in resources {
            let _ = free.send(r);
        }
        let run = Arc::new(run);
        let orphaned = Arc::new(orphaned);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Some(resource) = free_rx.recv().await else {
                    return;
                };
                // Everything that arrived while we waited for a slot goes too.
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                let (run, orphaned, free) = (run.clone(), orphaned.clone(), free.clone());
                tokio::spawn(async move {
                    let (requests, replies): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                    let n = requests.len();
                    let (resource, results) =
                        match CatchPanic(Box::pin(run(resource, requests))).await {
                            Ok(done) => done,
                            Err(why) => (
                                R::default(),
                                (0..n)
                                    .map(|_| {
                                        Err(QueueError::Corrupt(format!(
                                            "a batched call failed: {why}"
                                        )))
                                    })
                                    .collect(),
                            ),
                        };
                    // The slot first: the next batch need not wait for the replies.
                    let _ = free.send(resource);
                    for (reply, result) in replies.into_iter().zip(results) {
                        if let Err(Ok(resp)) = reply.send(result) {
                            orphaned(resp);
                        }
                    }
                });
            }
        });
        Batcher { calls, task }
    }

    pub(crate) async fn call(&self, req: Req) -> Result<Resp> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send((req, tx))
            .map_err(|_| QueueError::Corrupt("the queue's batcher has stopped".into()))?;
        rx.await
            .map_err(|_| QueueError::Corrupt("the queue's batcher dropped a call".into()))?
    }
}

/// A future that turns a panic while it is polled into an error.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = std::result::Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(out)) => std::task::Poll::Ready(Ok(out)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()))),
        }
    }
}

impl<Req, Resp> Drop for Batcher<Req, Resp> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lone_call_runs_alone_and_crowded_calls_share_a_run() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = {
            let sizes = sizes.clone();
            Arc::new(Batcher::new(
                64,
                vec![()],
                move |(), reqs: Vec<u32>| {
                    let sizes = sizes.clone();
                    async move {
                        sizes.lock().unwrap().push(reqs.len());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        ((), reqs.into_iter().map(|r| Ok(r * 2)).collect())
                    }
                },
                |_| {},
            ))
        };
        assert_eq!(b.call(21).await.unwrap(), 42);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
        // Ten calls at once with one slot: whatever arrives while a run is in
        // the database waits for the slot and then goes in one run.
        let all = futures_join(b.clone(), 10).await;
        assert_eq!(all, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        let sizes = sizes.lock().unwrap()[1..].to_vec();
        assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
        assert!(sizes.len() <= 3, "ten crowded calls took {sizes:?}");
    }

    async fn futures_join(b: Arc<Batcher<u32, u32>>, n: u32) -> Vec<u32> {
        let mut handles = Vec::new();
        for i in 0..n {
            let b = b.clone();
            handles.push(tokio::spawn(async move { b.call(i).await.unwrap() }));
            // Keep the order of arrival deterministic.
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_result_nobody_waits_for_goes_to_orphaned() {
        let orphans = Arc::new(AtomicUsize::new(0));
        let b = {
            let orphans = orphans.clone();
            Batcher::new(
                8,
                vec![()],
                |(), reqs: Vec<u32>| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ((), reqs.into_iter().map(Ok).collect())
                },
                move |_| {
                    orphans.fetch_add(1, Ordering::SeqCst);
                },
            )
        };
        // The caller gives up before the run ends.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), b.call(1)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(orphans.load(Ordering::SeqCst), 1);
        assert_eq!(b.call(2).await.unwrap(), 2);
        assert_eq!(orphans.load(Ordering::SeqCst), 1);
    }
}

#[cfg(test)]
mod panics {
    use super::*;

    #[tokio::test]
    async fn a_run_that_panics_fails_its_calls_and_keeps_its_slot() {
        let b = Batcher::new(
            8,
            vec![0u32],
            |base: u32, reqs: Vec<u32>| async move {
                assert!(!reqs.contains(&13), "unlucky");
                (base + 1, reqs.into_iter().map(|r| Ok(r + base)).collect())
            },
            |_| {},
        );
        assert_eq!(b.call(1).await.unwrap(), 1);
        assert_eq!(b.call(1).await.unwrap(), 2);
        let e = b.call(13).await.unwrap_err();
        assert!(
            e.to_string().contains("a batched call failed: unlucky"),
            "{e}"
        );
        // The slot is back, with a fresh resource.
        assert_eq!(b.call(1).await.unwrap(), 1);
    }
}
