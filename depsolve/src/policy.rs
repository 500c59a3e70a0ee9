//! Which repository URLs may be fetched at all.
//!
//! A repository URL in a compose request is chosen by a caller on the
//! network, and fetching it is done from inside the cluster: without a
//! policy, a request could make the composer read its own API, a cloud
//! metadata service or any file on its disk. A [`RepoPolicy`] is a list of
//! allowed URL prefixes; a URL is fetched only when
//!
//! - its scheme is `http`, `https` or `file`, and it has no user name,
//!   password, query or fragment;
//! - after normalisation (`..` resolved, default ports dropped, host
//!   lower-cased) it lies under an allowed prefix: same scheme, host and
//!   port, and a path that continues the prefix's at a `/`;
//! - every address its host stands for is public (not loopback,
//!   unspecified, link-local, private, unique-local, shared, multicast or
//!   broadcast, also when written as an IPv4-mapped IPv6 address, in
//!   decimal or in hex), unless the prefix it lies under allows internal
//!   addresses: a prefix whose host is itself such an address does, and
//!   so does one marked `internal`.
//!
//! The address check is made on the addresses the connection will use:
//! [`RepoPolicy::resolver`] is the HTTP client's resolver, so a host name
//! cannot pass a check and then resolve elsewhere, and
//! [`RepoPolicy::redirects`] puts every redirect through the same policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use url::{Host, Url};

/// Why a URL may not be fetched. The message names the URL as given (the
/// caller's own input) and never anything fetched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("{url:?} is not a URL: {detail}")]
    Malformed { url: String, detail: String },
    #[error("{url:?}: scheme {scheme:?} is not fetched (http, https or file)")]
    Scheme { url: String, scheme: String },
    #[error("{url:?}: a repository URL carries no {part}")]
    Part { url: String, part: &'static str },
    #[error("{url:?} is not under an allowed repository prefix")]
    NotAllowed { url: String },
    #[error("{url:?}: {address} is an internal address, which no allowed prefix opens")]
    Internal { url: String, address: IpAddr },
}

/// One allowed prefix, as written in the configuration: a URL string, or
/// a table that also opens internal addresses for host names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AllowEntry {
    Prefix(String),
    Table {
        prefix: String,
        /// The prefix's host may resolve to internal addresses (a mirror
        /// on the cluster's own network).
        #[serde(default)]
        internal: bool,
    },
}

impl AllowEntry {
    fn parts(&self) -> (&str, bool) {
        match self {
            AllowEntry::Prefix(p) => (p, false),
            AllowEntry::Table { prefix, internal } => (prefix, *internal),
        }
    }
}

#[derive(Debug, Clone)]
struct Prefix {
    scheme: String,
    host: Option<Host<String>>,
    port: Option<u16>,
    /// Always ends with `/`.
    path: String,
    internal: bool,
}

impl Prefix {
    fn parse(entry: &AllowEntry) -> Result<Prefix, PolicyError> {
        let (text, internal) = entry.parts();
        let url = parse(text)?;
        let mut path = url.path().to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        let internal = internal
            || match url.host() {
                Some(Host::Ipv4(a)) => internal_v4(a),
                Some(Host::Ipv6(a)) => internal_v6(a),
                // A file path is on the composer's own disk: naming it
                // is the explicit opening.
                None => true,
                Some(Host::Domain(_)) => false,
            };
        Ok(Prefix {
            scheme: url.scheme().to_owned(),
            host: url.host().map(|h| h.to_owned()),
            port: url.port(),
            path,
            internal,
        })
    }

    fn contains(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme
            || url.host().map(|h| h.to_owned()) != self.host
            || url.port() != self.port
        {
            return false;
        }
        let path = url.path();
        path.starts_with(&self.path) || format!("{path}/") == self.path
    }
}

/// The repositories a fetcher may read (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct RepoPolicy {
    prefixes: Vec<Prefix>,
}

impl RepoPolicy {
    /// A policy allowing `entries`. A malformed entry is an error naming it.
    pub fn new(entries: &[AllowEntry]) -> Result<RepoPolicy, PolicyError> {
        let prefixes = entries
            .iter()
            .map(Prefix::parse)
            .collect::<Result<_, _>>()?;
        Ok(RepoPolicy { prefixes })
    }

    /// Exactly these repositories, internal addresses included: for callers
    /// that name their repositories themselves (a configuration file, a
    /// command line), where the names are trusted but redirects are not.
    pub fn exactly(urls: impl IntoIterator<Item = impl Into<String>>) -> RepoPolicy {
        // A URL that does not parse cannot be fetched either; leave it out
        // and let the fetch report it.
        let prefixes = urls
            .into_iter()
            .filter_map(|u| {
                Prefix::parse(&AllowEntry::Table {
                    prefix: u.into(),
                    internal: true,
                })
                .ok()
            })
            .collect();
        RepoPolicy { prefixes }
    }

