//! `composer.toml`: every key has a default that runs on one machine, and
//! every key can be overridden by an environment variable
//! `KILN_COMPOSER_<KEY>`, nested keys joined by `__`
//! (e.g. `KILN_COMPOSER_QUEUE__MAX_RETRIES=5`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use kiln_depsolve::AllowEntry;

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
    /// Largest accepted request body (compose API and worker API). 4 MiB:
    /// a build's result carries its image's SBOM, about 1 KiB per package,
    /// beside the stage logs.
    pub max_body_bytes: usize,
    pub queue: QueueConfig,
    pub retention: RetentionConfig,
    pub jobs: JobsConfig,
    /// The workers' listener (mutual TLS); off until `ca`, `cert` and `key` are set.
    pub worker_api: WorkerApiConfig,
    /// How often loaded repositories are re-read for new packages.
    pub repo_refresh_secs: u64,
    pub repositories: RepositoriesConfig,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// How callers of the compose API are authenticated, and the boot
    /// grants. Without an issuer there is no authentication: the composer
    /// serves loopback only, and every request belongs to the one tenant
    /// `default_channel`.
    pub auth: AuthConfig,
    /// Prometheus metrics on a listener of their own.
    pub metrics: MetricsConfig,
    /// How long a compose status read is reused for `GET /composes/{id}`
    /// (a change of its jobs drops it at once; 0: never reused).
    pub status_cache_secs: u64,
}

/// `[metrics]`: `GET /metrics` (Prometheus text format) on its own
/// listener. Loopback by default: the metrics carry tenant labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Off: no metrics listener.
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8702)),
        }
    }
}

/// `[auth]`: bearer tokens (JWTs) of an OpenID provider, and who may
/// publish boot images to which nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `oidc` (the default when `issuer` is set), `local` (the default
    /// without: no authentication, loopback only), or `none` (no
    /// authentication on any address, on purpose).
    pub mode: Option<AuthMode>,
    /// The provider's issuer URL; its keys are found through OIDC discovery
    /// (`{issuer}/.well-known/openid-configuration`, then `jwks_uri`).
    pub issuer: Option<String>,
    /// What every token's `aud` must contain.
    pub audience: Option<String>,
    /// The tenant is the first of these claims that is a non-empty string.
    pub tenant_claims: Vec<String>,
    /// The claim holding the caller's scopes (`kiln:read`, `kiln:compose`,
    /// `kiln:blueprint`, `kiln:admin`): a space-separated string or a list.
    pub scope_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// A token signed with a key the composer does not know makes it read
    /// the issuer's keys again, at most once per this many seconds.
    pub jwks_min_refresh_secs: u64,
    /// `[[auth.boot_grants]]`: the only way a compose may have a `boot`
    /// target. Without a grant for its tenant, boot delivery is refused.
    pub boot_grants: Vec<BootGrant>,
}

/// What one tenant may publish for nodes to boot. A `boot` target is
/// allowed when one grant of its tenant names its image and every node it
/// selects: its SMD group (`groups`), each xname (`xnames`), each MAC
/// (`macs`) or each NID (`nids`). Names are patterns (`kiln_api::glob`:
/// `*` any run of characters, `?` one); NIDs are numbers or ranges `"a-b"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootGrant {
    pub tenant: String,
    /// Image names (patterns) the tenant may publish.
    pub image_names: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub xnames: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub nids: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: None,
            issuer: None,
            audience: None,
            tenant_claims: vec!["org_id".into(), "tenant".into(), "sub".into()],
            scope_claim: "scope".into(),
            leeway_secs: 60,
            jwks_min_refresh_secs: 30,
            boot_grants: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication, on loopback only.
    Local,
    /// Bearer tokens of `issuer`.
    Oidc,
    /// No authentication on any address.
    None,
}

impl AuthConfig {
    /// `mode`, or what the keys given imply.
    pub fn mode(&self) -> AuthMode {
        match (self.mode, &self.issuer) {
            (Some(m), _) => m,
            (None, Some(_)) => AuthMode::Oidc,
            (None, None) => AuthMode::Local,
        }
    }
}

/// `[repositories]`: which repositories a request may name, and what
/// loading a repository's indexes may cost. A hostile or broken mirror gets
/// a clear error, not the composer's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoriesConfig {
    /// URL prefixes a request's repositories must lie under, each a string
    /// (`"https://mirror.example.org/debian"`, `"file:///srv/repos"`) or a
    /// table `{ prefix = "...", internal = true }` for a host name that
    /// resolves to the cluster's own addresses. The distributions' own
    /// repositories are always allowed; nothing else is by default.
    pub allow: Vec<AllowEntry>,
    /// Largest index file fetched, as served (compressed).
    pub max_fetch_bytes: u64,
    /// Largest index once decompressed.
    pub max_index_bytes: u64,
    /// Time for one fetch, from the request to its last byte.
    pub fetch_timeout_secs: u64,
    /// The most memory the loaded repository indexes may hold together;
    /// the least recently used sets are dropped (and loaded again from the
    /// disk cache when asked for).
    pub cache_budget_bytes: usize,
}

impl Default for RepositoriesConfig {
    fn default() -> Self {
        let d = kiln_depsolve::fetch::FetchLimits::default();
        RepositoriesConfig {
            allow: Vec::new(),
            max_fetch_bytes: d.max_fetch_bytes,
            max_index_bytes: d.max_index_bytes,
            fetch_timeout_secs: d.fetch_timeout.as_secs(),
            cache_budget_bytes: 1 << 30,
        }
    }
}

