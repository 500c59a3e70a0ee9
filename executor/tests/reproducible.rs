//! Byte-reproducible images: the same manifest built in two empty stores,
//! seconds apart in real time and the second build under
//! `faketime -f +1d` (the clock every stage's tools read is a day later;
//! the times the kernel stamps on files are not), gives the same bytes in
//! every exported file: Debian 12 `tar`, `pxe`, `disk` (raw and qcow2) and
//! `oci`, and an RPM-family `tar`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::Digest;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQnKilnTestKey admin@kiln";

/// The second build's clock: a day ahead. `NO_FAKE_STAT`: libfaketime
/// would otherwise also move the file times that `stat` returns, and the
/// times the kernel stamps on files are what the build really sees.
const FAKETIME: &[&str] = &["env", "NO_FAKE_STAT=1", "faketime", "-f", "+1d"];
/// In every stage too: faketime's variables passed on to the sandboxes
/// (not its shared memory, which a sandbox's own /dev does not have).
const FAKETIME_IN_STAGES: &[&str] = &[
    "--stage-env",
    "LD_PRELOAD",
    "--stage-env",
    "FAKETIME",
    "--stage-env",
    "NO_FAKE_STAT",
];

/// A small kernel: its image and an empty module directory, made by its
/// postinst (Debian's takes a minute to squash and compress; what is
/// tested here is everything around it).
const KERNEL: &str = "linux-image-6.1.0-0-kiln";
const KERNEL_POSTINST: &str = r#"#!/bin/sh
set -e
mkdir -p /boot /lib/modules/6.1.0-0-kiln
printf 'kiln test kernel\n' > /boot/vmlinuz-6.1.0-0-kiln
for f in modules.dep modules.order modules.builtin modules.builtin.modinfo; do
    : > /lib/modules/6.1.0-0-kiln/$f
done
"#;

/// The customizations of both tests; `admin_groups`: the groups the user
/// `admin` joins (Debian's `sudo`, the RPM family's `wheel`).
fn blueprint(admin_groups: &[&str]) -> Value {
    let mut groups = vec!["hpc"];
    groups.extend(admin_groups);
    json!({
        "name": "compute-node",
        "customizations": {
            "hostname": "node-001",
            "group": [{"name": "hpc", "gid": 2000}],
            "user": [{"name": "admin", "key": KEY, "groups": groups, "password": "$6$salt$hash"}],
            "timezone": {"timezone": "Europe/Berlin"},
            "locale": {"languages": ["en_US.UTF-8"]},
            "services": {"enabled": ["systemd-networkd.service"], "masked": ["e2scrub_reap.service"]},
            "directories": [{"path": "/etc/kiln", "mode": "0750"}],
            "files": [{"path": "/etc/kiln/motd", "data": "hello from kiln\n"}],
        }
    })
}

/// Every file below `dir`, by its path below it, with its sha256.
fn digests(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                let mut hash = sha2::Sha256::new();
                std::io::copy(&mut std::fs::File::open(&path).unwrap(), &mut hash).unwrap();
                out.insert(
                    path.strip_prefix(dir).unwrap().to_owned(),
                    hex::encode(hash.finalize()),
                );
            }
        }
    }
    out
}

/// Builds each (manifest, exports) into `dir`'s own store, the first one
/// keeping a checkpoint after `checkpoint` (the shared install stage).
fn build_all(
    wrapper: &[&str],
    args: &[&str],
    dir: &Path,
    builds: &[(&Value, &[&str])],
    checkpoint: Option<&str>,
) -> BTreeMap<PathBuf, String> {
    for (i, (manifest, exports)) in builds.iter().enumerate() {
        let mut more = args.to_vec();
        if let (0, Some(id)) = (i, checkpoint) {
            more.extend(["--checkpoint", id]);
        }
        let started = std::time::Instant::now();
        let r = common::export_under(wrapper, dir, manifest, exports, &more);
        eprintln!("{exports:?}: {:.1} s", started.elapsed().as_secs_f64());
        assert_eq!(r.code, 0, "{exports:?}: {}\n{}", r.json, r.stderr);
    }
    digests(&dir.join("out"))
}

