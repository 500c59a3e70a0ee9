//! Stored blueprints over HTTP, on SQLite and on PostgreSQL: versions,
//! validation naming the field, composing by name, channels apart.

#[macro_use]
mod common;

use common::{start, Backend};
use serde_json::{json, Value};

on_both_backends!(
    blueprints_are_versioned_and_composed_by_name,
    bad_blueprints_name_the_field_and_store_nothing
);

fn node(packages: &[&str]) -> Value {
    json!({
        "name": "compute-node",
        "description": "a compute node",
        "distro": "debian-12",
        "packages": packages.iter().map(|p| json!({"name": p})).collect::<Vec<_>>(),
        "customizations": {"hostname": "node"}
    })
}

async fn blueprints_are_versioned_and_composed_by_name(b: Backend) {
    let c = start(b).await;
    let http = &c.http;
    for (i, pkgs) in [vec!["chrony"], vec!["chrony", "sudo"]].iter().enumerate() {
        let r = http
            .post(format!("{}/blueprints", c.base))
            .json(&node(pkgs))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["version"], json!(i + 1));
    }
    let list: Value = http
        .get(format!("{}/blueprints", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["blueprints"].as_array().unwrap().len(), 1);
    assert_eq!(list["blueprints"][0]["version"], json!(2));
    assert_eq!(list["blueprints"][0]["distro"], json!("debian-12"));
    let latest: Value = http
        .get(format!("{}/blueprints/compute-node", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["blueprint"]["packages"].as_array().unwrap().len(), 2);
    let first: Value = http
        .get(format!("{}/blueprints/compute-node?version=1", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["blueprint"]["packages"].as_array().unwrap().len(), 1);
    // Another tenant's view is tests/auth.rs's; without [auth] a caller
    // cannot name one.
    let other = http
        .get(format!("{}/blueprints/compute-node", c.base))
        .header("X-Kiln-Channel", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    // Compose from version 1 by name: the stored blueprint is the request's.
    let r = http
        .post(format!("{}/blueprints/compute-node/compose", c.base))
        .json(&json!({"version": 1, "image_request": {"architecture": "x86_64", "image_type": "tar", "upload_targets": [{"type": "local", "upload_options": {}}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id: Value = r.json().await.unwrap();
    let compose = c
        .queue
        .compose(uuid::Uuid::parse_str(id["id"].as_str().unwrap()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(compose.request["distribution"], json!("debian-12"));
    assert_eq!(
        compose.request["blueprint"]["packages"],
        json!([{"name": "chrony"}])
    );
    // A bad image request is refused like any compose request.
    let r = http
        .post(format!("{}/blueprints/compute-node/compose", c.base))
        .json(&json!({"image_request": {"architecture": "sparc", "image_type": "tar"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["details"]["field"],
        json!("image_request.architecture"),
        "{e}"
    );

    assert_eq!(
        http.delete(format!("{}/blueprints/compute-node", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/blueprints/compute-node", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.delete(format!("{}/blueprints/compute-node", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

async fn bad_blueprints_name_the_field_and_store_nothing(b: Backend) {
    let c = start(b).await;
    let mut no_distro = node(&["chrony"]);
    no_distro.as_object_mut().unwrap().remove("distro");
    let mut bad_hostname = node(&[]);
    bad_hostname["customizations"]["hostname"] = json!("not a host name!");
    let mut bad_name = node(&[]);
    bad_name["name"] = json!("../etc");
    let mut unknown = node(&[]);
    unknown["colour"] = json!("blue");
    for (bp, field) in [
        (no_distro, "distro"),
        (bad_hostname, "blueprint.customizations.hostname"),
        (bad_name, "name"),
        (unknown, "colour"),
    ] {
        let r = c
            .http
            .post(format!("{}/blueprints", c.base))
            .json(&bp)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bp}");
        let e: Value = r.json().await.unwrap();
        let named = e["details"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
            + " "
            + e["reason"].as_str().unwrap_or_default();
        assert!(named.contains(field), "{field}: {e}");
    }
    let list: Value = c
        .http
        .get(format!("{}/blueprints", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["blueprints"], json!([]));
}
