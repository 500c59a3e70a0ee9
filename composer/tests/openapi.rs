//! The OpenAPI document, and wire compatibility with osbuild-composer's
//! Cloud API v2: kiln's real answers are validated against the reference's
//! own schemas (`../shared/reference/composer-api/cloudapi-v2.openapi.yml`,
//! beside the repository; without it the behaviour is still checked and the
//! comparison is reported as skipped).

mod common;

use common::{check, reference, start, start_with, violations, Backend};

/// A composer that allows the requests' (never fetched) repository.
async fn start_allowing_mirror() -> common::TestComposer {
    start_with(Backend::Sqlite, |cfg| {
        cfg.repositories.allow = vec![kiln_composer::AllowEntry::Prefix(
            "http://127.0.0.1:1/debian".into(),
        )];
    })
    .await
}
use serde_json::json;

#[tokio::test]
async fn answers_match_the_reference_schemas() {
    let reference = reference();
    let c = start_allowing_mirror().await;

    // A request the reference itself accepts is accepted by kiln.
    let request = json!({
        "distribution": "debian-12",
        "image_request": {
            "architecture": "x86_64",
            "image_type": "oci",
            "repositories": [{"baseurl": "http://127.0.0.1:1/debian", "suite": "bookworm", "components": ["main"]}],
            "upload_targets": [{"type": "aws.s3", "upload_options": {"region": "local"}}]
        },
        "customizations": {
            "hostname": "node-001",
            "users": [{"name": "admin", "groups": ["sudo"], "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQn admin@x"}],
            "services": {"enabled": ["chrony"]},
            "files": [{"path": "/etc/motd", "data": "hello\n", "mode": "0644"}],
            "timezone": {"timezone": "Europe/Berlin"}
        }
    });
    check(&reference, "ComposeRequest", &request);
    let (status, id) = c.post("/compose", &request).await;
    assert_eq!(status, 201, "{id}");
    check(&reference, "ComposeId", &id);
    let id = id["id"].as_str().unwrap().to_owned();

    let (_, st) = c.get(&format!("/composes/{id}")).await;
    check(&reference, "ComposeStatus", &st);
    // The check does bite: a status without its image status, or with an
    // unknown status value, is refused.
    if let Some(reference) = &reference {
        let mut broken = st.clone();
        broken.as_object_mut().unwrap().remove("image_status");
        assert!(!violations(reference, "ComposeStatus", &broken).is_empty());
        let mut broken = st.clone();
        broken["status"] = json!("canceled");
        assert!(!violations(reference, "ComposeStatus", &broken).is_empty());
    }
    let (_, list) = c.get("/composes/").await;
    check(&reference, "ComposeList", &list);
    let (_, logs) = c.get(&format!("/composes/{id}/logs")).await;
    check(&reference, "ComposeLogs", &logs);
    let (_, manifests) = c.get(&format!("/composes/{id}/manifests")).await;
    check(&reference, "ComposeManifests", &manifests);
    let (_, meta) = c.get(&format!("/composes/{id}/metadata")).await;
    check(&reference, "ComposeMetadata", &meta);
    // Not built yet: one image, no SBOM.
    let (status, sboms) = c.get(&format!("/composes/{id}/sboms")).await;
    assert_eq!(status, 200, "{sboms}");
    assert_eq!(sboms["items"], json!([[]]), "{sboms}");
    check(&reference, "ComposeSBOMs", &sboms);
    let (_, canceled) = c.post(&format!("/composes/{id}/cancel"), &json!({})).await;
    check(&reference, "ComposeStatus", &canceled);
    let (_, del) = c.delete(&format!("/composes/{id}")).await;
    check(&reference, "ComposeDeleteStatus", &del);

    let (_, err) = c.get("/composes/not-a-uuid").await;
    check(&reference, "Error", &err);
    let (_, errs) = c.get("/errors").await;
    check(&reference, "ErrorList", &errs);

    let (_, distros) = c.get("/distributions").await;
    check(&reference, "DistributionList", &distros);
    let (_, details) = c
        .get("/distributions/debian-12?architecture=x86_64&image_type=pxe")
        .await;
    // DistributionDetails pairs an object reference with `additionalProperties:
    // false` under allOf, which no object with an id satisfies; its parts are
    // checked one by one instead.
    check(&reference, "ObjectReference", &details);
    for (_, arch) in details["architectures"].as_object().unwrap() {
        check(&reference, "ArchitectureInfo", arch);
    }
    assert_eq!(details["architectures"].as_object().unwrap().len(), 1);
    assert_eq!(
        details["architectures"]["x86_64"]["image_types"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn metadata_echoes_the_request_as_submitted() {
    let reference = reference();
    let c = start_allowing_mirror().await;
    // The reference requires `repositories`; an empty list asks for the
    // distribution's own, and comes back as it was sent.
    for repositories in [
        json!([]),
        json!([{"baseurl": "http://127.0.0.1:1/debian", "suite": "bookworm", "components": ["main"]}]),
    ] {
        let request = json!({
            "distribution": "debian-12",
            "image_request": {
                "architecture": "x86_64",
                "image_type": "oci",
                "repositories": repositories,
                "upload_targets": [{"type": "aws.s3", "upload_options": {"region": "local"}}]
            }
        });
        check(&reference, "ComposeRequest", &request);
        let (status, id) = c.post("/compose", &request).await;
        assert_eq!(status, 201, "{id}");
        let id = id["id"].as_str().unwrap().to_owned();
        let (status, meta) = c.get(&format!("/composes/{id}/metadata")).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["request"], request);
        check(&reference, "ComposeMetadata", &meta);
    }
}

#[tokio::test]
async fn openapi_is_generated_and_covers_every_route() {
    let reference = reference();
    let c = start(Backend::Sqlite).await;
    let (status, doc) = c.get("/openapi").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let ours = doc["paths"].as_object().unwrap();
    let theirs = reference.as_ref().map(|r| r["paths"].as_object().unwrap());
    let implemented = [
        ("/compose", "post"),
        ("/composes/", "get"),
        ("/composes/{id}", "get"),
        ("/composes/{id}", "delete"),
        ("/composes/{id}/logs", "get"),
        ("/composes/{id}/manifests", "get"),
        ("/composes/{id}/metadata", "get"),
        ("/composes/{id}/sboms", "get"),
        ("/depsolve/blueprint", "post"),
        ("/search/packages", "post"),
        ("/distributions", "get"),
        ("/distributions/{distro}", "get"),
        ("/openapi", "get"),
        ("/errors", "get"),
        ("/errors/{id}", "get"),
    ];
    for (path, method) in implemented {
        let op = ours.get(path).and_then(|p| p.get(method));
        let op = op.unwrap_or_else(|| panic!("{method} {path} missing from kiln's OpenAPI"));
        let Some(theirs) = theirs else { continue };
        assert!(
            theirs[path].get(method).is_some(),
            "{method} {path} is not in the reference"
        );
        assert_eq!(
            op["operationId"], theirs[path][method]["operationId"],
            "{method} {path}"
        );
    }
    // kiln's extensions are documented and are not in the reference.
    for (path, method) in [
        ("/composes/{id}/cancel", "post"),
        ("/composes/{id}/events", "get"),
        ("/composes/{id}/jobs", "get"),
        ("/boot/changes", "post"),
        ("/boot/changes/{id}", "get"),
        ("/boot/changes/{id}/cancel", "post"),
        ("/boot/history", "get"),
        ("/boot/nodes", "get"),
    ] {
        assert!(
            ours.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
        assert!(
            theirs.is_none_or(|t| t.get(path).is_none()),
            "{path} is in the reference after all"
        );
    }
    // Every documented route answers (not the router's 404).
    for path in ours.keys() {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{distro}", "debian-12");
        let method = ours[path]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        if method != "get" {
            continue;
        }
        let (status, body) = c.get(&concrete).await;
        assert!(
            status != 404 || body["code"] != "IMAGE-BUILDER-COMPOSER-18",
            "{path} documented but not routed"
        );
    }
}
