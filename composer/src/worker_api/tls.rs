//! TLS of the worker listener: TLS 1.3 only, a client certificate from the
//! configured CA required, and its DNS name one of `allowed_domains`.
//!
//! The name is checked inside the handshake (a [`ClientCertVerifier`]
//! wrapping webpki's), so a peer outside `allowed_domains` gets a TLS alert
//! and never reaches an HTTP handler: no code path can hand it a job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::config::WorkerApiConfig;

#[derive(Debug, thiserror::Error)]
pub enum WorkerTlsError {
    #[error(
        "worker_api.{missing} is not set while other certificate keys are: \
         set ca, cert and key together, or none of them"
    )]
    Incomplete { missing: &'static str },
    #[error("reading worker_api.{key} ({}): {source}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("worker_api.ca ({}): {source}", path.display())]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("worker_api.ca ({}): {source}", path.display())]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("worker_api.cert and worker_api.key: {0}")]
    ServerCert(rustls::Error),
    #[error(
        "worker_api.allowed_domains is empty: no worker could take a job; \
         name the workers' host names or *.domain patterns"
    )]
    NoAllowedDomains,
    #[error(
        "worker_api.allowed_domains[{index}] {pattern:?} is neither a host name \
         nor a *.domain pattern"
    )]
    BadPattern { index: usize, pattern: String },
}

/// `allowed_domains`, checked once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDomains(Vec<DomainPattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum DomainPattern {
    /// Exactly this host name.
    Exact(String),
    /// `*.domain`: one label, then `.domain` (kept with its leading dot). One
    /// label, as in TLS wildcards, so `*.example` does not admit every host
    /// of every subdomain.
    OneLabelUnder(String),
}

impl AllowedDomains {
    pub fn parse(patterns: &[String]) -> Result<AllowedDomains, WorkerTlsError> {
        if patterns.is_empty() {
            return Err(WorkerTlsError::NoAllowedDomains);
        }
        let mut out = Vec::with_capacity(patterns.len());
        for (index, raw) in patterns.iter().enumerate() {
            let p = raw.trim().to_ascii_lowercase();
            let bad = || WorkerTlsError::BadPattern {
                index,
                pattern: raw.clone(),
            };
            match p.strip_prefix("*.") {
                Some(domain) if is_host_name(domain) => {
                    out.push(DomainPattern::OneLabelUnder(format!(".{domain}")))
                }
                Some(_) => return Err(bad()),
                None if is_host_name(&p) => out.push(DomainPattern::Exact(p)),
                None => return Err(bad()),
            }
        }
        Ok(AllowedDomains(out))
    }

    /// Whether a (non-wildcard) host name from a certificate is let in.
    pub fn permits(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.0.iter().any(|p| match p {
            DomainPattern::Exact(n) => *n == name,
            DomainPattern::OneLabelUnder(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        })
    }

    /// The worker's name: the first DNS name of the certificate's SANs that is
    /// allowed. Wildcard names in a client certificate name no one host, so
    /// they never count.
    pub fn worker_name(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        let found = cert
            .valid_dns_names()
            .filter(|n| !n.starts_with('*'))
            .find(|n| self.permits(n))
            .map(str::to_ascii_lowercase);
        found
    }
}

/// Letters, digits and hyphens in dot-separated labels.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// webpki's chain verification against the CA, then the name check.
#[derive(Debug)]
struct AllowedWorkerVerifier {
    chain: ChainVerifier,
    allowed: AllowedDomains,
}

/// webpki's chain check against the CA, with the certificate revocation
/// list of `worker_api.crl` when there is one. The list is read again when
/// its file changes (checked at each handshake, by modification time and
/// size); a list that cannot be read keeps the previous one in force.
struct ChainVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    ca: PathBuf,
    crl: Option<PathBuf>,
    /// The CA's names, offered to clients (the same whatever the list).
    hints: Vec<DistinguishedName>,
    current: std::sync::RwLock<(Arc<dyn ClientCertVerifier>, Option<CrlStamp>)>,
}

type CrlStamp = (std::time::SystemTime, u64);

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainVerifier")
            .field("ca", &self.ca)
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

impl ChainVerifier {
    fn new(
        roots: RootCertStore,
        provider: Arc<rustls::crypto::CryptoProvider>,
        ca: &Path,
        crl: Option<&Path>,
    ) -> Result<ChainVerifier, WorkerTlsError> {
        let roots = Arc::new(roots);
        let stamp = crl.and_then(crl_stamp);
        let verifier = build_chain(&roots, &provider, ca, crl)?;
        Ok(ChainVerifier {
            hints: verifier.root_hint_subjects().to_vec(),
            roots,
            provider,
            ca: ca.to_owned(),
            crl: crl.map(Path::to_owned),
            current: std::sync::RwLock::new((verifier, stamp)),
        })
    }

    /// The verifier in force, after reading the list again if it changed.
    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        let (verifier, stamp) = match self.current.read() {
            Ok(c) => (c.0.clone(), c.1),
            Err(p) => (p.get_ref().0.clone(), p.get_ref().1),
        };
        let Some(crl) = &self.crl else {
            return verifier;
        };
        let now = crl_stamp(crl);
        if now == stamp {
            return verifier;
        }
        match build_chain(&self.roots, &self.provider, &self.ca, Some(crl)) {
            Ok(fresh) => {
                tracing::info!(crl = %crl.display(), "read the worker certificate revocation list again");
                if let Ok(mut c) = self.current.write() {
                    *c = (fresh.clone(), now);
                }
                fresh
            }
            Err(e) => {
                tracing::error!(error = %e, "reading worker_api.crl again; the previous list stays in force");
                verifier
            }
        }
    }
}

