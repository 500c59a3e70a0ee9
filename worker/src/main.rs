//! `kiln-worker`: takes build jobs from the composer's worker API (mutual
//! TLS), runs them through the executor, streams progress and uploads the
//! results. `kiln-worker osbuild ...` is the builtin executor (kiln-osbuild).
//!
//! Signals: the first SIGTERM (or SIGINT) stops taking jobs and lets the
//! running ones finish; a second one stops them at once, releasing the
//! executor's mounts, and hands them back (the composer requeues them once
//! their heartbeats stop).

mod boot;
mod client;
mod config;
mod job;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kiln_api::jobs::JobKind;
use kiln_api::worker::RequestJob;
use tokio::sync::watch;

use crate::client::{Client, ClientError};
use crate::config::WorkerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Run,
    Drain,
    Abort,
}

#[derive(Parser)]
#[command(
    name = "kiln-worker",
    version,
    about = "Take build jobs from a kiln composer, build, upload"
)]
struct Cli {
    /// The configuration file (default: ./worker.toml, then /etc/kiln/worker.toml).
    #[arg(long, env = "KILN_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// Stop after this many jobs (for scripts and tests).
    #[arg(long)]
    max_jobs: Option<u64>,
}

fn default_file() -> Option<PathBuf> {
    ["worker.toml", "/etc/kiln/worker.toml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // The builtin executor, and its stages re-executing this binary.
    if let Some(code) = kiln_executor::cli::stage_entry(&argv) {
        return code;
    }
    if argv.get(1).map(String::as_str) == Some("osbuild") {
        let mut args = vec!["kiln-osbuild".to_owned()];
        args.extend(argv.into_iter().skip(2));
        return kiln_executor::cli::main(args);
    }
    let cli = Cli::parse();
    let file = cli.config.clone().or_else(default_file);
    let config = match WorkerConfig::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln-worker: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.max_jobs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: WorkerConfig, max_jobs: Option<u64>) -> anyhow::Result<()> {
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
    let jobs_left = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
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
    left: std::sync::Arc<std::sync::atomic::AtomicI64>,
) {
    let request = RequestJob {
        types: config.job_types.clone(),
        arch: config.arch.clone(),
        channels: config.channels.clone(),
        wait_secs: config.poll_secs,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() != Shutdown::Run
            || left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0
        {
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
                left.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                continue;
            }
            Err(e) => {
                left.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
            job::Ended::Finish(kiln_api::worker::FinishJob {
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
