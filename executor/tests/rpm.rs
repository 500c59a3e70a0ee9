//! RPM trees built by kiln-osbuild from a repository made in the test
//! (rpmbuild + createrepo_c): exactly the given packages installed, with
//! their scriptlets run, the rpm stage's options honoured, and a whole
//! `tar` manifest as kiln-manifests writes it for the RPM family.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::rpm_repo::{repo, rocky_manifest, POST_MARK};
use common::run;
use serde_json::{json, Value};
use sha2::Digest;

fn checksum(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
    )
}

fn build(dir: &Path, manifest: &Value, export: &str) -> common::Run {
    common::assert_valid_for_osbuild(manifest);
    common::export(dir, manifest, &[export])
}

/// `rpm -qa` of a tree: NAME-[EPOCH:]VERSION-RELEASE.ARCH, sorted.
fn rpm_qa(root: &Path, dbpath: &str) -> Vec<String> {
    let out = Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", dbpath, "-qa", "--qf"])
        .arg("%{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}.%{ARCH}\\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("gpg-pubkey"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn armored_public_key(home: &Path) -> String {
    std::fs::create_dir_all(home).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    gpg(&[
        "--quick-gen-key",
        "kiln rpm <rpm@kiln.invalid>",
        "rsa2048",
        "sign",
        "never",
    ]);
    gpg(&["--armor", "--export"])
}

fn rpm_manifest(files: &[PathBuf], options: Value) -> Value {
    let items: serde_json::Map<String, Value> = files
        .iter()
        .map(|f| (checksum(f), json!(format!("file://{}", f.display()))))
        .collect();
    let refs: Vec<Value> = items.keys().map(|c| json!({"id": c})).collect();
    json!({
        "version": "2",
        "sources": {"org.osbuild.curl": {"items": items}},
        "pipelines": [{"name": "os", "source-epoch": 1731974400, "stages": [
            {"type": "org.osbuild.rpm", "options": options,
             "inputs": {"packages": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": refs}}},
        ]}],
    })
}

#[test]
fn rpm_installs_exactly_the_given_packages_with_their_scriptlets_and_options() {
    let repo = repo();
    let files = [
        repo.file("kiln-setup-1.0"),
        repo.file("kiln-lib-2.0"),
        repo.file("kiln-base-1.0"),
    ];
    let key = armored_public_key(&repo.dir.path().join("gnupg"));
    let options = json!({
        "gpgkeys": [key],
        "exclude": {"docs": true},
        "install_langs": ["de"],
        "disable_dracut": true,
        "dbpath": "/usr/lib/sysimage/rpm",
    });
    let dir = kiln_testsupport::builduser::dir();
    let r = build(dir.path(), &rpm_manifest(&files, options), "os");
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let tree = dir.path().join("out/os");

    let expected = [
        "kiln-base-1.0-1.x86_64",
        "kiln-lib-1:2.0-1.noarch",
        "kiln-setup-1.0-1.noarch",
    ];
    assert_eq!(rpm_qa(&tree, "/usr/lib/sysimage/rpm"), expected);
    // The stage's metadata lists the same set.
    let reported: Vec<String> = r.json["metadata"]["os"]["org.osbuild.rpm"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let epoch = p["epoch"]
                .as_str()
                .map(|e| format!("{e}:"))
                .unwrap_or_default();
            format!(
                "{}-{epoch}{}-{}.{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["release"].as_str().unwrap(),
                p["arch"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reported, expected, "{}", r.json["metadata"]);
    // And, for the SBOM, each one's source RPM, declared license and the
    // checksum of the file it came from.
    let by_name = |name: &str| {
        r.json["metadata"]["os"]["org.osbuild.rpm"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .unwrap()
            .clone()
    };
    for (name, file, source_version) in [
        ("kiln-setup", &files[0], "1.0-1"),
        ("kiln-lib", &files[1], "2.0-1"),
        ("kiln-base", &files[2], "1.0-1"),
    ] {
        let p = by_name(name);
        assert_eq!(p["checksum"], json!(checksum(file)), "{p}");
        assert_eq!(p["license"], json!("MIT"), "{p}");
        assert_eq!(
            p["source"],
            json!({"name": name, "version": source_version}),
            "{p}"
        );
    }
    // The key went into the tree's database.
    let keys = Command::new("rpm")
        .arg("--root")
        .arg(&tree)
        .args(["--dbpath", "/usr/lib/sysimage/rpm", "-q", "gpg-pubkey"])
        .output()
        .unwrap();
    assert!(keys.status.success(), "no gpg-pubkey in the tree");

    assert_eq!(
        std::fs::read_to_string(tree.join(POST_MARK.trim_start_matches('/'))).unwrap(),
        "post ran\n",
        "the %post scriptlet ran in the tree"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("usr/bin/kiln-hello")).unwrap(),
        "kiln hello\n"
    );
    assert!(
        !tree.join("usr/share/doc/kiln-base/README").exists(),
        "docs excluded"
    );
    assert!(
        tree.join("usr/share/kiln/de.txt").exists(),
        "de is installed"
    );
    assert!(!tree.join("usr/share/kiln/fr.txt").exists(), "fr is not");
    assert!(
        !tree.join("etc/kernel/install.d/50-dracut.install").exists(),
        "the dracut masks are gone after the installation"
    );
    // Nothing stays mounted in the committed tree.
    assert!(common::attachments_under(dir.path()).is_empty());
}

#[test]
fn a_missing_dependency_fails_the_stage_with_rpms_message() {
    let repo = repo();
    let dir = kiln_testsupport::builduser::dir();
    let r = build(
        dir.path(),
        &rpm_manifest(&[repo.file("kiln-base-1.0")], json!({})),
        "os",
    );
    assert_eq!(r.code, 1, "{}", r.json);
    let output = r.json["error"]["details"]["stage"]["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("kiln-lib >= 1:2.0 is needed"), "{output}");
}

#[test]
fn invalid_rpm_options_name_their_path() {
    let repo = repo();
    let files = [repo.file("kiln-lib-2.0")];
    let dir = kiln_testsupport::builduser::dir();
    let cases = [
        (
            json!({"install_langs": []}),
            json!(["install_langs"]),
            "needs a language",
        ),
        (
            json!({"exclude": {"doc": true}}),
            json!(["exclude", "doc"]),
            "unknown field",
        ),
        (json!({"nodeps": "yes"}), json!(["nodeps"]), "invalid type"),
    ];
    for (options, rel, word) in cases {
        let r = run(
            &[
                "--json",
                "--store",
                dir.path().join("store").to_str().unwrap(),
            ],
            &rpm_manifest(&files, options),
        );
        assert_eq!(r.code, 2, "{}", r.stderr);
        let mut path = json!(["pipelines", 0, "stages", 0, "options"]);
        path.as_array_mut()
            .unwrap()
            .extend(rel.as_array().unwrap().iter().cloned());
        let errors = r.json["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["path"] == path && e["message"].as_str().unwrap().contains(word)),
            "expected an error at {path} mentioning {word:?}, got {errors:?}"
        );
    }
}

/// A `tar` image as kiln's composer asks for it for an RPM distribution:
/// depsolved by kiln-depsolve against the test repository, written by
/// kiln-manifests for the RPM family, built by kiln-osbuild.
#[test]
fn a_rocky_shaped_tar_manifest_builds_from_the_test_repository() {
    let repo = repo();
    let solution = repo.solve(&["kiln-base"]);
    let packages = common::package_files(&solution);
    let blueprint: kiln_api::customizations::Blueprint = serde_json::from_value(json!({
        "name": "rocky-tar",
        "customizations": {
            "hostname": "node-001",
            "group": [{"name": "hpc", "gid": 2000}],
            "user": [{"name": "admin", "groups": ["hpc"], "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQn admin@x"}],
            "directories": [{"path": "/etc/kiln", "mode": "0750"}],
            "files": [{"path": "/etc/kiln/motd", "data": "hello from kiln\n"}],
        },
    }))
    .unwrap();
    let customizations = kiln_manifests::customize::ImageCustomizations::from_blueprint(&blueprint);
    let manifest = rocky_manifest(&packages, &customizations, "tar", "root.tar");

    let dir = kiln_testsupport::builduser::dir();
    let r = build(dir.path(), &manifest, "archive");
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);

    let solved: BTreeSet<String> = solution.packages.iter().map(|p| p.name.clone()).collect();
    let reported: BTreeSet<String> = r.json["metadata"]["os"]["org.osbuild.rpm"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reported, solved);
    assert_eq!(
        solved,
        BTreeSet::from(["kiln-base".into(), "kiln-lib".into(), "kiln-setup".into()])
    );

    let extract = dir.path().join("root");
    std::fs::create_dir_all(&extract).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(dir.path().join("out/archive/root.tar"))
        .arg("-C")
        .arg(&extract)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        rpm_qa(&extract, "/var/lib/rpm"),
        [
            "kiln-base-1.0-1.x86_64",
            "kiln-lib-1:2.0-1.noarch",
            "kiln-setup-1.0-1.noarch"
        ]
    );
    let read = |p: &str| std::fs::read_to_string(extract.join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "node-001\n");
    assert!(
        read("etc/group").contains("hpc:x:2000:admin"),
        "{}",
        read("etc/group")
    );
    assert!(
        read("etc/passwd").contains("admin:x:"),
        "{}",
        read("etc/passwd")
    );
    assert_eq!(read("etc/kiln/motd"), "hello from kiln\n");
    assert!(read("home/admin/.ssh/authorized_keys").contains("admin@x"));
    assert_eq!(read(POST_MARK.trim_start_matches('/')), "post ran\n");
}

/// Rocky-shaped `tar` and `oci` images with an openssh-server whose %post
/// makes host keys: the manifest's clean stage removes them and empties the
/// machine id, the unit that makes them at boot is there, and neither
/// artifact holds a private key. (The test repository has no kernel, so
/// `pxe` and `disk` are Debian's alone; see debian.rs and boot.rs.)
#[test]
fn rocky_shaped_tar_and_oci_images_carry_no_host_key() {
    let repo = repo();
    let solution = repo.solve(&["kiln-base", "openssh-server"]);
    let packages = common::package_files(&solution);
    let customizations = kiln_manifests::customize::ImageCustomizations::default();
    let manifest = |image_type: &str, filename: &str| {
        rocky_manifest(&packages, &customizations, image_type, filename)
    };
    let dir = kiln_testsupport::builduser::dir();
    let tar = manifest("tar", "root.tar");
    let r = build(dir.path(), &tar, "archive");
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let r = build(dir.path(), &manifest("oci", "image.oci.tar"), "container");
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let out = dir.path().join("out");
    let scanned = kiln_testsupport::artifacts::scan_artifacts(&[
        out.join("archive/root.tar"),
        out.join("container/image.oci.tar"),
    ])
    .unwrap();
    for (artifact, kind, keys) in &scanned {
        assert_eq!(
            keys,
            &Vec::<PathBuf>::new(),
            "{} ({kind})",
            artifact.display()
        );
    }
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    kiln_testsupport::artifacts::unpack(&out.join("archive/root.tar"), &root).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        ""
    );
    assert!(!root.join("etc/ssh/ssh_host_rsa_key.pub").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ssh/sshd_config")).unwrap(),
        "PermitRootLogin no\n"
    );
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/kiln-node-identity.service"))
            .unwrap();
    assert!(unit.contains("Before=sshd.service\n"), "{unit}");
}
