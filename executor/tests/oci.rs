//! OCI archives built by kiln-osbuild: the layout inside the archive, the
//! digests, the configuration from the options, the layer's files, the
//! same bytes from two builds, and what skopeo and umoci make of it.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::run;
use serde_json::{json, Value};
use sha2::Digest;

const EPOCH: u64 = 1747699200;
const MOTD: &str = "kiln container\n";
const SCRIPT: &str = "#!/bin/sh\necho hello from kiln\n";

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn inline(data: &str) -> (String, Value) {
    (
        format!("sha256:{}", sha256(data.as_bytes())),
        json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(data)}),
    )
}

fn manifest(options: Value) -> Value {
    let (motd, motd_item) = inline(MOTD);
    let (script, script_item) = inline(SCRIPT);
    json!({
        "version": "2",
        "sources": {"org.osbuild.inline": {"items": {motd.clone(): motd_item, script.clone(): script_item}}},
        "pipelines": [
            {"name": "os", "source-epoch": EPOCH, "stages": [
                {"type": "org.osbuild.mkdir", "options": {"paths": [
                    {"path": "/etc/kiln", "parents": true}, {"path": "/usr/bin", "parents": true}]}},
                {"type": "org.osbuild.copy",
                 "inputs": {"f": {"type": "org.osbuild.files", "origin": "org.osbuild.source",
                                  "references": [{"id": motd}, {"id": script}]}},
                 "options": {"paths": [
                     {"from": format!("input://f/{motd}"), "to": "tree:///etc/kiln/motd"},
                     {"from": format!("input://f/{script}"), "to": "tree:///usr/bin/hello"}]}},
                {"type": "org.osbuild.chmod", "options": {"items": {"/usr/bin/hello": {"mode": "0755"}}}},
            ]},
            {"name": "container", "source-epoch": EPOCH, "stages": [
                {"type": "org.osbuild.oci-archive",
                 "inputs": {"base": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}},
                 "options": options},
            ]},
        ],
    })
}

fn full_options() -> Value {
    json!({
        "architecture": "amd64",
        "filename": "container.tar",
        "config": {
            "Cmd": ["--greeting", "hi"],
            "Entrypoint": ["/usr/bin/hello"],
            "Env": ["PATH=/usr/bin", "KILN=1"],
            "ExposedPorts": ["8080/tcp"],
            "User": "1000:1000",
            "Labels": {"org.example.built-by": "kiln"},
            "WorkingDir": "/srv",
            "Volumes": ["/data"],
            // (sic: osbuild's schema)
            "StopSiganl": "SIGINT",
        },
        "annotations": {"org.example.purpose": "test"},
    })
}

fn build(dir: &Path, m: &Value) -> Vec<u8> {
    common::assert_valid_for_osbuild(m);
    let r = common::export(dir, m, &["container"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    std::fs::read(dir.join("out/container/container.tar")).unwrap()
}

/// The archive's members: name → bytes (directories as empty entries).
fn members(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = kiln_testsupport::builduser::dir();
    let file = dir.path().join("a.tar");
    std::fs::write(&file, archive).unwrap();
    let names = Command::new("tar").arg("-tf").arg(&file).output().unwrap();
    assert!(names.status.success());
    String::from_utf8(names.stdout)
        .unwrap()
        .lines()
        .map(|n| {
            let data = if n.ends_with('/') {
                Vec::new()
            } else {
                let o = Command::new("tar")
                    .arg("-xOf")
                    .arg(&file)
                    .arg(n)
                    .output()
                    .unwrap();
                assert!(o.status.success());
                o.stdout
            };
            (n.to_owned(), data)
        })
        .collect()
}

fn blob<'a>(m: &'a std::collections::BTreeMap<String, Vec<u8>>, digest: &Value) -> &'a [u8] {
    let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
    let data = &m[&format!("blobs/sha256/{hex}")];
    assert_eq!(sha256(data), hex, "a blob's name is its digest");
    data
}

