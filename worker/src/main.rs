//! `kiln-worker`: reads its command line and `worker.toml`, sets up logging
//! and runs [`kiln_worker::run`]. `kiln-worker osbuild ...` is the builtin
//! executor (kiln-osbuild).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_worker::{LogFormat, WorkerConfig};

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
    // Builds run without privileges, in user namespaces of this user's
    // subordinate ids: a worker that cannot make them refuses to start,
    // saying what to configure, instead of failing its first job.
    if config.job_types.contains(&kiln_api::jobs::JobKind::Build) {
        if let Err(e) = kiln_executor::userns::preflight() {
            eprintln!("kiln-worker: cannot run builds: {e}");
            return ExitCode::from(2);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
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
    if let Some(at) = config.metrics_listen {
        let listener = match runtime.block_on(tokio::net::TcpListener::bind(at)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kiln-worker: listening for metrics scrapes on {at}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %at, "metrics ready: GET /metrics");
        runtime.spawn(async move {
            if let Err(e) = kiln_worker::metrics::serve(listener).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    match runtime.block_on(kiln_worker::run(config, cli.max_jobs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