/// The two builds' exports hold the same files with the same bytes; a
/// mismatch is explained file by file.
fn assert_same(a: &Path, b: &Path, da: &BTreeMap<PathBuf, String>, db: &BTreeMap<PathBuf, String>) {
    assert_eq!(
        da.keys().collect::<Vec<_>>(),
        db.keys().collect::<Vec<_>>(),
        "the two builds exported different files"
    );
    let differ: Vec<&PathBuf> = da
        .iter()
        .filter(|(p, h)| db[*p] != **h)
        .map(|(p, _)| p)
        .collect();
    if differ.is_empty() {
        return;
    }
    let mut explained = String::new();
    for p in &differ {
        let out = Command::new("diffoscope")
            .args([
                "--text",
                "-",
                "--no-progress",
                "--max-report-size",
                "200000",
            ])
            .arg(a.join("out").join(p))
            .arg(b.join("out").join(p))
            .output();
        explained.push_str(&format!("== {}\n", p.display()));
        if let Ok(o) = out {
            explained.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    panic!(
        "{} of {} files differ: {differ:?}\n{explained}",
        differ.len(),
        da.len()
    );
}

#[test]
fn debian_tar_pxe_disk_and_oci_are_byte_identical_across_stores_times_and_clocks() {
    let images = common::debian_images(
        &["pxe", "disk", "tar", "oci"],
        // dbus: dracut's network module needs it with systemd-networkd;
        // python3-minimal: its postinst byte-compiles the standard library;
        // libfaketime: package scripts run chrooted in the tree, where the
        // preloaded library must be for their clock to move too.
        &["dbus", "python3-minimal", "libfaketime"],
        &["linux-image-amd64"],
        blueprint(&["sudo"]),
        &[(KERNEL, KERNEL_POSTINST)],
    );
    let manifest = |t: &str| &images.manifests.iter().find(|(n, _)| n == t).unwrap().1;
    let ids = kiln_manifests::ids(manifest("pxe")).unwrap();
    let install = ids
        .pipelines
        .iter()
        .find(|p| p.name == "os")
        .unwrap()
        .stages[0]
        .clone();
    let builds: Vec<(&Value, &[&str])> = vec![
        (manifest("pxe"), &["pxe"]),
        (manifest("disk"), &["image", "qcow2"]),
        (manifest("tar"), &["archive"]),
        (manifest("oci"), &["container"]),
    ];
    let first = kiln_testsupport::builduser::dir();
    let second = kiln_testsupport::builduser::dir();
    let da = build_all(&[], &[], first.path(), &builds, Some(&install));
    let db = build_all(
        FAKETIME,
        FAKETIME_IN_STAGES,
        second.path(),
        &builds,
        Some(&install),
    );
    // The second build's stages did run a day ahead: dpkg logged its
    // clock in the checkpointed install tree (the image leaves the log out).
    let logged_day = |dir: &Path| {
        let log = dir
            .join("store/objects")
            .join(&install)
            .join("tree/var/log/dpkg.log");
        let log = std::fs::read_to_string(&log).unwrap();
        // The last line: dpkg configuring the packages, in the tree.
        let last = log.lines().last().unwrap();
        last.split(' ').next().unwrap().to_owned()
    };
    let (day_a, day_b) = (logged_day(first.path()), logged_day(second.path()));
    assert!(
        day_b > day_a,
        "dpkg's clock: {day_a} in the first build, {day_b} in the second"
    );
    assert_same(first.path(), second.path(), &da, &db);
}

/// An RPM-family `tar` and `oci` (the test repository's packages, with
/// their scriptlets and the rpm database), the same way.
#[test]
fn rpm_tar_and_oci_are_byte_identical_across_stores_times_and_clocks() {
    let repo = common::rpm_repo::repo();
    let solution = repo.solve(&["kiln-base", "openssh-server"]);
    let packages = common::package_files(&solution);
    // The test repository has no time zones, locales or networkd.
    let mut blueprint = blueprint(&["wheel"]);
    for key in ["timezone", "locale", "services"] {
        blueprint["customizations"]
            .as_object_mut()
            .unwrap()
            .remove(key);
    }
    let blueprint: kiln_api::customizations::Blueprint = serde_json::from_value(blueprint).unwrap();
    let customizations = kiln_manifests::customize::ImageCustomizations::from_blueprint(&blueprint);
    let manifest = |image_type: &str, filename: &str| {
        common::rpm_repo::rocky_manifest(&packages, &customizations, image_type, filename)
    };
    let (tar, oci) = (
        manifest("tar", "root.tar"),
        manifest("oci", "image.oci.tar"),
    );
    let builds: Vec<(&Value, &[&str])> = vec![(&tar, &["archive"]), (&oci, &["container"])];
    let first = kiln_testsupport::builduser::dir();
    let second = kiln_testsupport::builduser::dir();
    let da = build_all(&[], &[], first.path(), &builds, None);
    // Seconds apart in real time, as well as a day by the clock.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let db = build_all(FAKETIME, FAKETIME_IN_STAGES, second.path(), &builds, None);
    assert_same(first.path(), second.path(), &da, &db);
}