#[test]
fn the_archive_holds_an_oci_layout_with_the_tree_as_its_layer() {
    let dir = kiln_testsupport::builduser::dir();
    let archive = build(dir.path(), &manifest(full_options()));
    let m = members(&archive);
    let names: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.starts_with(&["blobs/", "blobs/sha256/"]), "{names:?}");
    assert!(names.ends_with(&["index.json", "oci-layout"]), "{names:?}");

    let layout: Value = serde_json::from_slice(&m["oci-layout"]).unwrap();
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value = serde_json::from_slice(&m["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], json!(2));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["mediaType"],
        json!("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        entry["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );
    let manifest_bytes = blob(&m, &entry["digest"]);
    assert_eq!(entry["size"], json!(manifest_bytes.len()));
    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(
        manifest["annotations"],
        json!({"org.example.purpose": "test"})
    );

    let config: Value = serde_json::from_slice(blob(&m, &manifest["config"]["digest"])).unwrap();
    assert_eq!(config["architecture"], json!("amd64"));
    assert_eq!(config["os"], json!("linux"));
    assert_eq!(config["created"], json!("2025-05-20T00:00:00Z"));
    assert_eq!(
        config["config"],
        json!({
            "Cmd": ["--greeting", "hi"],
            "Entrypoint": ["/usr/bin/hello"],
            "Env": ["PATH=/usr/bin", "KILN=1"],
            "ExposedPorts": {"8080/tcp": {}},
            "User": "1000:1000",
            "Labels": {"org.example.built-by": "kiln"},
            "WorkingDir": "/srv",
            "Volumes": {"/data": {}},
            "StopSignal": "SIGINT",
        })
    );

    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        json!("application/vnd.oci.image.layer.v1.tar+gzip")
    );
    let gz = blob(&m, &layer["digest"]);
    assert_eq!(layer["size"], json!(gz.len()));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(
        config["rootfs"],
        json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&tar))]})
    );
    let files = members(&tar);
    assert_eq!(files["./etc/kiln/motd"], MOTD.as_bytes());
    assert_eq!(files["./usr/bin/hello"], SCRIPT.as_bytes());
    let dir2 = kiln_testsupport::builduser::dir();
    let layer_tar = dir2.path().join("layer.tar");
    std::fs::write(&layer_tar, &tar).unwrap();
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&layer_tar)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0")
                && l.contains("2025-05-20 00:00 ./usr/bin/hello")),
        "modes, owners and clamped times: {listing}"
    );
}

#[test]
fn two_builds_of_the_same_tree_and_epoch_give_the_same_bytes() {
    let (a, b) = (
        kiln_testsupport::builduser::dir(),
        kiln_testsupport::builduser::dir(),
    );
    let m = manifest(full_options());
    let first = build(a.path(), &m);
    // A second later, in another store: new files, new times, same archive.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(b.path(), &m);
    assert_eq!(sha256(&first), sha256(&second));
}

fn tool_output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn skopeo_and_umoci_read_the_archive_and_unpack_the_tree() {
    let dir = kiln_testsupport::builduser::dir();
    // osbuild's defaults for what the options leave out.
    let options = json!({"architecture": "arm64", "variant": "v8", "filename": "container.tar"});
    build(dir.path(), &manifest(options));
    let archive = dir.path().join("out/container/container.tar");
    let source = format!("oci-archive:{}", archive.display());

    let inspect: Value = serde_json::from_str(&tool_output(
        Command::new("skopeo").args(["inspect", &source]),
    ))
    .unwrap();
    assert_eq!(inspect["Architecture"], json!("arm64"));
    assert_eq!(inspect["Os"], json!("linux"));
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);
    let config: Value = serde_json::from_str(&tool_output(
        Command::new("skopeo").args(["inspect", "--config", &source]),
    ))
    .unwrap();
    assert_eq!(config["variant"], json!("v8"));
    assert_eq!(config["config"]["Cmd"], json!(["sh"]));
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );

    // skopeo copies it (checking every digest) into a tagged layout;
    // umoci unpacks that into a runtime bundle.
    let layout = dir.path().join("layout");
    tool_output(Command::new("skopeo").args([
        "copy",
        &source,
        &format!("oci:{}:kiln", layout.display()),
    ]));
    let bundle = dir.path().join("bundle");
    tool_output(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:kiln", layout.display()))
            .arg(&bundle),
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/etc/kiln/motd")).unwrap(),
        MOTD
    );
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["args"], json!(["sh"]));
}

#[test]
fn reserved_annotations_and_unknown_config_keys_are_refused_with_their_path() {
    let dir = kiln_testsupport::builduser::dir();
    let store = dir.path().join("store");
    let cases = [
        (
            json!({"architecture": "amd64", "filename": "c.tar", "annotations": {"org.opencontainers.image.title": "x"}}),
            json!(["pipelines", 1, "stages", 0, "options", "annotations"]),
            "reserved",
        ),
        (
            json!({"architecture": "amd64", "filename": "c.tar", "config": {"Healthcheck": {}}}),
            json!([
                "pipelines",
                1,
                "stages",
                0,
                "options",
                "config",
                "Healthcheck"
            ]),
            "unknown field",
        ),
        (
            json!({"filename": "c.tar"}),
            json!(["pipelines", 1, "stages", 0, "options"]),
            "architecture",
        ),
    ];
    for (options, path, word) in cases {
        let r = run(
            &["--json", "--store", store.to_str().unwrap()],
            &manifest(options),
        );
        assert_eq!(r.code, 2, "{}", r.stderr);
        let errors = r.json["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["path"] == path && e["message"].as_str().unwrap().contains(word)),
            "expected an error at {path} mentioning {word:?}, got {errors:?}"
        );
    }
}
