//! What a login is: the OpenID provider, the client, and what to ask for,
//! read from `login.toml` and `kiln login`'s flags (a flag wins over the
//! file), checked once here into a [`LoginSettings`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The environment variable naming the login's configuration file.
pub(crate) const CONFIG_ENV: &str = "KILN_LOGIN_CONFIG";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A secret others may read is a secret already given away.
    #[error(
        "{path} holds a client secret but its mode is {mode:04o}, open to other users; \
         make it private (chmod 600 {path}) and check whether the secret leaked"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Missing(String),
    #[error("issuer {issuer:?}: {message}")]
    Issuer { issuer: String, message: String },
}

/// `login.toml`: every key is optional here, as a flag may give it.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginFile {
    pub(crate) issuer: Option<String>,
    pub(crate) client_id: Option<String>,
    client_secret: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

impl std::fmt::Debug for LoginFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginFile")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Reads a login configuration file; one that holds a `client_secret` must
/// be readable by its owner only.
pub(crate) fn read_login_file(path: &Path) -> Result<LoginFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let file: LoginFile = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        // toml's message quotes the offending line: never for a secret's.
        message: if text.contains("client_secret") {
            format!("not a login configuration ({})", e.message())
        } else {
            format!("not a login configuration: {e}")
        },
    })?;
    if file.client_secret.is_some() {
        check_private(path)?;
    }
    Ok(file)
}

/// Refuses a file (following links) that anyone but its owner may read or
/// change: the rule ssh has for private keys.
pub(crate) fn check_private(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::NotPrivate {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Reads a client secret file (`--client-secret-file`): one line, private
/// to its owner as a config file with a secret must be.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            message: "the client secret file is empty".into(),
        });
    }
    Ok(Secret::new(secret))
}

/// Where the client secret of a login is read, at login and again at each
/// renewal by client credentials: the cache stores this, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SecretSource {
    /// `client_secret` in this login configuration file.
    Config(PathBuf),
    /// The whole of this file (`--client-secret-file`).
    File(PathBuf),
}

impl SecretSource {
    /// The secret, read again; `issuer` and `client_id` are the login's, so
    /// that a configuration file changed since to name another provider or
    /// client does not send its secret where it does not belong.
    pub(crate) fn read(&self, issuer: &str, client_id: &str) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::File(path) => read_secret_file(path),
            SecretSource::Config(path) => {
                let file = read_login_file(path)?;
                let same_issuer = file
                    .issuer
                    .as_deref()
                    .is_some_and(|i| same_issuer(i, issuer));
                if !same_issuer || file.client_id.as_deref() != Some(client_id) {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        message: format!(
                            "now names another issuer or client than the login \
                             ({issuer}, client {client_id})"
                        ),
                    });
                }
                file.client_secret
                    .map(Secret::new)
                    .ok_or_else(|| ConfigError::Invalid {
                        path: path.clone(),
                        message: "has no client_secret any more".into(),
                    })
            }
        }
    }
}

/// Issuers compare as the provider's discovery document would: exactly,
/// but for a trailing slash a person may or may not have typed.
pub(crate) fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// How the token is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Grant {
    /// A confidential client (a script, a service) with its secret.
    ClientCredentials,
    /// A person approving the login in a browser (RFC 8628).
    DeviceCode,
}

/// A login, complete and checked.
#[derive(Debug)]
pub(crate) struct LoginSettings {
    /// An `https://` URL (plain `http://` only to a loopback address).
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<(Secret, SecretSource)>,
    /// Sent as `resource=` (RFC 8707) on the device and token requests.
    pub(crate) resource: Option<String>,
    /// Sent as `scope=`, as written.
    pub(crate) scope: Option<String>,
    pub(crate) grant: Grant,
}

/// What `kiln login`'s flags say, before the file fills the gaps.
#[derive(Debug, Default)]
pub(crate) struct LoginOverrides {
    pub(crate) issuer: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) resource: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) device: bool,
}

/// `$XDG_CONFIG_HOME/kiln/login.toml`, else `~/.config/kiln/login.toml`.
pub(crate) fn default_config_path() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("kiln/login.toml"))
}

/// An XDG base directory: the variable when it is an absolute path (the
/// specification says to ignore a relative one), else `$HOME/<fallback>`.
pub(crate) fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(fallback))
        })
}

/// The login configuration file to read: the one named (which must exist),
/// else the default one if it exists.
pub(crate) fn config_to_read(named: Option<&Path>) -> Option<PathBuf> {
    match named {
        Some(p) => Some(p.to_owned()),
        None => default_config_path().filter(|p| p.exists()),
    }
}

