//! Authentication, authorization and tenant isolation of the compose API
//! against a real OpenID provider (panva's oidc-provider on loopback):
//! tokens × endpoints, each refusal asserting its status, its challenge and
//! that nothing was written, on both backends.
//!
//! The provider issues the good tokens (client credentials, RS256 JWTs).
//! The bad ones are made here: signed with a test key the provider
//! publishes (so the signature verifies and the claim under test is what
//! fails), with an unpublished key, or not signed at all.

#[macro_use]
mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::{pxe_request, start_with, Backend, TestComposer};
use kiln_composer::config::AuthConfig;
use kiln_queue::RowCounts;
use kiln_testsupport::oidc::{OidcClient, OidcProvider, TestKey};
use serde_json::{json, Value};

const AUDIENCE: &str = "kiln";
const EXTRA_KID: &str = "kiln-test-extra";

fn sign(key: &TestKey, kid: &str, claims: &Value) -> String {
    key.sign(Some(kid), claims)
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

struct Kiln {
    c: TestComposer,
    provider: OidcProvider,
    extra: TestKey,
}

async fn start(b: Backend) -> Kiln {
    let extra = TestKey::new(EXTRA_KID);
    let clients = [
        OidcClient::new("tenant-a", "secret-a", json!({"org_id": "tenant-a"})),
        OidcClient::new("tenant-b", "secret-b", json!({"org_id": "tenant-b"})),
        OidcClient::new("admin", "secret-admin", json!({"org_id": "ops"})),
        OidcClient::new("nobody", "secret-nobody", json!({})),
    ];
    let provider = tokio::task::block_in_place(|| {
        OidcProvider::start_with_keys(
            AUDIENCE,
            &clients,
            &[],
            std::slice::from_ref(&extra.private_jwk),
        )
    })
    .unwrap();
    let issuer = provider.issuer();
    let c = start_with(b, |cfg| {
        cfg.auth = AuthConfig {
            issuer: Some(issuer),
            audience: Some(AUDIENCE.into()),
            tenant_claims: vec!["org_id".into(), "tenant".into()],
            boot_grants: vec![kiln_composer::config::BootGrant {
                tenant: "tenant-a".into(),
                image_names: vec!["compute".into()],
                groups: vec!["compute".into()],
                xnames: vec![],
                macs: vec![],
                nids: vec![],
            }],
            ..AuthConfig::default()
        };
    })
    .await;
    Kiln { c, provider, extra }
}

/// What the database holds: rows of composes and jobs, and every tenant's
/// blueprints.
async fn written(c: &TestComposer) -> (RowCounts, usize) {
    let mut blueprints = 0;
    for t in ["tenant-a", "tenant-b", "ops", "default"] {
        blueprints += c.queue.blueprints(t).await.unwrap().len();
    }
    (c.queue.row_counts().await.unwrap(), blueprints)
}

/// One call of the API: method, path, body.
#[derive(Clone)]
struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// What it needs.
    scope: &'static str,
}

fn blueprint() -> Value {
    json!({"name": "compute-node", "distro": "debian-12", "packages": [{"name": "bash"}]})
}

