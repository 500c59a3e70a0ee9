//! The token rules against a fixed key set: keys made with `openssl`, tokens
//! signed here (the provider itself is exercised in `tests/auth.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use kiln_testsupport::oidc::TestKey;
use serde_json::json;

use super::*;
use jsonwebtoken::jwk::JwkSet;

const ISSUER: &str = "http://127.0.0.1:9/issuer";
const AUDIENCE: &str = "kiln";

fn config() -> AuthConfig {
    AuthConfig {
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    }
}

fn verifier(keys: &[&TestKey]) -> Verifier {
    let set: JwkSet = serde_json::from_value(json!({
        "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
    }))
    .expect("key set");
    Verifier::with_keys(&config(), set)
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "client-a", "org_id": "tenant-a",
        "exp": now() + 600, "iat": now(), "scope": "kiln:read kiln:compose",
    })
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    key.sign(kid, claims)
}

fn invalid(r: Result<Identity, AuthError>) -> String {
    match r {
        Err(AuthError::Invalid(m)) => m,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_token_gives_tenant_subject_and_scopes() {
    let k = TestKey::new("k1");
    let v = verifier(&[&k]);
    let id = v
        .verify(&sign(&k, Some("k1"), &claims()))
        .await
        .expect("valid");
    assert_eq!(id.tenant, "tenant-a");
    assert_eq!(id.subject.as_deref(), Some("client-a"));
    assert!(id.has(Scope::Read) && id.has(Scope::Compose));
    assert!(!id.has(Scope::Blueprint) && !id.has(Scope::Admin));

    // Scopes as a list; the tenant from the next claim when the first is empty.
    let mut c = claims();
    c["scope"] = json!(["kiln:admin"]);
    c["org_id"] = json!("");
    c["tenant"] = json!("tenant-b");
    let id = v.verify(&sign(&k, Some("k1"), &c)).await.expect("valid");
    assert_eq!(id.tenant, "tenant-b");
    assert!(id.has(Scope::Blueprint), "admin implies every scope");

    // Without a key id, the one signing key of the set.
    assert!(v.verify(&sign(&k, None, &claims())).await.is_ok());
    // Within the leeway of exp.
    let mut c = claims();
    c["exp"] = json!(now() - 30);
    assert!(v.verify(&sign(&k, Some("k1"), &c)).await.is_ok());
}

#[tokio::test]
async fn tokens_that_must_not_pass() {
    let k = TestKey::new("k1");
    let other = TestKey::new("k1");
    let v = verifier(&[&k]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&k, Some("k1"), &c)
    };
    let header_b64 = |h: Value| B64.encode(h.to_string());
    let payload_b64 = B64.encode(claims().to_string());
    let spki_pem = k.public_pem();
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(&spki_pem).expect("secret"),
        )
        .expect("sign")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 3600)),
            "expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 3600)),
            "not valid yet",
        ),
        (
            "no exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            "\"exp\"",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("http://127.0.0.1:9/other")),
            "issued by",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("someone-else")),
            "audience",
        ),
        (
            "forged: another key, same kid",
            sign(&other, Some("k1"), &claims()),
            "signature",
        ),
        (
            "unknown key id",
            sign(&k, Some("k9"), &claims()),
            "does not publish",
        ),
        (
            "alg none",
            format!(
                "{}.{payload_b64}.",
                header_b64(json!({"alg": "none", "typ": "JWT"}))
            ),
            "algorithm",
        ),
        ("HS256 with the public key as secret", hs256, "not accepted"),
        (
            "no tenant claim",
            with(&|c| {
                let o = c.as_object_mut().unwrap();
                o.remove("org_id");
                o.remove("sub");
            }),
            "names no tenant",
        ),
        (
            "a tenant that is no name",
            with(&|c| c["org_id"] = json!("../a b")),
            "not a tenant name",
        ),
        ("garbage", "not.a.token".into(), "not a signed JWT"),
    ];
    for (name, token, says) in cases {
        let m = invalid(v.verify(&token).await);
        assert!(m.contains(says), "{name}: {m}");
        assert!(
            !m.contains("tenant-a") && !m.contains(&token),
            "{name} echoes the token: {m}"
        );
    }
    // A key that names ES256 does not verify an ES384 token.
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("k1".into());
    let es384 = format!(
        "{}.{payload_b64}.AAAA",
        B64.encode(serde_json::to_string(&h).unwrap())
    );
    assert!(invalid(v.verify(&es384).await).contains("does not fit"));
}

#[test]
fn scope_names() {
    for s in Scope::ALL {
        assert_eq!(Scope::parse(s.name()), Some(s));
    }
    assert_eq!(Scope::parse("read"), None);
    let none = Identity::unauthenticated("default");
    assert!(none.has(Scope::Compose) && !none.has(Scope::Admin));
}
