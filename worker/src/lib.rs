//! `kiln-worker` as a library: takes build jobs from the composer's worker
//! API (mutual TLS), runs them through the executor, streams progress and
//! uploads the results. `main.rs` only reads the command line and the
//! configuration, then calls [`run`].
//!
//! Signals: the first SIGTERM (or SIGINT) stops taking jobs and lets the
//! running ones finish; a second one stops them at once, releasing the
//! executor's mounts, and hands them back (the composer requeues them once
//! their heartbeats stop).

mod boot;
pub mod client;
pub mod config;
mod job;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_api::jobs::JobKind;
use kiln_api::worker::{FinishJob, RequestJob};
use tokio::sync::watch;

use crate::client::{Client, ClientError};
pub use crate::config::{Executor, LogFormat, WorkerConfig};

/// Where the worker stands after signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Run,
    Drain,
    Abort,
}

/// Runs the worker until a signal stops it, or after `max_jobs` jobs.
pub async fn run(config: WorkerConfig, max_jobs: Option<u64>) -> anyhow::Result<()> {
    let client = Client::new(&config)?;
    std::fs::create_dir_all(&config.work_dir)?;
    let (tx, rx) = watch::channel(Shutdown::Run);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        for next in [Shutdown::Drain, Shutdown::Abort] {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!(?next, "signal received");
            let _ = tx.send(next);
        }
    });
    tracing::info!(composer = %config.composer, arch = %config.arch, types = ?config.job_types, "kiln-worker ready");
    let jobs_left = Arc::new(AtomicI64::new(
        max_jobs.map(|m| m as i64).unwrap_or(i64::MAX),
    ));
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency {
        let (client, config, rx, left) = (
            client.clone(),
            config.clone(),
            rx.clone(),
            jobs_left.clone(),
        );
        slots.spawn(async move { slot(client, config, rx, left).await });
    }
    while slots.join_next().await.is_some() {}
    tracing::info!("kiln-worker stopped");
    Ok(())
}

/// One build slot: ask for a job, run it, report it, again.
async fn slot(
    client: Client,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<Shutdown>,
    left: Arc<AtomicI64>,
) {
    let request = RequestJob {
        types: config
            .job_types
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        arch: config.arch.clone(),
        channels: config.channels.clone(),
        wait_secs: config.poll_secs,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() != Shutdown::Run || left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return;
        }
        let asked = tokio::select! {
            r = client.request_job(&request) => r,
            _ = shutdown.changed() => return,
        };
        let job = match asked {
            Ok(Some(job)) => {
                backoff = Duration::from_secs(1);
                job
            }
            Ok(None) => {
                left.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(e) => {
                left.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(error = %e, retry_in = ?backoff, "asking for a job");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let kind = job.job.kind();
        tracing::info!(job = %job.id, job_type = %kind, compose = ?job.compose_id, "job taken");
        let ended = if kind == JobKind::Build {
            job::run(&client, &config, &job, shutdown.clone()).await
        } else {
            job::Ended::Finish(FinishJob {
                success: false,
                result: None,
                reason: Some(format!("kiln-worker does not run {kind} jobs")),
            })
        };
        match ended {
            job::Ended::Finish(finish) => {
                let ok = finish.success;
                let reason = finish.reason.clone();
                let mut attempt = 0;
                loop {
                    match client.finish(job.token, &finish).await {
                        Ok(()) => break,
                        Err(ClientError::Transport { .. }) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                        }
                        Err(e) => {
                            tracing::error!(job = %job.id, error = %e, "reporting the result");
                            break;
                        }
                    }
                }
                tracing::info!(job = %job.id, success = ok, reason = ?reason, "job finished");
            }
            job::Ended::Canceled => tracing::info!(job = %job.id, "job canceled"),
            job::Ended::HandedBack(why) => tracing::warn!(job = %job.id, %why, "job handed back"),
        }
    }
}
