//! `kiln login` against a real OpenID provider and a composer with
//! `[auth]`: client credentials and the device flow, the 0600 token cache,
//! its use by `kiln compose` without `--token`, renewal of a token about to
//! expire (client credentials again, or the refresh token), refusals that
//! say why, and no token or secret in any output.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use kiln_testsupport::oidc::{OidcAccount, OidcClient, OidcProvider, DEVICE_CLIENT_ID};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const SCOPES: &str = "kiln:read kiln:compose kiln:blueprint";
const CI_SECRET: &str = "s3cret-of-ci-builder";

/// A provider, a composer that trusts it, and a home for kiln's files.
struct Stack {
    provider: OidcProvider,
    composer: String,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
    /// Every output of every kiln run, to look for tokens in at the end.
    outputs: Vec<String>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Stack {
    async fn start() -> Stack {
        let clients = [OidcClient::new(
            "ci-builder",
            CI_SECRET,
            serde_json::json!({"org_id": "tenant-ci"}),
        )];
        let accounts = [OidcAccount::new("alice", Value::Null)];
        let provider =
            tokio::task::block_in_place(|| OidcProvider::start("kiln", &clients, &accounts))
                .unwrap();
        let (composer, data) = common::composer_trusting(provider.issuer()).await;
        Stack {
            provider,
            composer,
            home: tempfile::tempdir().unwrap(),
            _data: data,
            outputs: Vec::new(),
        }
    }

    /// `kiln` with a home of its own: config in `<home>/config`, cache in
    /// `<home>/cache` (XDG), nothing of the user's environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(KILN);
        cmd.args(args)
            .env("KILN_COMPOSER_URL", &self.composer)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_CACHE_HOME", self.home.path().join("cache"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for var in [
            "KILN_TOKEN",
            "KILN_TOKEN_CACHE",
            "KILN_LOGIN_CONFIG",
            "KILN_LOGIN_ISSUER",
            "KILN_LOGIN_CLIENT_ID",
            "KILN_LOGIN_CLIENT_SECRET_FILE",
            "KILN_LOGIN_RESOURCE",
            "KILN_LOGIN_SCOPE",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn run(&mut self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = self.command(args, env).output().await.unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.outputs.push(format!("{}{}", run.stdout, run.stderr));
        run
    }

    /// The default cache, `$XDG_CACHE_HOME/kiln/token.json`.
    fn cache_path(&self) -> PathBuf {
        self.home.path().join("cache/kiln/token.json")
    }

    /// A private file under the home.
    fn write_private(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.home.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn ci_config(&self) -> String {
        format!(
            "issuer = \"{}\"\nclient_id = \"ci-builder\"\nclient_secret = \"{CI_SECRET}\"\n\
             resource = \"{}\"\nscope = \"{SCOPES}\"\n",
            self.provider.issuer(),
            self.provider.resource()
        )
    }

    /// No token, refresh token or secret in anything kiln printed.
    fn assert_no_secret_shown(&self, secrets: &[String]) {
        for out in &self.outputs {
            for s in secrets.iter().chain([&CI_SECRET.to_string()]) {
                assert!(!out.contains(s.as_str()), "a secret was printed: {out}");
            }
        }
    }
}

fn read_cache(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The cache's one login, with `expires_at` set to `at`.
fn set_expiry(path: &Path, at: &str) {
    let mut cache = read_cache(path);
    cache["logins"][0]["expires_at"] = Value::String(at.into());
    std::fs::write(path, serde_json::to_vec_pretty(&cache).unwrap()).unwrap();
}

fn soon(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn tokens_of(cache: &Value) -> Vec<String> {
    let login = &cache["logins"][0];
    ["access_token", "refresh_token"]
        .iter()
        .filter_map(|k| login[*k].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_login_is_cached_privately_and_used_without_a_token() {
    let mut stack = Stack::start().await;
    // The default configuration file, $XDG_CONFIG_HOME/kiln/login.toml.
    stack.write_private("config/kiln/login.toml", &stack.ci_config());

    let login = stack.run(&["login"], &[]).await;
    assert_eq!(login.code, 0, "{}{}", login.stdout, login.stderr);
    let issuer = stack.provider.issuer();
    assert!(
        login.stdout.starts_with(&format!(
            "logged in to {issuer} as ci-builder, token valid until 20"
        )),
        "{}",
        login.stdout
    );
    assert_eq!(login.stdout.lines().count(), 1, "{}", login.stdout);

    let cache_path = stack.cache_path();
    assert_eq!(mode(&cache_path), 0o600);
    assert_eq!(mode(cache_path.parent().unwrap()), 0o700);
    let cache = read_cache(&cache_path);
    let entry = &cache["logins"][0];
    assert_eq!(entry["grant"], "client_credentials");
    assert_eq!(entry["resource"], "urn:kiln");
    assert!(entry["client_secret_from"]["config"]
        .as_str()
        .unwrap()
        .ends_with("config/kiln/login.toml"));
    let text = std::fs::read_to_string(&cache_path).unwrap();
    assert!(!text.contains(CI_SECRET), "the cache holds the secret");
    let token = entry["access_token"].as_str().unwrap().to_string();
    let c = claims(&token);
    assert_eq!(
        (c["aud"].as_str(), c["org_id"].as_str()),
        (Some("kiln"), Some("tenant-ci"))
    );

    // The composer takes the cached token: no --token, no KILN_TOKEN.
    for args in [&["compose", "list"][..], &["blueprint", "list"]] {
        let r = stack.run(args, &[]).await;
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    }
    // --token still comes first: a bad one is refused though the cache is good.
    let r = stack
        .run(&["compose", "list", "--token", "not-a-jwt"], &[])
        .await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid token"), "{}", r.stderr);

    // For scripts: one JSON document.
    let json = stack.run(&["login", "--output", "json"], &[]).await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["grant"], "client_credentials");
    assert_eq!(doc["subject"], "ci-builder");
    assert_eq!(doc["renewable"], true);
    assert_eq!(doc["token_cache"], cache_path.to_str().unwrap());

    // The provider's refusal is shown as it said it.
    let secret_file = stack.write_private("wrong-secret", "not-the-secret\n");
    let wrong = stack
        .run(
            &[
                "login",
                "--client-secret-file",
                secret_file.to_str().unwrap(),
            ],
            &[],
        )
        .await;
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("invalid_client"), "{}", wrong.stderr);

    // Logged out, the composer says what is missing and how to get it.
    let mut secrets = tokens_of(&read_cache(&cache_path));
    secrets.push(token);
    let out = stack.run(&["logout"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("logged out of"), "{}", out.stdout);
    assert!(!cache_path.exists());
    let r = stack.run(&["compose", "list"], &[]).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("kiln login"), "{}", r.stderr);
    stack.assert_no_secret_shown(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_client_credentials_token_is_renewed_and_an_expired_one_never_sent() {
    let mut stack = Stack::start().await;
    // Flags only, a secret file, and the cache where KILN_TOKEN_CACHE says.
    let secret = stack.write_private("secrets/ci", &format!("{CI_SECRET}\n"));
    let cache_path = stack.home.path().join("elsewhere/token.json");
    let env = [("KILN_TOKEN_CACHE", cache_path.to_str().unwrap())];
    let issuer = stack.provider.issuer();
    let resource = stack.provider.resource().to_string();
    let login = stack
        .run(
            &[
                "login",
                "--issuer",
                &issuer,
                "--client-id",
                "ci-builder",
                "--client-secret-file",
                secret.to_str().unwrap(),
                "--resource",
                &resource,
                "--scope",
                SCOPES,
            ],
            &env,
        )
        .await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(mode(&cache_path), 0o600);
    assert!(!stack.cache_path().exists());
    let first = read_cache(&cache_path);
    let mut secrets = tokens_of(&first);

    // Within a minute of its expiry: renewed by client credentials first.
    set_expiry(&cache_path, &soon(30));
    let r = stack.run(&["compose", "list"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let renewed = read_cache(&cache_path);
    secrets.extend(tokens_of(&renewed));
    assert_ne!(
        renewed["logins"][0]["access_token"],
        first["logins"][0]["access_token"]
    );
    let until: chrono::DateTime<chrono::Utc> = renewed["logins"][0]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(until > chrono::Utc::now() + chrono::Duration::seconds(500));

    // Expired, and the secret gone: refused before the composer is asked
    // (which would still take this token: the provider made it for 600 s).
    std::fs::remove_file(&secret).unwrap();
    set_expiry(&cache_path, "2001-01-01T00:00:00Z");
    let r = stack.run(&["compose", "list"], &env).await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("expired at 2001-01-01T00:00:00Z")
            && r.stderr.contains("secrets/ci")
            && r.stderr.contains("run kiln login"),
        "{}",
        r.stderr
    );
    stack.assert_no_secret_shown(&secrets);
}

/// Starts `kiln login` as a child, returns it with the user code it printed.
async fn start_device_login(
    stack: &Stack,
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    let issuer = stack.provider.issuer();
    let resource = stack.provider.resource().to_string();
    let scope = format!("openid offline_access {SCOPES}");
    let mut child = stack
        .command(
            &[
                "login",
                "--device",
                "--issuer",
                &issuer,
                "--client-id",
                DEVICE_CLIENT_ID,
                "--resource",
                &resource,
                "--scope",
                &scope,
            ],
            env,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some((_, rest)) = line.split_once("enter the code ") {
                return rest.trim().to_string();
            }
        }
        panic!("kiln login ended without a code: {seen}");
    })
    .await
    .unwrap();
    // The rest of standard error, for the assertions once it exits.
    let rest = tokio::spawn(async move {
        let mut rest = seen;
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    (child, code, rest)
}

async fn finish(
    stack: &mut Stack,
    mut child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
) -> Run {
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("kiln login did not end")
        .unwrap();
    let stderr = stderr.await.unwrap();
    stack.outputs.push(format!("{stdout}{stderr}"));
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_approved_in_the_browser_is_cached_and_renewed_by_its_refresh_token() {
    let mut stack = Stack::start().await;
    let started = Instant::now();
    let (child, code, stderr) = start_device_login(&stack, &[]).await;
    stack.provider.approve(&code, "alice").await.unwrap();
    let login = finish(&mut stack, child, stderr).await;
    assert_eq!(login.code, 0, "{}{}", login.stdout, login.stderr);
    assert!(
        login
            .stderr
            .contains(&format!("{}/device", stack.provider.issuer())),
        "{}",
        login.stderr
    );
    assert!(
        login.stdout.contains(" as alice, token valid until "),
        "{}",
        login.stdout
    );
    eprintln!("device login took {:?}", started.elapsed());

    let cache_path = stack.cache_path();
    let first = read_cache(&cache_path);
    let entry = &first["logins"][0];
    assert_eq!(entry["grant"], "device_code");
    assert!(entry["client_secret_from"].is_null());
    assert!(
        entry["refresh_token"].is_string(),
        "offline_access gives one"
    );
    let c = claims(entry["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["aud"].as_str()),
        (Some("alice"), Some("kiln"))
    );
    let mut secrets = tokens_of(&first);

    let r = stack.run(&["compose", "list"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Expired: renewed by the refresh token, which the provider rotates.
    set_expiry(&cache_path, "2001-01-01T00:00:00Z");
    let r = stack.run(&["compose", "list"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let renewed = read_cache(&cache_path);
    secrets.extend(tokens_of(&renewed));
    let (old, new) = (&first["logins"][0], &renewed["logins"][0]);
    assert_ne!(new["access_token"], old["access_token"]);
    assert_ne!(new["refresh_token"], old["refresh_token"]);
    assert_eq!(
        claims(new["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
    assert_eq!(mode(&cache_path), 0o600);
    stack.assert_no_secret_shown(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_device_login_fails_and_says_so() {
    let mut stack = Stack::start().await;
    let cache_path = stack.home.path().join("token.json");
    let env = [("KILN_TOKEN_CACHE", cache_path.to_str().unwrap())];
    let (child, code, stderr) = start_device_login(&stack, &env).await;
    stack.provider.deny(&code).await.unwrap();
    let login = finish(&mut stack, child, stderr).await;
    assert_eq!(login.code, 1, "{}{}", login.stdout, login.stderr);
    assert!(
        login
            .stderr
            .contains("the login was denied on the provider's page (access_denied"),
        "{}",
        login.stderr
    );
    assert!(login.stdout.is_empty(), "{}", login.stdout);
    assert!(!cache_path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_config_file_others_can_read_is_refused() {
    let mut stack = Stack::start().await;
    let path = stack.write_private("open/login.toml", &stack.ci_config());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = path.display().to_string();
    let env = [("KILN_LOGIN_CONFIG", shown.as_str())];
    for args in [&["login"][..], &["compose", "list"]] {
        let r = stack.run(args, &env).await;
        assert_ne!(r.code, 0, "{args:?}");
        assert!(
            r.stderr.contains(&shown) && r.stderr.contains("mode is 0644"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert!(!stack.cache_path().exists());
    // Made private, the same file logs in.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = stack.run(&["login"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secrets = tokens_of(&read_cache(&stack.cache_path()));
    stack.assert_no_secret_shown(&secrets);
}
