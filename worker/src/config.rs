//! `worker.toml`: where the composer is, the worker's certificate, what it
//! builds, and the upload targets' credentials (which live only here).
//! Every key can be overridden by `KILN_WORKER_<KEY>` (nested keys joined
//! by `__`, e.g. `KILN_WORKER_TARGETS__LOCAL__PATH=/srv/images`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use kiln_api::jobs::JobKind;
use kiln_targets::TargetConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Base URL of the composer's worker API, e.g. `https://composer:8701`.
    pub composer: String,
    /// PEM file of the cluster's CA: the composer's certificate must chain to it.
    pub ca: Option<PathBuf>,
    /// PEM file of this worker's client certificate (its DNS name is the worker's name).
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    pub key: Option<PathBuf>,
    /// Architecture built here, as the distributions name it.
    pub arch: String,
    /// Job types taken.
    pub job_types: Vec<JobKind>,
    /// Channels (tenants) served; empty serves every channel.
    pub channels: Vec<String>,
    /// Builds run at once.
    pub concurrency: usize,
    /// `builtin` (this binary's own kiln-osbuild) or the path of an
    /// osbuild-compatible executor (`/usr/bin/kiln-osbuild`, `/usr/bin/osbuild`).
    pub executor: Executor,
    /// The executor's object store, shared by this worker's builds.
    pub store: PathBuf,
    /// Scratch space: one directory per running job.
    pub work_dir: PathBuf,
    /// Bound on the store's size after each build (bytes); none: unbounded.
    pub store_max_bytes: Option<u64>,
    /// How often a running job reports progress (and so renews its lease).
    pub heartbeat_secs: u64,
    /// How long one request for a job waits at the composer.
    pub poll_secs: u64,
    /// Upload targets by the compose upload type they serve: `local`,
    /// `aws.s3`, `azure`, `gcp`.
    pub targets: BTreeMap<String, TargetConfig>,
    /// The boot image store and boot service, for `boot` upload targets.
    pub boot: Option<kiln_boot::BootConfig>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Where to serve Prometheus metrics (`GET /metrics`); none: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The program that runs a build's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PathBuf")]
pub enum Executor {
    /// This binary's own kiln-osbuild (`kiln-worker osbuild`): `builtin`.
    Builtin,
    /// An osbuild-compatible executor.
    Path(PathBuf),
}

impl From<PathBuf> for Executor {
    fn from(p: PathBuf) -> Executor {
        if p.as_os_str() == "builtin" {
            Executor::Builtin
        } else {
            Executor::Path(p)
        }
    }
}

/// How the worker's own log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For a human on a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            composer: "https://localhost:8701".into(),
            ca: None,
            cert: None,
            key: None,
            arch: std::env::consts::ARCH.into(),
            job_types: vec![JobKind::Build],
            channels: Vec::new(),
            concurrency: 1,
            executor: Executor::Builtin,
            store: PathBuf::from("kiln-worker/store"),
            work_dir: PathBuf::from("kiln-worker/jobs"),
            store_max_bytes: None,
            heartbeat_secs: 5,
            poll_secs: 30,
            targets: BTreeMap::new(),
            boot: None,
            log_format: LogFormat::Text,
            metrics_listen: None,
        }
    }
}

/// The compose upload types a target kind can serve.
pub fn serves(kind: &str) -> &'static [&'static str] {
    match kind {
        "local" => &["local"],
        "s3" => &["aws.s3"],
        "azure" => &["azure"],
        "gcs" => &["gcp"],
        _ => &[],
    }
}

impl WorkerConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<WorkerConfig, String> {
        let mut fig = Figment::new();
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        let config: WorkerConfig = fig
            .merge(
                Env::prefixed("KILN_WORKER_")
                    .ignore(&["config"])
                    .split("__"),
            )
            .extract()
            .map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Catches mistakes that would only show when the first job comes.
    pub fn check(&self) -> Result<(), String> {
        for (name, t) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            match t {
                None => {
                    return Err(format!(
                        "{name}: missing (make certificates with tools/gen-certs.sh)"
                    ))
                }
                Some(p) if !p.exists() => {
                    return Err(format!("{name}: {} does not exist", p.display()))
                }
                _ => {}
            }
        }
        if self.concurrency == 0 {
            return Err("concurrency: at least 1".into());
        }
        if self.job_types.is_empty() {
            return Err("job_types: name at least one".into());
        }
        for kind in &self.job_types {
            match kind {
                JobKind::Build => {}
                JobKind::Boot if self.boot.is_some() => {}
                JobKind::Boot => {
                    return Err("job_types: \"boot\" needs the [boot] table (the boot image store and boot service)".into())
                }
                other => {
                    return Err(format!(
                        "job_types: \"{other}\" jobs are the composer's; a worker takes \"build\" and \"boot\""
                    ))
                }
            }
        }
        for (upload_type, target) in &self.targets {
            if !serves(target.kind()).contains(&upload_type.as_str()) {
                return Err(format!(
                    "targets.{upload_type}: a {} target cannot serve uploads of type {upload_type:?} (it serves {})",
                    target.kind(),
                    serves(target.kind()).join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<WorkerConfig, String> {
        Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn executor_log_format_and_job_types_keep_their_toml_shape() {
        let c = parse("").unwrap();
        assert_eq!(c.executor, Executor::Builtin);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.job_types, vec![JobKind::Build]);
        let c = parse(
            "executor = \"/usr/bin/osbuild\"\nlog_format = \"json\"\njob_types = [\"build\"]\n",
        )
        .unwrap();
        assert_eq!(c.executor, Executor::Path("/usr/bin/osbuild".into()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            parse("executor = \"builtin\"").unwrap().executor,
            Executor::Builtin
        );
        // A typo is refused when the configuration is read, not at the first job.
        assert!(parse("log_format = \"yaml\"").is_err());
        assert!(parse("job_types = [\"upload\"]").is_err());
    }
}