    /// Checks `url` before anything is fetched from it: its form, its
    /// prefix, and its host when that is an address. Host names are
    /// checked again on the addresses they resolve to ([`Self::resolver`]).
    pub fn check(&self, url: &str) -> Result<Url, PolicyError> {
        let parsed = parse(url)?;
        let prefix = self
            .prefixes
            .iter()
            .find(|p| p.contains(&parsed))
            .ok_or_else(|| PolicyError::NotAllowed { url: url.into() })?;
        if !prefix.internal {
            let address = match parsed.host() {
                Some(Host::Ipv4(a)) => Some(IpAddr::V4(a)),
                Some(Host::Ipv6(a)) => Some(IpAddr::V6(a)),
                _ => None,
            };
            if let Some(address) = address.filter(|a| is_internal(*a)) {
                return Err(PolicyError::Internal {
                    url: url.into(),
                    address,
                });
            }
        }
        Ok(parsed)
    }

    /// [`Self::check`], then the addresses the URL's host name resolves to
    /// now, so a request naming a host that leads inside is refused when it
    /// is made rather than when its fetch starts. The resolver checks again
    /// at every connection, so a name whose addresses change later still
    /// cannot reach an internal one. A name that does not resolve (or not
    /// within `timeout`) passes here: its fetch reports that.
    pub async fn check_resolved(
        &self,
        url: &str,
        timeout: std::time::Duration,
    ) -> Result<Url, PolicyError> {
        let parsed = self.check(url)?;
        let Some(Host::Domain(name)) = parsed.host() else {
            return Ok(parsed);
        };
        if self.internal_hosts().iter().any(|h| h == name) {
            return Ok(parsed);
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let lookup = tokio::net::lookup_host((name, port));
        if let Ok(Ok(addresses)) = tokio::time::timeout(timeout, lookup).await {
            for a in addresses {
                if is_internal(a.ip()) {
                    return Err(PolicyError::Internal {
                        url: url.into(),
                        address: a.ip(),
                    });
                }
            }
        }
        Ok(parsed)
    }

    /// Host names whose addresses may be internal: those of prefixes that
    /// allow it.
    fn internal_hosts(&self) -> Vec<String> {
        self.prefixes
            .iter()
            .filter(|p| p.internal)
            .filter_map(|p| match &p.host {
                Some(Host::Domain(d)) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    /// The HTTP client's resolver: a host name whose addresses include an
    /// internal one fails to resolve, unless an `internal` prefix names it.
    pub fn resolver(&self) -> Arc<impl reqwest::dns::Resolve> {
        Arc::new(CheckedResolver {
            internal_hosts: self.internal_hosts(),
        })
    }

    /// The HTTP client's redirect policy: at most `max` redirects, each to
    /// a URL this policy allows.
    pub fn redirects(self: &Arc<Self>, max: usize) -> reqwest::redirect::Policy {
        let policy = Arc::clone(self);
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(format!("more than {max} redirects"));
            }
            match policy.check(attempt.url().as_str()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(format!("redirect refused: {e}")),
            }
        })
    }
}

fn parse(text: &str) -> Result<Url, PolicyError> {
    let url = Url::parse(text).map_err(|e| PolicyError::Malformed {
        url: text.into(),
        detail: e.to_string(),
    })?;
    let part = |part| {
        Err(PolicyError::Part {
            url: text.into(),
            part,
        })
    };
    match url.scheme() {
        "http" | "https" if url.host().is_some() => {}
        "file" if url.host().is_none() => {}
        "file" => return part("host (file URLs are local paths)"),
        "http" | "https" => return part("missing host"),
        other => {
            return Err(PolicyError::Scheme {
                url: text.into(),
                scheme: other.into(),
            })
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Named without what it carries: a password is a secret.
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(PolicyError::Part {
            url: shown.into(),
            part: "user name or password",
        });
    }
    if url.query().is_some() {
        return part("query");
    }
    if url.fragment().is_some() {
        return part("fragment");
    }
    Ok(url)
}

/// Addresses a repository on the public network never has.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => internal_v4(a),
        IpAddr::V6(a) => internal_v6(a),
    }
}

fn internal_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, ..] = a.octets();
    a.is_loopback()
        || a.is_unspecified()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_documentation()
        // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (shared, carrier NAT),
        // 192.0.0.0/24 (protocol assignments), 198.18.0.0/15 (benchmarks),
        // 240.0.0.0/4 (reserved).
        || b0 == 0
        || (b0 == 100 && (64..128).contains(&b1))
        || (b0 == 192 && b1 == 0 && a.octets()[2] == 0)
        || (b0 == 198 && (b1 == 18 || b1 == 19))
        || b0 >= 240
}