/// Joins the flags and the file (`config`, if any) into a checked login.
pub(crate) fn settings(
    config: Option<&Path>,
    flags: LoginOverrides,
) -> Result<LoginSettings, ConfigError> {
    let (file, config) = match config {
        Some(path) => (read_login_file(path)?, Some(absolute(path)?)),
        None => (LoginFile::default(), None),
    };
    let where_ = || match &config {
        Some(p) => format!("in {}", p.display()),
        None => match default_config_path() {
            Some(p) => format!("in a login configuration (default {})", p.display()),
            None => "in a login configuration (--login-config)".into(),
        },
    };
    let issuer = flags.issuer.or(file.issuer).ok_or_else(|| {
        ConfigError::Missing(format!(
            "no issuer: give --issuer URL or `issuer = \"https://…\"` {}",
            where_()
        ))
    })?;
    check_issuer(&issuer)?;
    let client_id = flags
        .client_id
        .or(file.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            ConfigError::Missing(format!(
                "no client id: give --client-id ID or `client_id = \"…\"` {}",
                where_()
            ))
        })?;
    let client_secret = match (flags.client_secret_file, file.client_secret, config) {
        (Some(path), _, _) => {
            let secret = read_secret_file(&path)?;
            Some((secret, SecretSource::File(absolute(&path)?)))
        }
        (None, Some(secret), Some(config)) => {
            Some((Secret::new(secret), SecretSource::Config(config)))
        }
        _ => None,
    };
    let grant = if flags.device || client_secret.is_none() {
        Grant::DeviceCode
    } else {
        Grant::ClientCredentials
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Ok(LoginSettings {
        issuer,
        client_id,
        client_secret,
        resource: nonempty(flags.resource.or(file.resource)),
        scope: nonempty(flags.scope.or(file.scope)),
        grant,
    })
}

/// The cache names the secret's file for later renewals, from any directory.
fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })
}

/// Secrets and tokens go to the issuer's endpoints: only over TLS, but for
/// a provider on this machine (tests, a development stack).
pub(crate) fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Issuer {
        issuer: issuer.to_owned(),
        message: message.to_owned(),
    };
    let url = url::Url::parse(issuer).map_err(|e| err(&format!("not a URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("an issuer has no query or fragment"));
    }
    check_endpoint(&url).map_err(|m| err(&m))
}

/// `https://`, or `http://` to a loopback address.
pub(crate) fn check_endpoint(url: &url::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("use https:// (plain http:// only to a loopback address)".into()),
        other => Err(format!("{other}:// is not HTTP")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_secret_only_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            "issuer = \"https://id.example\"\nclient_id = \"ci\"\nclient_secret = \"s3cret\"\n";
        let open = write(dir.path(), "open.toml", text, 0o644);
        let err = read_login_file(&open).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("open.toml"), "{err}");
        assert!(!err.contains("s3cret"));
        let private = write(dir.path(), "private.toml", text, 0o600);
        let s = settings(Some(&private), LoginOverrides::default()).unwrap();
        assert_eq!(s.grant, Grant::ClientCredentials);
        assert!(!format!("{s:?}").contains("s3cret"));
        // Without a secret, the mode is the owner's business.
        let public = write(
            dir.path(),
            "public.toml",
            "issuer = \"https://id.example\"\nclient_id = \"kiln-cli\"\n",
            0o644,
        );
        let s = settings(Some(&public), LoginOverrides::default()).unwrap();
        assert_eq!(s.grant, Grant::DeviceCode);
    }

    #[test]
    fn flags_win_and_device_can_be_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "login.toml",
            "issuer = \"https://a.example\"\nclient_id = \"ci\"\nclient_secret = \"x\"\nscope = \"kiln:read\"\n",
            0o600,
        );
        let s = settings(
            Some(&path),
            LoginOverrides {
                issuer: Some("https://b.example".into()),
                scope: Some("kiln:compose".into()),
                device: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.issuer, "https://b.example");
        assert_eq!(s.scope.as_deref(), Some("kiln:compose"));
        assert_eq!(s.grant, Grant::DeviceCode);
        assert!(s.client_secret.is_some());
    }

    #[test]
    fn a_renewal_does_not_send_the_secret_to_another_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "login.toml",
            "issuer = \"https://evil.example\"\nclient_id = \"ci\"\nclient_secret = \"x\"\n",
            0o600,
        );
        let source = SecretSource::Config(path);
        assert!(source.read("https://id.example", "ci").is_err());
        assert!(source.read("https://evil.example/", "ci").is_ok());
        assert!(source.read("https://evil.example", "other").is_err());
    }

    #[test]
    fn issuers_are_https_but_on_loopback() {
        assert!(check_issuer("https://id.example/realms/hpc").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("http://[::1]:8080").is_ok());
        assert!(check_issuer("http://localhost").is_ok());
        assert!(check_issuer("http://id.example").is_err());
        assert!(check_issuer("ftp://id.example").is_err());
        assert!(check_issuer("https://id.example/?x=1").is_err());
        assert!(check_issuer("id.example").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "l.toml", "isuer = \"https://x\"\n", 0o600);
        let err = read_login_file(&path).unwrap_err().to_string();
        assert!(err.contains("isuer"), "{err}");
    }
}
