//! The OpenID provider hands out what kiln's verification will rely on: RS256
//! JWTs whose `kid` is in the JWKS, with the issuer, the audience, a future
//! expiry and each client's (or account's) own claims; and it refuses a
//! wrong secret.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_testsupport::oidc::{OidcAccount, OidcClient, OidcProvider, DEVICE_CLIENT_ID};
use serde_json::{json, Value};

fn base64url_decode(input: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            other => panic!("not base64url: {:?}", char::from(other)),
        }
    };
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (value(c) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The JWT's header and payload, as JSON (the signature is the verifier's job).
fn decode(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact serialisation: {jwt}");
    let json = |part: &str| serde_json::from_slice(&base64url_decode(part)).expect("JSON part");
    (json(parts[0]), json(parts[1]))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Asserts what every access token of this provider must carry, and returns
/// its payload.
fn check_access_token(token: &str, provider: &OidcProvider, jwks: &Value) -> Value {
    let (header, payload) = decode(token);
    assert_eq!(header["alg"], "RS256", "{header}");
    let kid = header["kid"].as_str().expect("kid in the header");
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS {jwks}"));
    assert_eq!(key["kty"], "RSA");
    assert!(key.get("d").is_none(), "the JWKS leaks a private key");
    assert_eq!(payload["iss"], provider.issuer().as_str());
    assert_eq!(payload["aud"], "kiln");
    let exp = payload["exp"].as_i64().expect("exp");
    assert!(exp > now(), "exp {exp} is not in the future");
    payload
}

#[tokio::test]
async fn tokens_are_rs256_jwts_with_each_clients_claims() {
    let clients = [
        OidcClient::new(
            "tenant-a",
            "secret-a",
            json!({"org_id": "tenant-a", "kiln_roles": ["read", "compose"]}),
        ),
        OidcClient::new(
            "tenant-b",
            "secret-b",
            json!({"org_id": "tenant-b", "kiln_roles": ["read"]}),
        ),
        OidcClient::new("admin", "secret-admin", json!({"kiln_roles": ["admin"]})),
    ];
    let accounts = [OidcAccount::new(
        "alice",
        json!({"org_id": "tenant-a", "kiln_roles": ["read", "blueprint"]}),
    )];
    let provider = OidcProvider::start("kiln", &clients, &accounts).expect("start the provider");

    let discovery = provider.discovery().await.expect("discovery");
    assert_eq!(discovery["issuer"], provider.issuer().as_str());
    assert_eq!(discovery["jwks_uri"], provider.jwks_uri().as_str());
    for endpoint in ["token_endpoint", "device_authorization_endpoint"] {
        assert!(
            discovery[endpoint].is_string(),
            "no {endpoint}: {discovery}"
        );
    }
    let jwks = provider.jwks().await.expect("jwks");
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["alg"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["RS256", "ES256"], "{jwks}");

    let a = check_access_token(&provider.token("tenant-a").await.unwrap(), &provider, &jwks);
    assert_eq!(a["sub"], "tenant-a");
    assert_eq!(a["client_id"], "tenant-a");
    assert_eq!(a["org_id"], "tenant-a");
    assert_eq!(a["kiln_roles"], json!(["read", "compose"]));
    assert!(a.get("scope").is_none(), "{a}");

    let b = check_access_token(&provider.token("tenant-b").await.unwrap(), &provider, &jwks);
    assert_eq!(b["org_id"], "tenant-b");
    assert_eq!(b["kiln_roles"], json!(["read"]));

    let admin = provider
        .token_with_scope("admin", "kiln:read kiln:admin")
        .await
        .unwrap();
    let admin = check_access_token(&admin, &provider, &jwks);
    assert_eq!(admin["kiln_roles"], json!(["admin"]));
    assert!(admin.get("org_id").is_none(), "{admin}");
    assert_eq!(admin["scope"], "kiln:read kiln:admin");

    let refused = provider
        .token_request("tenant-a", "secret-b", None)
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "invalid_client");
    let unknown = provider
        .token_request("tenant-c", "secret-a", None)
        .await
        .unwrap();
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
    assert!(provider.token("tenant-c").await.is_err());

    let device = provider
        .device_token_with_scope("alice", "kiln:read")
        .await
        .unwrap_or_else(|e| panic!("{e}\nprovider log:\n{}", provider.log()));
    let device = check_access_token(&device, &provider, &jwks);
    assert_eq!(device["sub"], "alice");
    assert_eq!(device["client_id"], DEVICE_CLIENT_ID);
    assert_eq!(device["org_id"], "tenant-a");
    assert_eq!(device["kiln_roles"], json!(["read", "blueprint"]));
    assert_eq!(device["scope"], "kiln:read");

    let err = provider.device_token("mallory").await.unwrap_err();
    assert!(err.contains("400"), "{err}");
}

#[test]
fn a_missing_provider_names_the_install_script() {
    let dir = tempfile::tempdir().unwrap();
    // The tools directory comes from the environment, which is the whole
    // process's: the check runs in a child with its own.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "start_without_tools",
            "--include-ignored",
            "--nocapture",
        ])
        .env("KILN_TOOLS_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
#[ignore = "the child process of a_missing_provider_names_the_install_script"]
fn start_without_tools() {
    let err = OidcProvider::start("kiln", &[], &[])
        .err()
        .expect("no provider without oidc-provider");
    assert!(err.contains("tools/test.sh"), "{err}");
    assert!(err.contains("oidc-provider@"), "{err}");
}
