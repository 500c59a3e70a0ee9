//! `kiln` against a composer with `[auth]`: the token comes from `--token`
//! or `KILN_TOKEN`, is sent as a bearer token, and is never printed.

mod common;

use std::process::Stdio;

use kiln_testsupport::oidc::{OidcClient, OidcProvider};
use tokio::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

async fn run(url: &str, args: &[&str], env_token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(KILN);
    cmd.args(args)
        .env("KILN_COMPOSER_URL", url)
        .env_remove("KILN_TOKEN")
        .env_remove("KILN_LOGIN_CONFIG")
        // Only the token of the flag or the variable: no `kiln login`.
        .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = env_token {
        cmd.env("KILN_TOKEN", t);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_from_the_flag_or_the_environment_and_never_shown() {
    let clients = [OidcClient::new(
        "tenant-a",
        "secret-a",
        serde_json::json!({"org_id": "tenant-a"}),
    )];
    let provider =
        tokio::task::block_in_place(|| OidcProvider::start("kiln", &clients, &[])).unwrap();
    let (url, _data) = common::composer_trusting(provider.issuer()).await;
    let token = provider
        .token_with_scope("tenant-a", "kiln:read kiln:compose kiln:blueprint")
        .await
        .unwrap();

    let (code, _, stderr) = run(&url, &["compose", "list"], None).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("bearer token"), "{stderr}");

    let (code, stdout, stderr) = run(&url, &["compose", "list", "--token", &token], None).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run(&url, &["blueprint", "list"], Some(&token)).await;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // A refused token: the refusal says why, and nothing prints the token.
    // A changed character inside the signature (not its last, whose low
    // bits may be padding).
    let at = token.len() - 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    let (code, stdout, stderr) = run(&url, &["compose", "list"], Some(&forged)).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid token"), "{stderr}");
    assert!(!stdout.contains(&forged[..40]) && !stderr.contains(&forged[..40]));
    let (_, help, _) = run(&url, &["compose", "--help"], Some(&token)).await;
    assert!(
        help.contains("KILN_TOKEN") && !help.contains(&token[..40]),
        "{help}"
    );
}
