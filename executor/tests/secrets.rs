//! Images carry no secret: package scripts generate SSH host keys and a
//! snakeoil TLS key, the manifest's `kiln.identity.clean` stage removes
//! them, and kiln-osbuild refuses to export a tree that still holds
//! private key material unless the manifest keeps that path on purpose.
//! Every artifact is scanned after unpacking it with the host's tools
//! (`kiln_testsupport::artifacts`, grep and find: not the executor's check).

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::debian_image;
use kiln_testsupport::artifacts::{scan_artifacts, unpack};
use serde_json::{json, Value};
use sha2::Digest;

/// A private key as `ssh-keygen` writes one (a throwaway, made for this test).
const SITE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBbBJqcj1CScE0u3bd9RWlVbkT4Gg9Rsc7KZgrDBhnlAgAAAJCd0GB+ndBg
-----END OPENSSH PRIVATE KEY-----
";

fn no_keys() -> Vec<PathBuf> {
    Vec::new()
}

fn stage_index(manifest: &Value, pipeline: &str, kind: &str) -> usize {
    pipeline_of(manifest, pipeline)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {pipeline}"))
}

fn pipeline_of<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

fn stages_mut<'a>(manifest: &'a mut Value, pipeline: &str) -> &'a mut Vec<Value> {
    manifest["pipelines"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == pipeline)
        .unwrap()["stages"]
        .as_array_mut()
        .unwrap()
}

fn build(dir: &Path, manifest: &Value, exports: &[&str], checkpoint: Option<&str>) -> common::Run {
    match checkpoint {
        Some(id) => common::export_with(dir, manifest, exports, &["--checkpoint", id]),
        None => common::export(dir, manifest, exports),
    }
}

fn assert_ok(r: &common::Run) {
    assert_eq!(
        r.code,
        0,
        "{}\n{}",
        serde_json::to_string_pretty(&r.json).unwrap(),
        r.stderr
    );
}

/// The build failed at the export check, naming exactly these paths.
fn assert_refused(r: &common::Run, pipeline: &str, paths: &[&str]) {
    assert_eq!(r.code, 1, "{}\n{}", r.json, r.stderr);
    let error = &r.json["error"];
    assert_eq!(error["type"], "kiln.error.private-keys", "{}", r.json);
    assert_eq!(error["details"]["pipeline"], pipeline);
    assert_eq!(error["details"]["paths"], json!(paths));
    let reason = error["reason"].as_str().unwrap();
    for p in paths {
        assert!(reason.contains(p), "{reason}");
    }
}

fn scan_one(artifact: &Path) -> (&'static str, Vec<PathBuf>) {
    let mut scanned = scan_artifacts(&[artifact.to_owned()]).unwrap();
    let (_, kind, keys) = scanned.remove(0);
    (kind, keys)
}

/// No packages: an inline key copied into the tree, the way a blueprint's
/// `files` would bake one in.
#[test]
fn a_manifest_that_bakes_a_key_in_is_refused_naming_the_file_unless_it_keeps_it() {
    let key_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(SITE_KEY)));
    // A file that merely mentions the armour (as ssh-keygen's binary does) is no key.
    let mention = "echo '-----BEGIN OPENSSH PRIVATE KEY-----'\n";
    let mention_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(mention)));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let manifest = |clean: Option<Value>| {
        let mut os = vec![
            json!({
                "type": "org.osbuild.mkdir",
                "options": {"paths": [{"path": "/etc/site", "parents": true}, {"path": "/usr/bin", "parents": true}]},
            }),
            json!({
                "type": "org.osbuild.copy",
                "inputs": {"files": {"type": "org.osbuild.files", "origin": "org.osbuild.source",
                                     "references": [{"id": key_id}, {"id": mention_id}]}},
                "options": {"paths": [
                    {"from": format!("input://files/{key_id}"), "to": "tree:///etc/site/tls.key"},
                    {"from": format!("input://files/{mention_id}"), "to": "tree:///usr/bin/mention"},
                ]},
            }),
        ];
        os.extend(clean);
        json!({
            "version": "2",
            "sources": {"org.osbuild.inline": {"items": {
                key_id.clone(): {"encoding": "base64", "data": b64(SITE_KEY)},
                mention_id.clone(): {"encoding": "base64", "data": b64(mention)},
            }}},
            "pipelines": [
                {"name": "os", "source-epoch": 1731974400, "stages": os},
                {"name": "archive", "source-epoch": 1731974400, "stages": [{
                    "type": "org.osbuild.tar",
                    "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}},
                    "options": {"filename": "root.tar"},
                }]},
            ],
        })
    };
    let dir = kiln_testsupport::builduser::dir();
    let tar = dir.path().join("out/archive/root.tar");

    let refused = manifest(None);
    common::assert_valid_for_osbuild(&refused);
    let r = build(dir.path(), &refused, &["archive"], None);
    assert_refused(&r, "os", &["/etc/site/tls.key"]);
    assert!(!tar.exists(), "nothing is exported");
    // Removing it is not keeping it.
    let r = build(
        dir.path(),
        &manifest(Some(
            json!({"type": "kiln.identity.clean", "options": {"remove": ["/etc/site/other.key"]}}),
        )),
        &["archive"],
        None,
    );
    assert_refused(&r, "os", &["/etc/site/tls.key"]);

    // Kept on purpose: exported, and the scan finds exactly that key.
    let kept = manifest(Some(json!({
        "type": "kiln.identity.clean",
        "options": {"keep-private-keys": ["/etc/site/tls.key"]},
    })));
    common::assert_valid_for_osbuild(&kept);
    assert_ok(&build(dir.path(), &kept, &["archive"], None));
    assert_eq!(
        scan_one(&tar),
        ("tar", vec![PathBuf::from("/etc/site/tls.key")])
    );

    // The stage removes what it names, and links it is handed are removed,
    // not followed.
    let removed = manifest(Some(json!({
        "type": "kiln.identity.clean",
        "options": {"remove": ["/etc/site/tls.key", "/etc/site/absent", "/nowhere/at/all"]},
    })));
    assert_ok(&build(dir.path(), &removed, &["archive"], None));
    assert_eq!(scan_one(&tar), ("tar", no_keys()));
}