/// Every protected endpoint, with ids of tenant A's compose and blueprint.
fn calls(id: &str) -> Vec<Call> {
    let call = |method, path: String, body: Option<Value>, scope| Call {
        method,
        path,
        body,
        scope,
    };
    let image = json!({"image_request": {"architecture": "x86_64", "image_type": "tar", "upload_targets": [{"type": "local", "upload_options": {}}]}});
    vec![
        call(
            "POST",
            "/compose".into(),
            Some(pxe_request()),
            "kiln:compose",
        ),
        call("GET", "/composes".into(), None, "kiln:read"),
        call("GET", format!("/composes/{id}"), None, "kiln:read"),
        call("GET", format!("/composes/{id}/logs"), None, "kiln:read"),
        call(
            "GET",
            format!("/composes/{id}/manifests"),
            None,
            "kiln:read",
        ),
        call("GET", format!("/composes/{id}/metadata"), None, "kiln:read"),
        call("GET", format!("/composes/{id}/jobs"), None, "kiln:read"),
        call("GET", format!("/composes/{id}/events"), None, "kiln:read"),
        call(
            "POST",
            format!("/composes/{id}/cancel"),
            None,
            "kiln:compose",
        ),
        call("DELETE", format!("/composes/{id}"), None, "kiln:compose"),
        call(
            "POST",
            "/blueprints".into(),
            Some(blueprint()),
            "kiln:blueprint",
        ),
        call("GET", "/blueprints".into(), None, "kiln:read"),
        call("GET", "/blueprints/compute-node".into(), None, "kiln:read"),
        call(
            "DELETE",
            "/blueprints/compute-node".into(),
            None,
            "kiln:blueprint",
        ),
        call(
            "POST",
            "/blueprints/compute-node/compose".into(),
            Some(image),
            "kiln:compose",
        ),
        call(
            "POST",
            "/search/packages".into(),
            Some(
                json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["a b"]}),
            ),
            "kiln:read",
        ),
        call("GET", "/distributions".into(), None, "kiln:read"),
        call("GET", "/distributions/debian-12".into(), None, "kiln:read"),
        // Last, so the indexes above stay as the tests below use them.
        call("GET", format!("/composes/{id}/sboms"), None, "kiln:read"),
        call("GET", "/workers".into(), None, "kiln:read"),
    ]
}

/// The boot endpoints, with the id of tenant A's boot change.
fn boot_calls(id: &str) -> Vec<Call> {
    let call = |method, path: String, body: Option<Value>, scope| Call {
        method,
        path,
        body,
        scope,
    };
    vec![
        call(
            "POST",
            "/boot/changes".into(),
            Some(json!({"action": "show", "nodes": {"group": "compute"}})),
            "kiln:compose",
        ),
        call("GET", format!("/boot/changes/{id}"), None, "kiln:read"),
        call(
            "POST",
            format!("/boot/changes/{id}/cancel"),
            None,
            "kiln:compose",
        ),
        call("GET", "/boot/history".into(), None, "kiln:read"),
        call("GET", "/boot/nodes".into(), None, "kiln:read"),
        call("GET", "/boot/tags".into(), None, "kiln:read"),
    ]
}

/// Sends `call` with `authorization` (the whole header value, if any):
/// status, `WWW-Authenticate`, and the body when it is JSON.
async fn send(
    c: &TestComposer,
    call: &Call,
    authorization: Option<&str>,
    channel: Option<&str>,
) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap();
    let mut req = c.http.request(method, c.url(&call.path));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some(ch) = channel {
        req = req.header("x-kiln-channel", ch);
    }
    if let Some(b) = &call.body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let is_json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    // An event stream runs until the compose ends: only its status matters.
    let body = if is_json {
        r.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (status, challenge, body)
}

