//! `kiln-composer`: the compose API service.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kiln_composer::config::{AuthMode, LogFormat};
use kiln_composer::{AppState, ComposerConfig};

/// kiln's composer: takes image requests over REST, turns them into job
/// graphs in the queue, and serves their status until the artifacts are delivered.
///
/// With no configuration it runs on one machine: SQLite in ./kiln-data, API on
/// 127.0.0.1:8700. Every key of composer.toml can be set by an environment
/// variable KILN_COMPOSER_<KEY> (nested keys joined by "__").
#[derive(Parser)]
#[command(name = "kiln-composer", version)]
struct Args {
    /// Configuration file (default: ./composer.toml, then /etc/kiln/composer.toml, if present).
    #[arg(long, env = "KILN_COMPOSER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration, as JSON, and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = args.config.clone().or_else(ComposerConfig::default_file);
    let config = ComposerConfig::load(file.as_deref()).context("reading the configuration")?;
    init_logging(config.log_format);
    if args.print_config {
        let mut shown = config.clone();
        shown.database_url = shown.database_url.as_deref().map(kiln_composer::redact);
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    if let Some(f) = &file {
        tracing::info!(file = %f.display(), "configuration read");
    }
    // Certificates are read before anything else so that a bad path stops the start.
    let worker_tls =
        kiln_composer::worker_api::load_tls(&config.worker_api).context("the worker API")?;
    let state = AppState::open(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        database = %kiln_composer::redact(&config.database_url()),
        distributions = ?state.catalog.names(),
        "kiln-composer ready"
    );
    let auth = &config.auth;
    match auth.mode() {
        AuthMode::Local => tracing::warn!(
            tenant = %config.default_channel,
            "the compose API is unauthenticated (no [auth] issuer): loopback only, every request in one tenant"
        ),
        AuthMode::None => tracing::warn!(
            listen = %config.listen,
            "the compose API is unauthenticated on purpose (auth.mode = \"none\")"
        ),
        AuthMode::Oidc => tracing::info!(
            issuer = auth.issuer.as_deref().unwrap_or(""),
            audience = auth.audience.as_deref().unwrap_or(""),
            "the compose API takes bearer tokens of this issuer"
        ),
    }
    tracing::info!(
        grants = auth.boot_grants.len(),
        "boot delivery: only within [[auth.boot_grants]]"
    );
    let workers = match worker_tls {
        Some(tls) => {
            let at = config.worker_api.listen;
            let worker_listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for workers on {at}"))?;
            tracing::info!(listen = %at, allowed_domains = ?config.worker_api.allowed_domains, "worker API ready (mutual TLS)");
            let state = state.clone();
            Some(tokio::spawn(kiln_composer::worker_api::serve(
                state,
                worker_listener,
                tls,
                shutdown_signal(),
            )))
        }
        None => {
            tracing::info!(
                "no worker API: worker_api.ca, cert and key are not set (see tools/gen-certs.sh)"
            );
            None
        }
    };
    let metrics = if config.metrics.enabled {
        let at = config.metrics.listen;
        let metrics_listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("listening for metrics scrapes on {at}"))?;
        if !at.ip().is_loopback() {
            tracing::warn!(listen = %at, "metrics (with tenant labels) are served beyond loopback");
        }
        tracing::info!(listen = %at, "metrics ready: GET /metrics");
        let app = kiln_composer::metrics::router(state.clone());
        Some(tokio::spawn(async move {
            axum::serve(metrics_listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }))
    } else {
        None
    };
    kiln_composer::serve(state, listener, shutdown_signal()).await?;
    if let Some(m) = metrics {
        m.await.context("the metrics task")??;
    }
    if let Some(w) = workers {
        w.await.context("the worker API task")??;
    }
    tracing::info!("kiln-composer stopped");
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