fn internal_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // fc00::/7 unique local, fe80::/10 link local, fec0::/10 site local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // ::/96 (IPv4-compatible), 64:ff9b:1::/48 (local NAT64),
        // 2001:db8::/32 (documentation).
        || a.segments()[..6] == [0; 6]
        || (first == 0x64 && a.segments()[1] == 0xff9b && a.segments()[2] == 1)
        || (first == 0x2001 && a.segments()[1] == 0x0db8)
}

struct CheckedResolver {
    internal_hosts: Vec<String>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let internal_ok = self.internal_hosts.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !internal_ok {
                if let Some(a) = addrs.iter().find(|a| is_internal(a.ip())) {
                    let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                        "{host} resolves to the internal address {}, which no allowed prefix opens",
                        a.ip()
                    )
                    .into();
                    return Err(refused);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> RepoPolicy {
        let entries: Vec<AllowEntry> = entries
            .iter()
            .map(|e| AllowEntry::Prefix(e.to_string()))
            .collect();
        RepoPolicy::new(&entries).unwrap()
    }

    #[test]
    fn urls_under_a_prefix_pass_and_others_do_not() {
        let p = policy(&["https://deb.debian.org/debian", "file:///srv/mirror/"]);
        for ok in [
            "https://deb.debian.org/debian",
            "https://deb.debian.org/debian/",
            "https://deb.debian.org/debian/dists/bookworm/Release",
            "https://DEB.debian.org:443/debian/pool/",
            "file:///srv/mirror/rocky/repodata/repomd.xml",
        ] {
            assert!(p.check(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("https://deb.debian.org/debian-evil/", "not under"),
            ("https://deb.debian.org/debian/../etc/", "not under"),
            ("https://deb.debian.org/debian/%2e%2e/x/", "not under"),
            ("http://deb.debian.org/debian/", "not under"),
            ("https://deb.debian.org:8443/debian/", "not under"),
            ("https://deb.debian.org.evil.example/debian/", "not under"),
            ("file:///srv/mirror/../../etc/", "not under"),
            ("file:///srv/mirror-other/", "not under"),
            ("https://u:p@deb.debian.org/debian/", "user name"),
            ("https://deb.debian.org/debian/?a=1", "query"),
            ("https://deb.debian.org/debian/#x", "fragment"),
            ("ftp://deb.debian.org/debian/", "scheme"),
            ("gopher://deb.debian.org/debian/", "scheme"),
            ("file://host/srv/mirror/", "host"),
            ("not a url", "not a URL"),
        ] {
            let e = p.check(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn internal_addresses_need_a_prefix_that_opens_them() {
        // A prefix on a public host never opens an internal one, however
        // the address is spelled.
        let p = policy(&["http://127.0.0.1:8080/repo/", "https://mirror.example/"]);
        assert!(p.check("http://127.0.0.1:8080/repo/dists/").is_ok());
        for spelled in [
            "http://2130706433:8080/repo/",
            "http://0x7f.1:8080/repo/",
            "http://127.1:8080/repo/",
        ] {
            assert!(p.check(spelled).is_ok(), "{spelled} is 127.0.0.1, allowed");
        }
        for (addr, internal) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("151.101.2.132", false),
            ("::1", true),
            ("fe80::1", true),
            ("fd00::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("ff02::1", true),
            ("2a04:4e42::644", false),
        ] {
            assert_eq!(is_internal(addr.parse().unwrap()), internal, "{addr}");
        }
        let open = RepoPolicy::new(&[
            AllowEntry::Prefix("http://[::1]:80/".into()),
            AllowEntry::Prefix("http://169.254.169.254/".into()),
            AllowEntry::Table {
                prefix: "http://mirror.cluster/".into(),
                internal: true,
            },
        ])
        .unwrap();
        assert!(open.check("http://[::1]/x/").is_ok());
        assert!(open.check("http://169.254.169.254/latest/").is_ok());
        assert_eq!(open.internal_hosts(), ["mirror.cluster"]);
        assert!(policy(&["https://mirror.example/"])
            .internal_hosts()
            .is_empty());
    }

    #[test]
    fn exactly_names_the_repositories_and_opens_their_hosts() {
        let p = RepoPolicy::exactly(["http://localhost:3142/debian", "no url"]);
        assert!(p.check("http://localhost:3142/debian/dists/x").is_ok());
        assert!(p.check("http://localhost:3142/other/").is_err());
        assert_eq!(p.internal_hosts(), ["localhost"]);
    }

    #[test]
    fn entries_deserialize_from_strings_or_tables() {
        #[derive(Deserialize)]
        struct C {
            allow: Vec<AllowEntry>,
        }
        let c: C = serde_json::from_str(
            r#"{"allow": ["https://a.example/", {"prefix": "http://m.cluster/", "internal": true}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.allow,
            [
                AllowEntry::Prefix("https://a.example/".into()),
                AllowEntry::Table {
                    prefix: "http://m.cluster/".into(),
                    internal: true
                }
            ]
        );
    }
}
