//! `composer.toml`: every key has a default that runs on one machine, and
//! every key can be overridden by an environment variable
//! `KILN_COMPOSER_<KEY>`, nested keys joined by `__`
//! (e.g. `KILN_COMPOSER_QUEUE__MAX_RETRIES=5`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComposerConfig {
    /// Address of the compose API.
    pub listen: SocketAddr,
    /// Where the embedded database and other state live.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite:…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// A directory of distribution files replacing the embedded ones.
    pub distributions_dir: Option<PathBuf>,
    /// Channel (tenant) of requests that do not name one.
    pub default_channel: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    pub queue: QueueConfig,
    pub retention: RetentionConfig,
    pub jobs: JobsConfig,
    /// How often loaded repositories are re-read for new packages.
    pub repo_refresh_secs: u64,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// A running job whose worker is silent this long is taken back.
    pub heartbeat_timeout_secs: u64,
    /// How many times a job is requeued before it fails.
    pub max_retries: u32,
    /// How often to look for silent workers.
    pub reap_interval_secs: u64,
}

/// The jobs a composer runs itself (depsolve and manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Off for a composer that only serves the API (another one runs the jobs).
    pub run_in_composer: bool,
    /// How many of those jobs run at once.
    pub concurrency: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            run_in_composer: true,
            concurrency: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished composes older than this are deleted with their jobs.
    pub max_age_secs: u64,
    /// How often to delete expired composes.
    pub interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ComposerConfig {
    fn default() -> Self {
        ComposerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            data_dir: PathBuf::from("kiln-data"),
            database_url: None,
            distributions_dir: None,
            default_channel: "default".into(),
            max_body_bytes: 1 << 20,
            queue: QueueConfig::default(),
            retention: RetentionConfig::default(),
            jobs: JobsConfig::default(),
            repo_refresh_secs: 3600,
            log_format: LogFormat::Text,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            heartbeat_timeout_secs: 60,
            max_retries: 3,
            reap_interval_secs: 5,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_secs: 14 * 24 * 3600,
            interval_secs: 3600,
        }
    }
}

impl ComposerConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<ComposerConfig, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(ComposerConfig::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        // KILN_COMPOSER_CONFIG names the file itself and is no key.
        fig.merge(
            Env::prefixed("KILN_COMPOSER_")
                .ignore(&["config"])
                .split("__"),
        )
        .extract()
        .map_err(Box::new)
    }

    /// The configuration file to read when none is named: `./composer.toml`,
    /// then `/etc/kiln/composer.toml`.
    pub fn default_file() -> Option<PathBuf> {
        ["composer.toml", "/etc/kiln/composer.toml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("kiln.db").display()))
    }
}
