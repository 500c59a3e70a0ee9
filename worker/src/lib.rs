//! `kiln-worker` as a library: takes build jobs from the composer's worker
//! API (mutual TLS), runs them through the executor, streams progress and
//! uploads the results. `main.rs` only reads the command line and the
//! configuration, then calls [`run`].
//!
//! Signals: the first SIGTERM (or SIGINT) stops taking jobs and lets the
//! running ones finish; a second one stops them at once, releasing the
//! executor's mounts, and gives them back (`POST /jobs/{token}/release`:
//! the composer queues them again at once, counted as a requeue).

mod boot;
pub mod client;
pub mod config;
mod job;
pub mod metrics;
mod sbom;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_api::jobs::{Build, JobKind, JobType};
use kiln_api::worker::{FinishJob, RequestJob};
use tokio::sync::watch;
use tracing::Instrument;

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
    private_dir(&config.work_dir)?;
    private_dir(&config.store)?;
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

/// Creates `dir` (and its parents) and makes it mode 0700: the builds'
/// trees, images and logs are no other host user's to read. (The store
/// then belongs to the builds' namespace, which keeps it 0700: it is left
/// as it is.)
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let err = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    if std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
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
        // Every log line of the job, here and in what it calls, names the
        // job, its compose and the request id of the API call that made it.
        let span = tracing::info_span!(
            "job",
            job = %job.id,
            compose = %job.compose_id.map(|c| c.to_string()).unwrap_or_default(),
            request_id = %job.request_id.as_ref().map(|r| r.as_str()).unwrap_or_default(),
        );
        async {
            let kind = job.job.kind();
            tracing::info!(job = %job.id, job_type = %kind, compose = ?job.compose_id, "job taken");
            let ended = if kind == JobKind::Build {
                job::run(&client, &config, &job, shutdown.clone()).await
            } else if kind == JobKind::Boot {
                boot::run(&client, &config, &job).await
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
                    report(&client, job.token, finish).await;
                    tracing::info!(job = %job.id, success = ok, reason = ?reason, "job finished");
                }
                job::Ended::Canceled => tracing::info!(job = %job.id, "job canceled"),
                job::Ended::TakenBack => {
                    tracing::warn!(job = %job.id, "the composer took the job back")
                }
                job::Ended::Aborted => {
                    // At once, so another worker takes it now rather than after
                    // the composer's heartbeat timeout.
                    match client.release(job.token, "told to stop at once").await {
                        Ok(state) => tracing::warn!(job = %job.id, %state, "job given back"),
                        Err(e) => {
                            tracing::warn!(job = %job.id, error = %e, "giving the job back; the composer takes it back once its heartbeats stop")
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }
}

/// Reports how a job ended, never dropping it: a connection failure or a
/// 5xx is retried (with backoff, 5 times); a result too large for the
/// composer (413) goes again with each stage's log shortened, then without
/// the log, then as a failure saying so; a result the composer refuses
/// (400) becomes a failure with the composer's reason. Only a lost lease or
/// a cancel ends the report without the composer taking it.
async fn report(client: &Client, token: uuid::Uuid, mut finish: FinishJob) {
    let mut attempt = 0;
    let mut tail = job::STAGE_LOG_TAIL;
    loop {
        let refused = match client.finish(token, &finish).await {
            Ok(()) => return,
            Err(e @ (ClientError::LeaseLost | ClientError::Canceled)) => {
                tracing::warn!(error = %e, "the result was not taken");
                return;
            }
            Err(e) => e,
        };
        let status = match &refused {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        };
        match status {
            Some(s) if s == reqwest::StatusCode::PAYLOAD_TOO_LARGE => {
                tail /= 8;
                finish = shorter(finish, tail);
                tracing::warn!(
                    stage_log_tail = tail,
                    "the result was too large; sending it shorter"
                );
            }
            Some(s) if s == reqwest::StatusCode::BAD_REQUEST && finish.result.is_some() => {
                tracing::error!(error = %refused, "the composer refused the result; reporting a failure");
                finish = FinishJob {
                    success: false,
                    result: None,
                    reason: Some(format!("the composer refused the job's result: {refused}")),
                };
            }
            Some(s) if !s.is_server_error() => {
                tracing::error!(error = %refused, "reporting the result");
                return;
            }
            _ if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %refused, attempt, "reporting the result; trying again");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            _ => {
                tracing::error!(error = %refused, "reporting the result; giving up");
                return;
            }
        }
    }
}

/// `finish` with each stage's log cut to `tail` bytes; below 256 bytes,
/// without the log; with no log left to cut, a failure saying the result
/// was too large (what was built is then only in the worker's log).
fn shorter(finish: FinishJob, tail: usize) -> FinishJob {
    let too_large = |finish: &FinishJob| FinishJob {
        success: false,
        result: None,
        reason: Some(match &finish.reason {
            Some(r) => format!(
                "{}[…]: the job's result is larger than the composer accepts",
                r.chars().take(1024).collect::<String>()
            ),
            None => "the job's result is larger than the composer accepts".into(),
        }),
    };
    let Some(value) = &finish.result else {
        return too_large(&finish);
    };
    let Ok(mut result) = Build::decode_result(value) else {
        return too_large(&finish);
    };
    let Some(log) = &result.log else {
        return too_large(&finish);
    };
    result.log = (tail >= 256).then(|| job::tail_log(log, tail));
    match Build::encode_result(&result) {
        Ok(v) => FinishJob {
            result: Some(v),
            ..finish
        },
        Err(_) => too_large(&finish),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::jobs::{BuildResult, JobResult};
    use kiln_api::osbuild::StageLog;

    fn with_log(bytes: usize) -> FinishJob {
        let stage = StageLog {
            id: "ab".into(),
            kind: "org.osbuild.apt".into(),
            output: "x".repeat(bytes),
            success: true,
            error: None,
        };
        let result = BuildResult {
            uploads: vec![],
            artifacts: vec![],
            kernel_cmdline: None,
            log: Some([("os".to_string(), vec![stage])].into()),
            sboms: vec![],
        };
        FinishJob::succeeded(&JobResult::Build(result)).expect("encodes")
    }

    fn log_bytes(finish: &FinishJob) -> Option<usize> {
        let result = Build::decode_result(finish.result.as_ref()?).ok()?;
        Some(result.log?.values().flatten().map(|s| s.output.len()).sum())
    }

    /// Each 413 makes the result smaller, down to no log at all, then a
    /// failure that says why: the job is never dropped.
    #[test]
    fn a_result_too_large_is_shortened_never_dropped() {
        let mut finish = with_log(1 << 20);
        let mut tail = job::STAGE_LOG_TAIL;
        let mut sizes = vec![log_bytes(&finish)];
        while finish.success {
            tail /= 8;
            finish = shorter(finish, tail);
            sizes.push(log_bytes(&finish));
        }
        assert!(
            sizes[1].unwrap() < 2100 && sizes[2].unwrap() < 300,
            "{sizes:?}"
        );
        assert_eq!(sizes[3], None, "then without the log");
        assert!(finish.result.is_none());
        assert!(finish
            .reason
            .unwrap()
            .contains("larger than the composer accepts"));
    }
}