impl RepositoriesConfig {
    pub fn limits(&self) -> kiln_depsolve::fetch::FetchLimits {
        kiln_depsolve::fetch::FetchLimits {
            max_fetch_bytes: self.max_fetch_bytes,
            max_index_bytes: self.max_index_bytes,
            fetch_timeout: std::time::Duration::from_secs(self.fetch_timeout_secs),
        }
    }
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
    /// Composes not finished this long after they were submitted are
    /// canceled (and later deleted like any finished one).
    pub unfinished_max_age_secs: u64,
    /// How often to delete expired composes.
    pub interval_secs: u64,
}

/// `[worker_api]`: where workers take jobs. Only peers with a client
/// certificate from `ca` whose DNS name matches `allowed_domains` get in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerApiConfig {
    /// Address of the worker API.
    pub listen: SocketAddr,
    /// PEM file of the CA that signs worker certificates.
    pub ca: Option<PathBuf>,
    /// PEM file of the composer's server certificate (and its chain).
    pub cert: Option<PathBuf>,
    /// PEM file of the server certificate's private key.
    pub key: Option<PathBuf>,
    /// PEM file of the CA's certificate revocation list: a worker whose
    /// certificate it lists fails the handshake. Read again when it changes.
    pub crl: Option<PathBuf>,
    /// Worker host names let in: exact names, or `*.domain` for any one
    /// label under `domain`.
    pub allowed_domains: Vec<String>,
    /// What each worker may take. Empty: every worker takes what it asks
    /// for. Otherwise a worker takes only what the first binding naming it
    /// allows, and a worker no binding names takes nothing.
    pub bindings: Vec<WorkerBinding>,
}

/// `[[worker_api.bindings]]`: the jobs a worker certificate may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerBinding {
    /// The certificate's name, or `*.domain` (as in `allowed_domains`).
    pub worker: String,
    /// Job types it may take (`build`, `boot`, `depsolve`, `manifest`); empty: any.
    #[serde(default)]
    pub job_types: Vec<String>,
    /// Tenants (channels) whose jobs it may take; empty: any.
    #[serde(default)]
    pub tenants: Vec<String>,
}

impl Default for WorkerApiConfig {
    fn default() -> Self {
        WorkerApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8701)),
            ca: None,
            cert: None,
            key: None,
            crl: None,
            allowed_domains: Vec::new(),
            bindings: Vec::new(),
        }
    }
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
            max_body_bytes: 4 << 20,
            queue: QueueConfig::default(),
            retention: RetentionConfig::default(),
            jobs: JobsConfig::default(),
            worker_api: WorkerApiConfig::default(),
            repo_refresh_secs: 3600,
            repositories: RepositoriesConfig::default(),
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            status_cache_secs: 1,
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
            unfinished_max_age_secs: 3 * 24 * 3600,
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

    /// Refuses what would serve the compose API unauthenticated beyond this
    /// machine, and an `[auth]` that cannot authenticate anyone.
    pub fn check_auth(&self) -> Result<(), String> {
        let a = &self.auth;
        match a.mode() {
            AuthMode::Local if !self.listen.ip().is_loopback() => Err(format!(
                "listen = \"{}\" is not a loopback address and there is no [auth] issuer: \
                 configure [auth] issuer and audience, or set auth.mode = \"none\" \
                 to serve unauthenticated on purpose",
                self.listen
            )),
            AuthMode::Oidc => {
                let issuer = a.issuer.as_deref().unwrap_or("");
                if issuer.is_empty() || a.audience.as_deref().unwrap_or("").is_empty() {
                    return Err("[auth] needs issuer and audience (or mode = \"none\")".into());
                }
                let url = url::Url::parse(issuer).map_err(|e| format!("[auth] issuer: {e}"))?;
                let loopback = match url.host() {
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                };
                if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                    return Err(format!(
                        "[auth] issuer {issuer:?} must be https:// (http only on loopback)"
                    ));
                }
                if a.tenant_claims.is_empty() {
                    return Err("[auth] tenant_claims is empty".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("kiln.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // figment::Jail serialises tests that change the environment and cwd;
    // its closure's error type is figment's, large or not.
    #[test]
    #[allow(clippy::result_large_err)]
    fn worker_api_keys_come_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "composer.toml",
                r#"
                [worker_api]
                ca = "/etc/kiln/certs/ca.pem"
                cert = "/etc/kiln/certs/composer.pem"
                key = "/etc/kiln/certs/composer.key"
                allowed_domains = ["worker1", "*.cluster.example"]
                "#,
            )?;
            jail.set_env("KILN_COMPOSER_WORKER_API__LISTEN", "0.0.0.0:9701");
            let c = ComposerConfig::load(Some(Path::new("composer.toml")))
                .map_err(|e| e.to_string())?;
            assert_eq!(c.worker_api.listen, SocketAddr::from(([0, 0, 0, 0], 9701)));
            assert_eq!(
                c.worker_api.ca.as_deref(),
                Some(Path::new("/etc/kiln/certs/ca.pem"))
            );
            assert_eq!(
                c.worker_api.allowed_domains,
                vec!["worker1".to_owned(), "*.cluster.example".to_owned()]
            );
            jail.set_env(
                "KILN_COMPOSER_WORKER_API__ALLOWED_DOMAINS",
                r#"["w2.example"]"#,
            );
            let c = ComposerConfig::load(Some(Path::new("composer.toml")))
                .map_err(|e| e.to_string())?;
            assert_eq!(c.worker_api.allowed_domains, vec!["w2.example".to_owned()]);
            Ok(())
        });
    }

    #[test]
    fn the_embedded_default_has_no_worker_certificates() {
        let c = ComposerConfig::default();
        assert_eq!(
            c.worker_api.listen,
            SocketAddr::from(([127, 0, 0, 1], 8701))
        );
        assert!(c.worker_api.ca.is_none() && c.worker_api.cert.is_none());
    }
}
