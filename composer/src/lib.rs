//! kiln's composer: the compose API, job graphs, and the queue's housekeeping
//! (taking back jobs from silent workers, expiring old composes).
//! `main.rs` is a thin shell around [`serve`] and, when certificates are
//! configured, [`worker_api::serve`] on the workers' own TLS listener.

use std::sync::Arc;
use std::time::Duration;

use kiln_distro::Catalog;
use kiln_queue::JobQueue;

pub mod api;
pub mod auth;
pub mod boot_records;
pub mod config;
pub mod grants;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod plan;
pub mod presence;
pub mod repos;
pub mod runner;
pub mod status;
pub mod status_cache;
pub mod worker_api;

pub use config::{AllowEntry, ComposerConfig};

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn JobQueue>,
    pub catalog: Arc<Catalog>,
    pub config: Arc<ComposerConfig>,
    /// Repositories loaded for depsolving, shared by all requests.
    pub repos: Arc<repos::RepoCache>,
    /// Progress and logs of running builds, as their workers report them.
    pub live: Arc<live::Live>,
    /// Prometheus metrics (`[metrics]`).
    pub metrics: Arc<metrics::Metrics>,
    /// Records which workers the fleet heard from (the `workers` table).
    pub presence: Arc<presence::Presence>,
    /// Statuses answered lately (`status_cache_secs`).
    pub statuses: Arc<status_cache::StatusCache>,
    /// Verifies the compose API's bearer tokens; none without `[auth]`
    /// (or with `auth.mode = "none"`).
    pub auth: Option<Arc<auth::Verifier>>,
}

impl AppState {
    /// Opens the queue (applying migrations) and reads the catalog.
    pub async fn open(config: ComposerConfig) -> anyhow::Result<AppState> {
        let catalog = match &config.distributions_dir {
            Some(dir) => Catalog::from_dir(dir)?,
            None => Catalog::embedded()?,
        };
        config.check_auth().map_err(|e| anyhow::anyhow!(e))?;
        let auth = match config.auth.mode() {
            config::AuthMode::Oidc => Some(Arc::new(
                auth::Verifier::new(&config.auth).map_err(|e| anyhow::anyhow!(e))?,
            )),
            config::AuthMode::Local | config::AuthMode::None => None,
        };
        let policy = repos::policy(&config.repositories.allow, &catalog)
            .map_err(|e| anyhow::anyhow!("[repositories] allow: {e}"))?;
        let url = config.database_url();
        if config.database_url.is_none() {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                anyhow::anyhow!(
                    "creating the data directory {}: {e}",
                    config.data_dir.display()
                )
            })?;
        }
        let queue = kiln_queue::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("opening the queue at {}: {e}", redact(&url)))?;
        let limits = config.repositories.limits();
        let budget = config.repositories.cache_budget_bytes;
        let live = Arc::new(live::Live::new(queue.as_ref()));
        let statuses = status_cache::StatusCache::new(
            queue.as_ref(),
            Duration::from_secs(config.status_cache_secs),
        );
        let heartbeat_timeout = Duration::from_secs(config.queue.heartbeat_timeout_secs);
        let metrics = Arc::new(
            metrics::Metrics::new(heartbeat_timeout)
                .map_err(|e| anyhow::anyhow!("metrics: {e}"))?,
        );
        let presence = Arc::new(presence::Presence::new(heartbeat_timeout));
        Ok(AppState {
            queue,
            catalog: Arc::new(catalog),
            config: Arc::new(config),
            repos: Arc::new(repos::RepoCache::new(limits, policy, budget)),
            live,
            metrics,
            presence,
            statuses,
            auth,
        })
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Background housekeeping: requeue jobs of silent workers, expire old
/// composes, refresh loaded repositories, and run the composer's own jobs.
pub fn spawn_housekeeping(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let q = state.queue.clone();
    let cfg = state.config.queue.clone();
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.reap_interval_secs.max(1)));
        loop {
            tick.tick().await;
            match q
                .requeue_stale(
                    Duration::from_secs(cfg.heartbeat_timeout_secs),
                    cfg.max_retries,
                )
                .await
            {
                Ok(r) if !r.requeued.is_empty() || !r.failed.is_empty() => {
                    tracing::warn!(requeued = ?r.requeued, failed = ?r.failed, "took jobs back from silent workers");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "requeueing stale jobs"),
            }
            // Logs of jobs that ended without a finish sealing them (failed
            // here, canceled, or a composer that stopped in between).
            match q.seal_finished_logs().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(logs = n, "sealed the logs of finished jobs"),
                Err(e) => tracing::error!(error = %e, "sealing the logs of finished jobs"),
            }
        }
    });
    let q = state.queue.clone();
    let ret = state.config.retention.clone();
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(ret.interval_secs.max(1)));
        loop {
            tick.tick().await;
            match q.expire(Duration::from_secs(ret.max_age_secs)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(composes = n, "expired finished composes"),
                Err(e) => tracing::error!(error = %e, "expiring composes"),
            }
            let stale = q
                .unfinished_before(Duration::from_secs(ret.unfinished_max_age_secs))
                .await;
            match stale {
                Ok(ids) => {
                    for id in ids {
                        match q.cancel_compose(id).await {
                            Ok(_) => {
                                tracing::warn!(compose = %id, max_age_secs = ret.unfinished_max_age_secs, "canceled a compose that did not finish in time")
                            }
                            Err(e) => {
                                tracing::error!(compose = %id, error = %e, "canceling an expired compose")
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "finding unfinished composes"),
            }
        }
    });
    let repos = state.repos.clone();
    let every = state.config.repo_refresh_secs.max(1);
    let refresh = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            repos.refresh_all().await;
        }
    });
    let mut tasks = vec![reaper, retention, refresh];
    if state.config.jobs.run_in_composer {
        tasks.push(runner::spawn(state));
    }
    tasks
}

/// Serves the compose API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = spawn_housekeeping(&state);
    let app = api::router(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    for t in tasks {
        t.abort();
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_kept_out_of_messages() {
        assert_eq!(
            super::redact("postgres://kiln:s3cret@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(
            super::redact("postgres://kiln@db/kiln"),
            "postgres://kiln@db/kiln"
        );
        assert_eq!(
            super::redact("sqlite:/var/lib/kiln/kiln.db"),
            "sqlite:/var/lib/kiln/kiln.db"
        );
    }
}