/// What a tar and an OCI image of Debian 12 with openssh-server and
/// ssl-cert hold; then the same manifest without its clean stage.
#[test]
fn debian_12_tar_and_oci_images_carry_no_private_key_and_the_scan_finds_them_without_the_clean_stage(
) {
    let extra = [
        "systemd-sysv",
        "iproute2",
        "less",
        "openssh-server",
        "ssl-cert",
    ];
    let bp = json!({"name": "keys", "customizations": {"hostname": "node-keys"}});
    let tar_image = debian_image("tar", &extra, bp.clone());
    // The same package set as an OCI image: the same `os` pipeline but for
    // /dev (a container's is its runtime's), so the OCI archive is made of
    // the tar's `os`, built once.
    let oci_image = debian_image("oci", &extra, bp);
    let without_dev = |m: &Value| -> Vec<Value> {
        let stages = pipeline_of(m, "os")["stages"].as_array().unwrap();
        let dev = stages.iter().position(|s| s["type"] == "kiln.devices");
        stages
            .iter()
            .enumerate()
            .filter(|(i, _)| dev.is_none_or(|d| *i != d && *i != d + 1))
            .map(|(_, s)| s.clone())
            .collect()
    };
    assert_eq!(
        without_dev(&tar_image.manifest),
        without_dev(&oci_image.manifest)
    );
    let mut oci_manifest = tar_image.manifest.clone();
    let pipelines = oci_manifest["pipelines"].as_array_mut().unwrap();
    pipelines.retain(|p| p["name"] != "archive");
    pipelines.push(pipeline_of(&oci_image.manifest, "container").clone());
    let manifest = &tar_image.manifest;
    common::assert_valid_for_osbuild(manifest);
    let ids = kiln_manifests::ids(manifest).unwrap();
    let os = ids.pipelines.iter().find(|p| p.name == "os").unwrap();
    let clean = stage_index(manifest, "os", "kiln.identity.clean");
    // After every stage that runs package tools; only the stage that
    // normalises the tree for reproducibility comes after it.
    assert_eq!(
        clean,
        os.stages.len() - 2,
        "the clean stage is last but one in os"
    );
    assert_eq!(
        stage_index(manifest, "os", "kiln.reproducible"),
        os.stages.len() - 1
    );
    let before_clean = os.stages[clean - 1].clone();

    let dir = kiln_testsupport::builduser::dir();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    assert_ok(&build(
        dir.path(),
        manifest,
        &["archive"],
        Some(&before_clean),
    ));
    let tar_took = started.elapsed();
    assert_ok(&build(dir.path(), &oci_manifest, &["container"], None));
    eprintln!(
        "tar built in {tar_took:?}, then oci in {:?}",
        started.elapsed() - tar_took
    );
    let tar = out.join("archive/root.tar");
    let oci = out.join("container/image.oci.tar");
    let scanned = scan_artifacts(&[tar.clone(), oci.clone()]).unwrap();
    let kinds: Vec<&str> = scanned.iter().map(|s| s.1).collect();
    assert_eq!(kinds, ["tar", "oci archive"]);
    for (artifact, kind, keys) in &scanned {
        assert_eq!(keys, &no_keys(), "{} ({kind})", artifact.display());
    }
    // The tree is otherwise whole: the unit that makes the keys at boot is
    // there and enabled, the machine id is empty, no seed is left.
    let root = kiln_testsupport::builduser::dir();
    unpack(&tar, root.path()).unwrap();
    let r = root.path();
    let unit = std::fs::read_to_string(r.join("usr/lib/systemd/system/kiln-node-identity.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/ssh-keygen -A\n"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStart=/usr/sbin/make-ssl-cert generate-default-snakeoil\n"),
        "{unit}"
    );
    assert!(r
        .join("etc/systemd/system/multi-user.target.wants/kiln-node-identity.service")
        .symlink_metadata()
        .is_ok());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/machine-id")).unwrap(),
        ""
    );
    for gone in [
        "var/lib/dbus/machine-id",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "etc/ssl/certs/ssl-cert-snakeoil.pem",
    ] {
        assert!(
            r.join(gone).symlink_metadata().is_err(),
            "{gone} is still there"
        );
    }
    assert!(r.join("etc/ssh/sshd_config").is_file());

    // Without the clean stage: the export is refused, naming every key...
    let generated = [
        "/etc/ssh/ssh_host_ecdsa_key",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_rsa_key",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
    ];
    let mut unclean = manifest.clone();
    stages_mut(&mut unclean, "os").remove(clean);
    std::fs::remove_dir_all(&out).unwrap();
    let r = build(dir.path(), &unclean, &["archive"], None);
    assert_refused(&r, "os", &generated);
    assert!(!tar.exists(), "nothing is exported");
    // ...and kept on purpose, the scan of the artifact finds them all: the
    // scan above could have failed.
    stages_mut(&mut unclean, "os").push(json!({
        "type": "kiln.identity.clean",
        "options": {"keep-private-keys": generated},
    }));
    assert_ok(&build(dir.path(), &unclean, &["archive"], None));
    let (_, keys) = scan_one(&tar);
    let expected: Vec<PathBuf> = generated.iter().map(PathBuf::from).collect();
    assert_eq!(keys, expected);
}