/// Tokens that must not get in, each with the words its 401 carries.
fn bad_tokens(k: &Kiln, provider_kid: &str) -> Vec<(&'static str, Option<String>, &'static str)> {
    let issuer = k.provider.issuer();
    let good = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": issuer, "aud": AUDIENCE, "sub": "tenant-a", "org_id": "tenant-a",
            "exp": now() + 600, "iat": now(), "scope": "kiln:read kiln:compose kiln:blueprint kiln:admin",
        });
        f(&mut c);
        c
    };
    let forger = TestKey::new(provider_kid);
    let unsigned = |alg: &str| {
        format!(
            "Bearer {}.{}.",
            B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string()),
            B64.encode(good(&|_| {}).to_string())
        )
    };
    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(EXTRA_KID.into());
        let public =
            serde_json::to_vec(&json!({"kty": "EC", "x": k.extra.jwk["x"], "y": k.extra.jwk["y"]}))
                .unwrap();
        jsonwebtoken::encode(
            &h,
            &good(&|_| {}),
            &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
        )
        .unwrap()
    };
    let bearer = |t: String| Some(format!("Bearer {t}"));
    vec![
        ("no token", None, ""),
        (
            "Basic credentials",
            Some("Basic dGVuYW50LWE6c2VjcmV0LWE=".into()),
            "invalid_token",
        ),
        (
            "not a JWT",
            Some("Bearer not-a-token".into()),
            "invalid_token",
        ),
        ("alg none", Some(unsigned("none")), "invalid_token"),
        (
            "HS256 signed with the public key",
            bearer(hs256_with_public_key),
            "not accepted",
        ),
        (
            "forged: another key under the provider's kid",
            bearer(sign(&forger, provider_kid, &good(&|_| {}))),
            "signature",
        ),
        (
            "unpublished key id",
            bearer(sign(&k.extra, "kiln-test-unknown", &good(&|_| {}))),
            "does not publish",
        ),
        (
            "expired",
            bearer(sign(
                &k.extra,
                EXTRA_KID,
                &good(&|c| c["exp"] = json!(now() - 3600)),
            )),
            "expired",
        ),
        (
            "not yet valid",
            bearer(sign(
                &k.extra,
                EXTRA_KID,
                &good(&|c| c["nbf"] = json!(now() + 3600)),
            )),
            "not valid yet",
        ),
        (
            "wrong issuer",
            bearer(sign(
                &k.extra,
                EXTRA_KID,
                &good(&|c| c["iss"] = json!("http://127.0.0.1:1")),
            )),
            "issued by",
        ),
        (
            "wrong audience",
            bearer(sign(
                &k.extra,
                EXTRA_KID,
                &good(&|c| c["aud"] = json!("not-kiln")),
            )),
            "audience",
        ),
        (
            "no tenant claim",
            bearer(sign(
                &k.extra,
                EXTRA_KID,
                &good(&|c| drop(c.as_object_mut().unwrap().remove("org_id"))),
            )),
            "names no tenant",
        ),
    ]
}