fn crl_stamp(path: &Path) -> Option<CrlStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn build_chain(
    roots: &Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    ca: &Path,
    crl: Option<&Path>,
) -> Result<Arc<dyn ClientCertVerifier>, WorkerTlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if let Some(crl) = crl {
        let pem = |source| WorkerTlsError::Pem {
            key: "crl",
            path: crl.to_owned(),
            source,
        };
        let lists = CertificateRevocationListDer::pem_file_iter(crl)
            .map_err(pem)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem)?;
        builder = builder.with_crls(lists);
    }
    builder.build().map_err(|source| WorkerTlsError::Verifier {
        path: crl.unwrap_or(ca).to_owned(),
        source,
    })
}

impl ClientCertVerifier for AllowedWorkerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints are the CA's, whatever the revocation list.
        self.chain.hints.as_slice()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .get()
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.allowed.worker_name(end_entity) {
            Some(_) => Ok(verified),
            None => {
                let presented: Vec<String> = webpki::EndEntityCert::try_from(end_entity)
                    .map(|c| c.valid_dns_names().map(str::to_owned).collect())
                    .unwrap_or_default();
                tracing::warn!(
                    names = ?presented,
                    "refused a worker certificate: no DNS name in allowed_domains"
                );
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.get().supported_verify_schemes()
    }
}

/// The worker listener's TLS, ready to accept.
#[derive(Clone)]
pub struct WorkerTls {
    pub server: Arc<ServerConfig>,
    pub allowed: AllowedDomains,
    verifier: Arc<AllowedWorkerVerifier>,
}

impl WorkerTls {
    /// Whether a certificate that passed the handshake still would: the
    /// chain and name against the CA and the revocation list in force now.
    /// Checked on every request, so a worker revoked while its connection
    /// stays open is refused from its next request on.
    pub fn still_valid(&self, cert: &CertificateDer<'_>) -> bool {
        self.verifier
            .verify_client_cert(cert, &[], UnixTime::now())
            .is_ok()
    }
}

/// `None` when the configuration names no certificates: the embedded default
/// runs without a worker listener. Half a configuration is an error.
pub fn load(config: &WorkerApiConfig) -> Result<Option<WorkerTls>, WorkerTlsError> {
    let (ca, cert, key) = match (&config.ca, &config.cert, &config.key) {
        (None, None, None) => return Ok(None),
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        (None, _, _) => return Err(WorkerTlsError::Incomplete { missing: "ca" }),
        (_, None, _) => return Err(WorkerTlsError::Incomplete { missing: "cert" }),
        (_, _, None) => return Err(WorkerTlsError::Incomplete { missing: "key" }),
    };
    let allowed = AllowedDomains::parse(&config.allowed_domains)?;
    for (index, b) in config.bindings.iter().enumerate() {
        AllowedDomains::parse(std::slice::from_ref(&b.worker)).map_err(|_| {
            WorkerTlsError::BadPattern {
                index,
                pattern: format!("bindings: {}", b.worker),
            }
        })?;
    }

    let mut roots = RootCertStore::empty();
    for c in certificates("ca", ca)? {
        roots.add(c).map_err(|source| WorkerTlsError::BadCa {
            path: ca.clone(),
            source,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = ChainVerifier::new(roots, provider.clone(), ca, config.crl.as_deref())?;
    let verifier = Arc::new(AllowedWorkerVerifier {
        chain,
        allowed: allowed.clone(),
    });

    let server_chain = certificates("cert", cert)?;
    let server_key = PrivateKeyDer::from_pem_file(key).map_err(|source| WorkerTlsError::Pem {
        key: "key",
        path: key.clone(),
        source,
    })?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(WorkerTlsError::ServerCert)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(server_chain, server_key)
        .map_err(WorkerTlsError::ServerCert)?;
    // The worker protocol is small JSON exchanges: HTTP/1.1 is enough.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(WorkerTls {
        server: Arc::new(server),
        allowed,
        verifier,
    }))
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, WorkerTlsError> {
    let pem = |source| WorkerTlsError::Pem {
        key,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &[&str]) -> AllowedDomains {
        AllowedDomains::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_names_and_one_label_wildcards() {
        let a = allowed(&["worker1", "*.Cluster.example"]);
        assert!(a.permits("worker1"));
        assert!(a.permits("WORKER1"));
        assert!(!a.permits("worker2"));
        assert!(!a.permits("worker1.evil"));
        assert!(a.permits("node7.cluster.example"));
        assert!(!a.permits("cluster.example"));
        assert!(!a.permits(".cluster.example"));
        assert!(!a.permits("a.b.cluster.example"));
        assert!(!a.permits("node7.xcluster.example"));
    }

    #[test]
    fn patterns_are_checked_at_start() {
        let parse = |p: &[&str]| {
            AllowedDomains::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(matches!(parse(&[]), Err(WorkerTlsError::NoAllowedDomains)));
        for bad in ["*", "*.", "a.*.example", "worker 1", "-w.example", "a..b"] {
            match parse(&["ok.example", bad]) {
                Err(WorkerTlsError::BadPattern { index: 1, .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn no_certificates_means_no_listener_and_half_of_them_is_an_error() {
        let mut c = WorkerApiConfig::default();
        assert!(load(&c).unwrap().is_none());
        c.ca = Some("/nonexistent/ca.pem".into());
        c.key = Some("/nonexistent/composer.key".into());
        match load(&c) {
            Err(WorkerTlsError::Incomplete { missing: "cert" }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
