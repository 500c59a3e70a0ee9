//! A real OpenID provider for tests: panva's `oidc-provider` on Node
//! (`testsupport/oidc/provider.mjs`), on a loopback port, with fresh signing
//! keys per run. It issues JWT access tokens for one audience by the client
//! credentials grant (each client's claims in its tokens) and by the device
//! authorization grant (the public client [`DEVICE_CLIENT_ID`], a configured
//! account approved or denied through a test-only route instead of a
//! browser: [`OidcProvider::approve`], [`OidcProvider::deny`]; with
//! `offline_access` in its scope, a refresh token too).
//!
//! `oidc-provider` is found in `$KILN_TOOLS_DIR/oidc/node_modules` (default
//! `~/.cache/kiln-tools`), where `tools/test.sh` installs it; `node` in the
//! tools' `bin/`, then on `$PATH`. Either missing is an error, not a skip.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::storage::{find_tool, spawn_watchdog, tools_dir};
use crate::Result;

/// The scopes the audience's resource server defines; a token carries those
/// it was asked for.
pub const RESOURCE_SCOPES: &str = "kiln:read kiln:compose kiln:blueprint kiln:admin";

/// The public client (no secret) that runs the device flow, as kiln's CLI would.
pub const DEVICE_CLIENT_ID: &str = "kiln-cli";

/// The `oidc-provider` release `tools/test.sh` installs (see `oidc/README.md`).
pub const OIDC_PROVIDER_VERSION: &str = "8.8.1";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A confidential client that gets tokens by client credentials
/// (`client_secret_basic`). `claims` (a JSON object, or null) are added to
/// each of its access tokens, e.g. `{"org_id": "tenant-a"}`; the registered
/// claims (`iss`, `sub`, `aud`, `exp`, ...) are the provider's.
#[derive(Debug, Clone, Serialize)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub claims: Value,
}

impl OidcClient {
    pub fn new(client_id: &str, client_secret: &str, claims: Value) -> OidcClient {
        OidcClient {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            claims,
        }
    }
}

/// An end-user for the device flow: its tokens' `sub` is `account_id`, and
/// `claims` (a JSON object, or null) are added to its access tokens and
/// returned as its ID token claims.
#[derive(Debug, Clone)]
pub struct OidcAccount {
    pub account_id: String,
    pub claims: Value,
}

impl OidcAccount {
    pub fn new(account_id: &str, claims: Value) -> OidcAccount {
        OidcAccount {
            account_id: account_id.to_string(),
            claims,
        }
    }
}

/// A token endpoint's answer as it came: for tests of refusals.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub status: u16,
    pub body: Value,
}

/// The configuration `provider.mjs` reads from `KILN_OIDC_CONFIG`.
#[derive(Serialize)]
struct ProviderConfig<'a> {
    port: u16,
    audience: &'a str,
    resource: &'a str,
    scopes: &'a str,
    clients: &'a [OidcClient],
    device_client_id: &'a str,
    accounts: BTreeMap<&'a str, AccountConfig<'a>>,
    extra_keys: &'a [Value],
}

#[derive(Serialize)]
struct AccountConfig<'a> {
    claims: &'a Value,
}

/// A running provider; the Node process is killed when this is dropped (or,
/// failing that, when the test process exits).
pub struct OidcProvider {
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
    issuer: String,
    audience: String,
    resource: String,
    secrets: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider whose access tokens have `aud` = `audience`, with
    /// `clients` for the client credentials grant and `accounts` for the
    /// device flow. Returns once it serves its discovery document.
    pub fn start(
        audience: &str,
        clients: &[OidcClient],
        accounts: &[OidcAccount],
    ) -> Result<OidcProvider> {
        OidcProvider::start_with_keys(audience, clients, accounts, &[])
    }