async fn tokens_by_endpoints(b: Backend) {
    let k = start(b).await;
    let c = &k.c;
    let p = &k.provider;
    let full = p
        .token_with_scope("tenant-a", "kiln:read kiln:compose kiln:blueprint")
        .await
        .unwrap();
    // Tenant A's compose and blueprint, for the calls that take an id.
    let a = |t: &str| format!("Bearer {t}");
    let (status, _, body) = send(c, &calls("x")[0], Some(&a(&full)), None).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, _, body) = send(c, &calls(&id)[10], Some(&a(&full)), None).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = send(c, &boot_calls("x")[0], Some(&a(&full)), None).await;
    assert_eq!(status, 201, "{body}");
    let change = body["id"].as_str().unwrap().to_owned();
    let before = written(c).await;

    let jwks = p.jwks().await.unwrap();
    let provider_kid = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256" && k["kid"] != EXTRA_KID)
        .and_then(|k| k["kid"].as_str())
        .unwrap()
        .to_owned();
    let read_only = p.token_with_scope("tenant-a", "kiln:read").await.unwrap();
    let no_scope = p.token("tenant-a").await.unwrap();
    let nobody = p.token_with_scope("nobody", "kiln:read").await.unwrap();

    let mut cases = 0;
    for call in calls(&id).into_iter().chain(boot_calls(&change)) {
        for (name, auth, says) in bad_tokens(&k, &provider_kid) {
            let (status, challenge, body) = send(c, &call, auth.as_deref(), None).await;
            let what = format!("{name} → {} {}", call.method, call.path);
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(body["code"], "IMAGE-BUILDER-COMPOSER-26", "{what}: {body}");
            assert!(
                challenge.starts_with("Bearer realm=\"kiln\""),
                "{what}: {challenge}"
            );
            assert!(challenge.contains(says), "{what}: {challenge}");
            assert!(
                !body.to_string().contains("tenant-a\""),
                "{what} echoes the token: {body}"
            );
            cases += 1;
        }
        for (name, token) in [
            ("no tenant", &nobody),
            ("no scope", &no_scope),
            ("read only", &read_only),
        ] {
            let (status, challenge, body) = send(c, &call, Some(&a(token)), None).await;
            let what = format!("{name} → {} {}", call.method, call.path);
            if name == "no tenant" {
                assert_eq!(
                    (status, body["code"].as_str()),
                    (401, Some("IMAGE-BUILDER-COMPOSER-26")),
                    "{what}: {body}"
                );
            } else if name == "read only" && call.scope == "kiln:read" {
                assert!(status != 401 && status != 403, "{what}: {status} {body}");
            } else {
                assert_eq!(status, 403, "{what}: {body}");
                assert_eq!(body["code"], "IMAGE-BUILDER-COMPOSER-27", "{what}: {body}");
                assert!(
                    challenge.contains("insufficient_scope") && challenge.contains(call.scope),
                    "{what}: {challenge}"
                );
            }
            cases += 1;
        }
        assert_eq!(
            written(c).await,
            before,
            "refused calls wrote nothing ({} {})",
            call.method,
            call.path
        );
    }
    // The document and the error catalog are public.
    for path in ["/openapi", "/errors", "/errors/26"] {
        let r = c.http.get(c.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(cases >= 40, "{cases} cases");
    eprintln!("{cases} token × endpoint cases");
}

/// For every endpoint that takes an id, tenant B gets 404 for tenant A's
/// ids; lists show each tenant its own; an admin acts in a named tenant.
async fn tenants_are_apart(b: Backend) {
    let k = start(b).await;
    let c = &k.c;
    let p = &k.provider;
    let scopes = "kiln:read kiln:compose kiln:blueprint";
    let ta = format!(
        "Bearer {}",
        p.token_with_scope("tenant-a", scopes).await.unwrap()
    );
    let tb = format!(
        "Bearer {}",
        p.token_with_scope("tenant-b", scopes).await.unwrap()
    );
    let admin = format!(
        "Bearer {}",
        p.token_with_scope("admin", "kiln:admin").await.unwrap()
    );
    let (status, _, body) = send(c, &calls("x")[0], Some(&ta), None).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let all = calls(&id);
    assert_eq!(send(c, &all[10], Some(&ta), None).await.0, 201);
    let jobs = c.queue.compose_jobs(id.parse().unwrap()).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.channel == "tenant-a"),
        "jobs follow the tenant"
    );

    let before = written(c).await;
    let by_id: Vec<&Call> = all
        .iter()
        .filter(|call| call.path.contains(&id) || call.path.contains("compute-node"))
        .collect();
    assert_eq!(by_id.len(), 12);
    for call in &by_id {
        let (status, _, body) = send(c, call, Some(&tb), None).await;
        assert_eq!(status, 404, "B → {} {}: {body}", call.method, call.path);
        // The admin's own tenant (ops) has none of them either.
        let (status, _, body) = send(c, call, Some(&admin), None).await;
        assert_eq!(status, 404, "admin → {} {}: {body}", call.method, call.path);
    }
    assert_eq!(written(c).await, before, "B's calls changed A's data");
    // A's boot change (a read of what its nodes boot, within its grant).
    let (status, _, body) = send(c, &boot_calls("x")[0], Some(&ta), None).await;
    assert_eq!(status, 201, "{body}");
    let change = body["id"].as_str().unwrap().to_owned();
    let before = written(c).await;
    for call in boot_calls(&change)
        .iter()
        .filter(|c| c.path.contains(&change))
    {
        let (status, _, body) = send(c, call, Some(&tb), None).await;
        assert_eq!(status, 404, "B → {} {}: {body}", call.method, call.path);
        let (status, _, body) = send(c, call, Some(&admin), None).await;
        assert_eq!(status, 404, "admin → {} {}: {body}", call.method, call.path);
    }
    // B has no boot grant: its change is refused, nothing enqueued.
    let (status, _, body) = send(c, &boot_calls("x")[0], Some(&tb), None).await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (403, Some("action")),
        "{body}"
    );
    assert_eq!(written(c).await, before, "B's boot calls changed A's data");
    let (status, _, body) = send(c, &boot_calls(&change)[1], Some(&ta), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    let (status, _, body) = send(c, &boot_calls(&change)[2], Some(&ta), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("canceled")),
        "{body}"
    );
    let (status, _, body) = send(c, &boot_calls(&change)[2], Some(&ta), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("IMAGE-BUILDER-COMPOSER-31")),
        "{body}"
    );
    let (_, _, list) = send(c, &all[1], Some(&tb), None).await;
    assert_eq!(list["total"], 0, "{list}");
    let (_, _, list) = send(c, &all[11], Some(&tb), None).await;
    assert_eq!(
        list["blueprints"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // B's blueprint of the same name is B's own: A's stays at version 1.
    assert_eq!(send(c, &all[10], Some(&tb), None).await.0, 201);
    let (_, _, mine) = send(c, &all[12], Some(&ta), None).await;
    assert_eq!(mine["version"], 1, "{mine}");

    // An admin names the tenant; a name that is no tenant is 400.
    let (status, _, body) = send(c, &all[2], Some(&admin), Some("tenant-a")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(c, &all[2], Some(&admin), Some("no such/tenant")).await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (400, Some("X-Kiln-Channel")),
        "{body}"
    );
    // Tenant B cannot name A.
    let (status, _, body) = send(c, &all[2], Some(&tb), Some("tenant-a")).await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (403, Some("X-Kiln-Channel")),
        "{body}"
    );

    // Workers: each tenant sees those that may build for it, and only its
    // own jobs on them (others' counted); no other tenant's name.
    let only_a = vec!["tenant-a".to_owned(), "tenant-c".to_owned()];
    c.queue
        .worker_seen("only-a.kiln.test", Some(("x86_64", &only_a)))
        .await
        .unwrap();
    c.queue
        .worker_seen("any.kiln.test", Some(("x86_64", &[])))
        .await
        .unwrap();
    let lease = c
        .queue
        .dequeue(
            &kiln_queue::DequeueFilter::types(&["depsolve"]),
            "any.kiln.test",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap()
        .expect("A's depsolve job");
    assert_eq!(lease.job.channel, "tenant-a");
    let workers = all.last().unwrap();
    let (status, _, a) = send(c, workers, Some(&ta), None).await;
    assert_eq!(status, 200, "{a}");
    let (status, _, b) = send(c, workers, Some(&tb), None).await;
    assert_eq!(status, 200, "{b}");
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&a), ["any.kiln.test", "only-a.kiln.test"], "{a}");
    assert_eq!(names(&b), ["any.kiln.test"], "{b}");
    assert_eq!(a["items"][0]["jobs"][0]["id"], json!(lease.job.id), "{a}");
    assert_eq!(a["items"][0]["other_jobs"], 0, "{a}");
    assert_eq!(a["items"][1]["channels"], json!(["tenant-a"]), "{a}");
    assert_eq!(b["items"][0]["jobs"], json!([]), "{b}");
    assert_eq!(b["items"][0]["other_jobs"], 1, "{b}");
    assert!(!b.to_string().contains("tenant-a"), "{b}");
}

on_both_backends!(tokens_by_endpoints, tenants_are_apart);

/// A composer whose issuer cannot be reached answers 503 (the token cannot
/// be checked), never lets the request through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_refuses_everything() {
    let port = kiln_testsupport::free_port().unwrap();
    let c = start_with(Backend::Sqlite, |cfg| {
        cfg.auth = AuthConfig {
            issuer: Some(format!("http://127.0.0.1:{port}")),
            audience: Some(AUDIENCE.into()),
            ..AuthConfig::default()
        };
    })
    .await;
    let key = TestKey::new("k");
    let token = sign(
        &key,
        "k",
        &json!({"iss": format!("http://127.0.0.1:{port}"), "aud": AUDIENCE, "exp": now() + 60, "org_id": "a"}),
    );
    let call = &calls("x")[0];
    let (status, _, body) = send(&c, call, Some(&format!("Bearer {token}")), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("IMAGE-BUILDER-COMPOSER-28")),
        "{body}"
    );
    assert_eq!(c.queue.row_counts().await.unwrap().composes, 0);
}