    /// [`OidcProvider::start`], with `extra_keys` (private JWKs with a `kid`,
    /// e.g. an ES256 key a test made) published in the provider's JWKS
    /// beside its own. Tokens the provider issues are still signed with its
    /// own RSA key; a test signs with an extra key to make a token whose
    /// signature verifies but whose claims are wrong (expired, another
    /// issuer or audience), which the provider would never issue.
    pub fn start_with_keys(
        audience: &str,
        clients: &[OidcClient],
        accounts: &[OidcAccount],
        extra_keys: &[Value],
    ) -> Result<OidcProvider> {
        for c in clients {
            check_claims(&c.claims, &format!("client {}", c.client_id))?;
        }
        for a in accounts {
            check_claims(&a.claims, &format!("account {}", a.account_id))?;
        }
        let modules = node_modules()?;
        let node = find_tool("node", "apt-get install nodejs")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        let resource = resource_indicator(audience);
        let config = ProviderConfig {
            // The script binds port 0 and reports the port in its READY line:
            // no window in which another process could take it.
            port: 0,
            audience,
            resource: &resource,
            scopes: RESOURCE_SCOPES,
            clients,
            device_client_id: DEVICE_CLIENT_ID,
            accounts: accounts
                .iter()
                .map(|a| (a.account_id.as_str(), AccountConfig { claims: &a.claims }))
                .collect(),
            extra_keys,
        };
        let config = serde_json::to_string(&config)
            .map_err(|e| format!("serialising the provider configuration: {e}"))?;

        let dir = tempfile::Builder::new()
            .prefix("kiln-oidc-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let log_path = dir.path().join("provider.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let mut child = Command::new(&node)
            .arg(&script)
            .env("KILN_OIDC_MODULES", &modules)
            .env("KILN_OIDC_CONFIG", &config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {} {}: {e}", node.display(), script.display()))?;
        spawn_watchdog(child.id())?;
        let stdout = child.stdout.take();

        let http = reqwest::Client::builder()
            .no_proxy()
            // Tests run each in its own runtime; a pooled connection must
            // not outlive the runtime that opened it.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let mut provider = OidcProvider {
            child: Mutex::new(Some(child)),
            dir,
            issuer: String::new(),
            audience: audience.to_string(),
            resource,
            secrets: clients
                .iter()
                .map(|c| (c.client_id.clone(), c.client_secret.clone()))
                .collect(),
            http,
        };
        provider.issuer = provider.wait_ready(stdout)?;
        Ok(provider)
    }

    /// Reads the script's stdout until `READY <issuer>`; keeps draining it
    /// afterwards on the same thread so the script never blocks on a pipe.
    fn wait_ready(&self, stdout: Option<std::process::ChildStdout>) -> Result<String> {
        let stdout = stdout.ok_or("the provider's stdout was not captured")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(issuer) = line.strip_prefix("READY ") {
                        let _ = tx.send(Some(issuer.trim().to_string()));
                        sent = true;
                    }
                }
            }
            if !sent {
                let _ = tx.send(None);
            }
        });
        let started = Instant::now();
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(issuer)) => Ok(issuer),
            Ok(None) => {
                let status = self.wait_exit(Duration::from_secs(2));
                Err(format!(
                    "the OpenID provider exited ({status}) before it was ready; its stderr:\n{}",
                    self.log()
                ))
            }
            Err(_) => {
                self.stop();
                Err(format!(
                    "the OpenID provider was not ready within {:?}; its stderr:\n{}",
                    started.elapsed(),
                    self.log()
                ))
            }
        }
    }

    fn wait_exit(&self, limit: Duration) -> String {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(mut guard) = self.child.lock() {
                if let Some(status) = guard.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return status.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "still running".into()
    }

    /// `http://127.0.0.1:<port>`, the tokens' `iss`.
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The access tokens' `aud`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The resource indicator (RFC 8707) of the audience: the audience
    /// itself when it is an absolute URI, else `urn:<audience>`, since
    /// `oidc-provider` only takes absolute URIs.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The JWKS URL, as the discovery document names it.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The provider's public keys (an RS256 key, which signs the tokens, and
    /// an ES256 one), each with its `kid`.
    pub async fn jwks(&self) -> Result<Value> {
        self.get_json(&self.jwks_uri()).await
    }

    /// The discovery document, `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Result<Value> {
        self.get_json(&format!("{}/.well-known/openid-configuration", self.issuer))
            .await
    }

    /// An access token (a JWT for the audience) for a configured client, by
    /// client credentials, with no scope.
    pub async fn token(&self, client_id: &str) -> Result<String> {
        self.client_token(client_id, None).await
    }

    /// As [`OidcProvider::token`], asking for `scope` (space-separated, of
    /// [`RESOURCE_SCOPES`]): the token's `scope` claim.
    pub async fn token_with_scope(&self, client_id: &str, scope: &str) -> Result<String> {
        self.client_token(client_id, Some(scope)).await
    }

    async fn client_token(&self, client_id: &str, scope: Option<&str>) -> Result<String> {
        let secret = self.secrets.get(client_id).ok_or_else(|| {
            format!("client {client_id} is not one this provider was started with")
        })?;
        let response = self.token_request(client_id, secret, scope).await?;
        access_token(response, &format!("client credentials for {client_id}"))
    }

    /// The client credentials request as it is made, whatever the answer:
    /// for tests of a wrong secret or an unknown client (401 `invalid_client`).
    pub async fn token_request(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("resource", self.resource.as_str()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let request = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(form_encode(client_id), Some(form_encode(client_secret)))
            .form(&form);
        self.send(request).await
    }

    /// An access token for `account_id` by the device flow, with no scope:
    /// the device authorization request, its approval through the test-only
    /// route, then the token request. The token's `sub` is the account.
    pub async fn device_token(&self, account_id: &str) -> Result<String> {
        self.device_token_with_scope(account_id, "").await
    }

    /// As [`OidcProvider::device_token`], asking for `scope` (space-separated,
    /// of [`RESOURCE_SCOPES`]).
    pub async fn device_token_with_scope(&self, account_id: &str, scope: &str) -> Result<String> {
        let scope = format!("openid {scope}");
        let request = self
            .http
            .post(format!("{}/device/auth", self.issuer))
            .form(&[
                ("client_id", DEVICE_CLIENT_ID),
                ("scope", scope.trim()),
                ("resource", &self.resource),
            ]);
        let started = self.send(request).await?;
        if started.status != 200 {
            return Err(format!(
                "device authorization answered {}: {}",
                started.status, started.body
            ));
        }
        let field = |name: &str| {
            started.body[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("device authorization without {name}: {}", started.body))
        };
        let device_code = field("device_code")?;
        let user_code = field("user_code")?;
        self.approve(&user_code, account_id).await?;

        // The approval is complete when its route answers; polling only
        // covers a slow store.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = self.http.post(format!("{}/token", self.issuer)).form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", &device_code),
                ("client_id", DEVICE_CLIENT_ID),
                ("resource", &self.resource),
            ]);
            let response = self.send(request).await?;
            if response.body["error"] == "authorization_pending" && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return access_token(response, &format!("the device flow for {account_id}"));
        }
    }

    /// Approves the pending device code whose user code is `user_code` (as
    /// a device flow client shows it) for `account_id`, as the end-user
    /// would in a browser: through the test-only route `/test/approve`,
    /// which walks the provider's verification page, login and consent.
    /// Once this returns, the client's next token request gets the tokens.
    pub async fn approve(&self, user_code: &str, account_id: &str) -> Result<()> {
        let approval = self
            .http
            .post(format!("{}/test/approve", self.issuer))
            .json(&serde_json::json!({ "user_code": user_code, "account": account_id }));
        let approved = self.send(approval).await?;
        if approved.status != 200 {
            return Err(format!(
                "approving device code {user_code} for {account_id} answered {}: {}",
                approved.status, approved.body
            ));
        }
        Ok(())
    }

    /// Denies the pending device code `user_code`, as the end-user's
    /// "abort" on the verification page would (test-only route
    /// `/test/deny`): the client's next token request is `access_denied`.
    pub async fn deny(&self, user_code: &str) -> Result<()> {
        let denial = self
            .http
            .post(format!("{}/test/deny", self.issuer))
            .json(&serde_json::json!({ "user_code": user_code }));
        let denied = self.send(denial).await?;
        if denied.status != 200 {
            return Err(format!(
                "denying device code {user_code} answered {}: {}",
                denied.status, denied.body
            ));
        }
        Ok(())
    }

    /// Kills the provider at once. Later calls do nothing.
    pub fn stop(&self) {
        if let Ok(mut guard) = self.child.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// What the provider wrote on stderr (errors it met, one a line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }

    async fn get_json(&self, url: &str) -> Result<Value> {
        let response = self.send(self.http.get(url)).await?;
        if response.status != 200 {
            return Err(format!(
                "GET {url} answered {}: {}",
                response.status, response.body
            ));
        }
        Ok(response.body)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<TokenResponse> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("requesting the OpenID provider at {}: {e}", self.issuer))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the OpenID provider's answer: {e}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(TokenResponse { status, body })
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn access_token(response: TokenResponse, what: &str) -> Result<String> {
    match (response.status, response.body["access_token"].as_str()) {
        (200, Some(token)) => Ok(token.to_string()),
        (status, _) => Err(format!("{what} answered {status}: {}", response.body)),
    }
}

/// The claims merged into tokens must be an object (or nothing at all).
fn check_claims(claims: &Value, whose: &str) -> Result<()> {
    match claims {
        Value::Object(_) | Value::Null => Ok(()),
        other => Err(format!(
            "the claims of {whose} must be a JSON object, not {other}"
        )),
    }
}

/// `oidc-provider` wants resource indicators to be absolute URIs; an
/// audience such as `kiln` becomes `urn:kiln`.
fn resource_indicator(audience: &str) -> String {
    let scheme = audience.split_once(':').map(|(s, _)| s).unwrap_or("");
    let is_uri = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if is_uri {
        audience.to_string()
    } else {
        format!("urn:{audience}")
    }
}

/// `client_secret_basic` form-encodes the id and secret before joining
/// them (RFC 6749 §2.3.1); unreserved characters stay as they are.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `node_modules` directory holding `oidc-provider`, at the version the
/// script was written for (its configuration changes between majors).
fn node_modules() -> Result<PathBuf> {
    let dir = tools_dir().join("oidc/node_modules");
    let manifest = dir.join("oidc-provider/package.json");
    let found = std::fs::read(&manifest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|package| package["version"].as_str().map(str::to_string));
    match found {
        Some(version) if version == OIDC_PROVIDER_VERSION => Ok(dir),
        found => Err(format!(
            "oidc-provider {OIDC_PROVIDER_VERSION} not found in {} ({}): run tools/test.sh, \
             which installs it (npm install --prefix {} oidc-provider@{OIDC_PROVIDER_VERSION})",
            dir.display(),
            found.map_or("missing".to_string(), |v| format!("version {v} there")),
            tools_dir().join("oidc").display()
        )),
    }
}

/// An EC P-256 key made with `openssl`, for tokens a test signs itself: the
/// negative cases a provider would never issue (expired, another issuer or
/// audience, a forged signature).
pub struct TestKey {
    /// PKCS#8 DER, what the signer reads.
    pub pkcs8: Vec<u8>,
    /// The public JWK (`kid`, `alg: ES256`, `use: sig`).
    pub jwk: Value,
    /// The same with the private scalar `d`, for a provider to publish
    /// beside its own keys ([`OidcProvider::start_with_keys`]).
    pub private_jwk: Value,
}

impl TestKey {
    pub fn new(kid: &str) -> TestKey {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine as _;
        // genpkey's DER is SEC1: 30 77 02 01 01 04 20 <d: 32 bytes> ...,
        // ending with the public point 04 || x || y; the signer reads PKCS#8.
        let sec1 = openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-outform",
                "DER",
            ],
            b"",
        );
        let pkcs8 = openssl(
            &[
                "pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-outform", "DER",
            ],
            &sec1,
        );
        let point = &sec1[sec1.len() - 65..];
        assert_eq!(point[0], 4, "an uncompressed EC point ends the SEC1 key");
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
        });
        let mut private_jwk = jwk.clone();
        private_jwk["d"] = Value::String(B64.encode(&sec1[7..39]));
        TestKey {
            pkcs8,
            jwk,
            private_jwk,
        }
    }

    /// An ES256 JWT of `claims`, its header naming `kid` (or none).
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .expect("signing with a test key")
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> Vec<u8> {
        openssl(&["pkey", "-inform", "DER", "-pubout"], &self.pkcs8)
    }
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running openssl");
    child
        .stdin
        .take()
        .expect("openssl's stdin")
        .write_all(input)
        .expect("writing to openssl");
    let out = child.wait_with_output().expect("openssl's output");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::{form_encode, resource_indicator};

    #[test]
    fn resource_indicators_are_absolute_uris() {
        assert_eq!(resource_indicator("kiln"), "urn:kiln");
        assert_eq!(
            resource_indicator("https://kiln.example/api"),
            "https://kiln.example/api"
        );
        assert_eq!(resource_indicator("urn:kiln:api"), "urn:kiln:api");
        assert_eq!(resource_indicator("9p:x"), "urn:9p:x");
    }

    #[test]
    fn basic_auth_parts_are_form_encoded() {
        assert_eq!(form_encode("tenant-a_1.~"), "tenant-a_1.~");
        assert_eq!(form_encode("a:b c/é"), "a%3Ab%20c%2F%C3%A9");
    }
}
