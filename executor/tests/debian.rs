//! Debian 12 images built by kiln-osbuild from real packages: a `file://`
//! mirror made with `apt-get download` + `apt-ftparchive`, depsolved by
//! kiln-depsolve, the manifest written by kiln-manifests, every stage run
//! for real (dpkg in the tree, useradd, systemctl, dracut, mksquashfs).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{debian_image, ran};
use serde_json::{json, Value};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQnKilnTestKey admin@kiln";

fn blueprint() -> Value {
    json!({
        "name": "compute-node",
        "customizations": {
            "hostname": "node-001",
            "group": [{"name": "hpc", "gid": 2000}],
            "user": [{"name": "admin", "key": KEY, "groups": ["hpc", "sudo"]}],
            "timezone": {"timezone": "Europe/Berlin"},
            "locale": {"languages": ["en_US.UTF-8"]},
            "services": {"enabled": ["systemd-networkd.service"], "masked": ["e2scrub_reap.service"]}
        }
    })
}

/// Name → version from a dpkg status file.
fn dpkg_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::to_owned))
        };
        if let (Some(name), Some(version), Some(status)) =
            (field("Package"), field("Version"), field("Status"))
        {
            assert_eq!(status, "install ok installed", "{name}");
            out.insert(name, version);
        }
    }
    out
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks the customizations and the package database of a built tree;
/// `read(path)` returns a file of the image.
fn check_tree(
    read: &dyn Fn(&str) -> String,
    link: &dyn Fn(&str) -> String,
    packages: &[(String, String)],
) {
    assert_eq!(read("/etc/hostname"), "node-001\n");
    let passwd = read("/etc/passwd");
    let admin = passwd
        .lines()
        .find(|l| l.starts_with("admin:"))
        .unwrap_or_else(|| panic!("no admin in {passwd}"));
    assert!(
        admin.ends_with(":/home/admin:/bin/sh") || admin.contains(":/home/admin:"),
        "{admin}"
    );
    let group = read("/etc/group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("hpc:x:2000:") && l.ends_with("admin")),
        "{group}"
    );
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.ends_with("admin")),
        "{group}"
    );
    assert_eq!(read("/home/admin/.ssh/authorized_keys"), format!("{KEY}\n"));
    assert_eq!(
        link("/etc/localtime"),
        "../usr/share/zoneinfo/Europe/Berlin"
    );
    assert_eq!(read("/etc/default/locale"), "LANG=en_US.UTF-8\n");
    assert_eq!(
        link("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
        "/lib/systemd/system/systemd-networkd.service"
    );
    assert_eq!(
        link("/etc/systemd/system/e2scrub_reap.service"),
        "/dev/null"
    );
    assert_eq!(
        read("/etc/machine-id"),
        "",
        "every node makes its own machine id"
    );
    // The package database lists exactly the depsolved set.
    let installed = dpkg_status(&read("/var/lib/dpkg/status"));
    let wanted: BTreeMap<String, String> = packages.iter().cloned().collect();
    assert_eq!(installed, wanted);
    assert!(!installed.is_empty());
}

/// The unit that makes a node's SSH host keys is in the image and enabled.
fn assert_node_identity(read: &dyn Fn(&str) -> String, link: &dyn Fn(&str) -> String) {
    let unit = read("/usr/lib/systemd/system/kiln-node-identity.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/ssh-keygen -A\n"),
        "{unit}"
    );
    assert!(unit.contains("Before=ssh.service\n"), "{unit}");
    // systemctl names it by Debian's search path, /lib (merged into /usr).
    let wanted = link("/etc/systemd/system/multi-user.target.wants/kiln-node-identity.service");
    assert_eq!(
        wanted.trim_start_matches("/usr"),
        "/lib/systemd/system/kiln-node-identity.service"
    );
}

#[test]
fn debian_12_tar_image_holds_the_customized_tree_and_exactly_the_depsolved_set() {
    let image = debian_image("tar", &[], blueprint());
    let dir = kiln_testsupport::builduser::dir();
    let out = dir.path().join("out");
    let r = common::export(dir.path(), &image.manifest, &["archive"]);
    assert_eq!(
        r.code,
        0,
        "{}\n{}",
        serde_json::to_string_pretty(&r.json).unwrap(),
        r.stderr
    );
    // The dpkg stage reports what it installed.
    let reported = r.json["metadata"]["os"]["kiln.dpkg"]["packages"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(reported, image.packages.len());
    let tar = out.join("archive/root.tar");
    let tarp = tar.display().to_string();
    let read = |p: &str| sh(&format!("tar -xOf {tarp} .{p}"));
    let link = |p: &str| {
        let line = sh(&format!("tar -tvf {tarp} .{p}"));
        line.trim().rsplit(" -> ").next().unwrap().to_owned()
    };
    check_tree(&read, &link, &image.packages);
    // /dev as mmdebstrap makes it: device nodes, without mknod.
    let null = sh(&format!("tar --numeric-owner -tvf {tarp} ./dev/null"));
    assert!(
        null.starts_with("crw-rw-rw- 0/0") && null.contains(" 1,3 "),
        "{null}"
    );
    // Binaries run: the tree is a working system (dpkg configured it).
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    sh(&format!("tar -xf {tarp} -C {}", root.display()));
    let ver = sh(&format!(
        "chroot {} /usr/bin/dpkg-query -W -f '${{Version}}' base-files",
        root.display()
    ));
    assert_eq!(
        ver,
        image
            .packages
            .iter()
            .find(|(n, _)| n == "base-files")
            .unwrap()
            .1
    );
}

#[test]
fn debian_12_pxe_image_has_kernel_initrd_and_squashfs_and_rebuilds_from_the_store() {
    let image = debian_image("pxe", &["openssh-server"], blueprint());
    let dir = kiln_testsupport::builduser::dir();
    let out = dir.path().join("out");
    let monitor = ["--monitor", "JSONSeqMonitor", "--monitor-fd", "2"];
    let r = common::export_with(dir.path(), &image.manifest, &["pxe"], &monitor);
    assert_eq!(
        r.code,
        0,
        "{}\n{}",
        serde_json::to_string_pretty(&r.json).unwrap(),
        r.stderr
    );
    // The initramfs and the squashfs are made at the same time: each of
    // the two stages starts before the other one ends.
    let span = |pipeline: &str| -> (f64, f64) {
        let times: Vec<(f64, bool)> = r
            .stderr
            .split('\x1e')
            .filter_map(|rec| serde_json::from_str::<Value>(rec.trim()).ok())
            .filter(|rec| rec["context"]["pipeline"]["stage"]["name"].is_string())
            .filter(|rec| rec["context"]["pipeline"]["name"] == pipeline)
            .map(|rec| (rec["timestamp"].as_f64().unwrap(), !rec["result"].is_null()))
            .collect();
        let start = times
            .first()
            .map(|t| t.0)
            .unwrap_or_else(|| panic!("no records of {pipeline}"));
        let end = times
            .iter()
            .find(|t| t.1)
            .map(|t| t.0)
            .unwrap_or_else(|| panic!("no result of {pipeline}"));
        (start, end)
    };
    let (initrd, rootfs) = (span("initrd"), span("rootfs"));
    assert!(
        initrd.0 < rootfs.1 && rootfs.0 < initrd.1,
        "initrd {initrd:?} and rootfs {rootfs:?} did not overlap"
    );
    let pxe = out.join("pxe");
    for f in ["vmlinuz", "initrd.img", "rootfs.squashfs"] {
        assert!(
            pxe.join(f).metadata().unwrap().len() > 1 << 20,
            "{f} is missing or tiny"
        );
    }
    // The kernel is a bzImage; the initrd is dracut's, with the live module.
    let kernel = std::fs::read(pxe.join("vmlinuz")).unwrap();
    assert_eq!(
        &kernel[0x202..0x206],
        b"HdrS",
        "vmlinuz is not a Linux boot image"
    );
    let initrd = pxe.join("initrd.img").display().to_string();
    let listing = sh(&format!("zstd -dc {initrd} | cpio -it --quiet"));
    assert!(
        listing.lines().any(|l| l.contains("dmsquash-live-root")),
        "no dmsquash-live in the initrd"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with("lib/systemd/systemd") || l.ends_with("usr/lib/systemd/systemd")),
        "no systemd in the initrd"
    );
    // The squashfs is the customized tree.
    let squash = pxe.join("rootfs.squashfs").display().to_string();
    let read = |p: &str| sh(&format!("unsquashfs -cat {squash} {p}"));
    let link = |p: &str| {
        let line = sh(&format!("unsquashfs -lls {squash} {p} | tail -n 1"));
        line.trim().rsplit(" -> ").next().unwrap().to_owned()
    };
    check_tree(&read, &link, &image.packages);
    // Lean: /boot is there, empty (the kernel and initrd are beside it).
    let boot = sh(&format!("unsquashfs -lln {squash} boot"));
    assert_eq!(
        boot.lines()
            .filter(|l| l.contains("squashfs-root/boot"))
            .count(),
        1,
        "{boot}"
    );
    let null = sh(&format!("unsquashfs -lln {squash} dev/null | tail -n 1"));
    assert!(
        null.starts_with("crw-rw-rw- 0/0") && null.contains(" 1,  3 "),
        "{null}"
    );
    // No node shares a host key: the image has none, and a unit makes them at boot.
    assert_node_identity(&read, &link);
    let scanned = kiln_testsupport::artifacts::scan_artifacts(&[
        pxe.join("initrd.img"),
        pxe.join("rootfs.squashfs"),
    ])
    .unwrap();
    for (artifact, kind, keys) in scanned {
        assert_eq!(
            keys,
            Vec::<std::path::PathBuf>::new(),
            "{} ({kind})",
            artifact.display()
        );
    }

    // Unchanged manifest: everything comes from the store, no stage runs.
    std::fs::remove_dir_all(&out).unwrap();
    let started = std::time::Instant::now();
    let again = common::export(dir.path(), &image.manifest, &["pxe"]);
    // The time includes the export check's scan of the trees for keys.
    eprintln!("pxe rebuilt from the store in {:?}", started.elapsed());
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(ran(&again.json), Vec::<(String, String)>::new());
    assert_eq!(std::fs::read(pxe.join("vmlinuz")).unwrap(), kernel);
    assert!(Path::new(&squash).exists());
}

/// A package script that reaches for the build host's kernel: every system
/// call the stages' seccomp filter refuses (module loading, kexec, bpf,
/// keyrings, ptrace, …) is tried from a postinst, as dpkg runs it in the
/// sandbox; each answer goes to a log in the tree, and each is EPERM.
#[test]
fn package_scripts_get_eperm_for_what_the_seccomp_filter_refuses() {
    let refused = kiln_executor::seccomp::refused();
    // perl-base is essential: every call with zero arguments (harmless
    // should one get through), its errno name or "ok" per line.
    let calls: Vec<String> = refused
        .iter()
        .map(|(name, nr)| format!("[\"{name}\", {nr}]"))
        .collect();
    let postinst = format!(
        "#!/bin/sh\nperl -MErrno -e 'for my $c ({}) {{ my ($n, $nr) = @$c; $! = 0; my $r = syscall($nr, 0, 0, 0, 0, 0, 0); print \"$n \", ($r == -1 ? ($!{{EPERM}} ? \"EPERM\" : \"errno=\" . ($! + 0)) : \"ok\"), \"\\n\" }}' > /var/log/kiln-seccomp.log 2>&1\nexit 0\n",
        calls.join(", ")
    );
    let image =
        common::debian_image_with("tar", &[], blueprint(), &[("kiln-reaches-out", &postinst)]);
    let dir = kiln_testsupport::builduser::dir();
    let r = common::export(dir.path(), &image.manifest, &["archive"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let tar = dir.path().join("out/archive/root.tar");
    let log = sh(&format!(
        "tar -xOf {} ./var/log/kiln-seccomp.log",
        tar.display()
    ));
    let answers: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(answers.len(), refused.len(), "{log}");
    for ((name, _), (logged, answer)) in refused.iter().zip(&answers) {
        assert_eq!((*logged, *answer), (*name, "EPERM"), "{log}");
    }
}

/// What an archive records of each member (executor/tests/data/tar_meta.py).
fn tar_meta(archive: &Path) -> BTreeMap<String, Value> {
    let out = Command::new("python3")
        .args(["-c", include_str!("data/tar_meta.py")])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A squashfs as a tar (squashfs-tools-ng's sqfs2tar, the root's entry
/// included), for [`tar_meta`].
fn squashfs_meta(image: &Path) -> BTreeMap<String, Value> {
    let tar = image.with_extension("as.tar");
    let file = std::fs::File::create(&tar).unwrap();
    let status = Command::new("sqfs2tar")
        .args(["--root-becomes", ".", "--no-skip"])
        .arg(image)
        .stdout(file)
        .status()
        .expect("sqfs2tar (apt-get install squashfs-tools-ng)");
    assert!(status.success(), "sqfs2tar {}", image.display());
    tar_meta(&tar)
}

/// A tree with setuid and setgid binaries (passwd, mount, sudo), a file
/// capability (ping's cap_net_raw, set by its postinst with setcap) and
/// device nodes, built by kiln without privileges into a tar and a
/// squashfs, and by `mmdebstrap --mode=unshare` from the same mirror and
/// package list into a tar and a squashfs: on every path both trees have,
/// the kind, mode, owner, group, device numbers, link target and extended
/// attributes are the same. mmdebstrap adds /dev entries of its own (the
/// fd and std* links) and apt's files; kiln's tree has its own state files.
#[test]
fn setuid_file_capabilities_and_device_nodes_match_mmdebstrap_in_tar_and_squashfs() {
    let image = debian_image(
        "tar",
        &["iputils-ping", "libcap2-bin", "sudo"],
        json!({"name": "plain"}),
    );
    let mut manifest = image.manifest.clone();
    let epoch = manifest["pipelines"][0]["source-epoch"].clone();
    manifest["pipelines"].as_array_mut().unwrap().push(json!({
        "name": "squashfs", "source-epoch": epoch, "stages": [{
            "type": "org.osbuild.squashfs",
            "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}},
            "options": {"filename": "root.squashfs", "compression": {"method": "zstd"}},
        }]}));
    common::assert_valid_for_osbuild(&manifest);
    let dir = kiln_testsupport::builduser::dir();
    let out = dir.path().join("out");

    // mmdebstrap, both formats at once, beside kiln's build.
    let names: Vec<&str> = image.packages.iter().map(|(n, _)| n.as_str()).collect();
    let peers: Vec<_> = ["mmdebstrap.tar", "mmdebstrap.squashfs"]
        .into_iter()
        .map(|file| {
            let target = dir.path().join(file);
            let mut c = Command::new("mmdebstrap");
            kiln_testsupport::builduser::run_as(&mut c);
            c.args(["--variant=custom", "--mode=unshare", "--quiet"])
                .arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
                .arg(format!("--include={}", names.join(",")))
                .arg("test")
                .arg(&target)
                .arg(&image.source_line);
            let child = c
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("mmdebstrap (apt-get install mmdebstrap)");
            (target, child)
        })
        .collect();
    let r = common::export(dir.path(), &manifest, &["archive", "squashfs"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let peers: Vec<_> = peers
        .into_iter()
        .map(|(target, child)| {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "mmdebstrap {}: {}",
                target.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            target
        })
        .collect();

    let kiln_tar = tar_meta(&out.join("archive/root.tar"));
    let kiln_squashfs = squashfs_meta(&out.join("squashfs/root.squashfs"));
    let peer_tar = tar_meta(&peers[0]);
    let peer_squashfs = squashfs_meta(&peers[1]);

    // What the comparison is about is there, in both of kiln's artifacts.
    for (what, tree) in [("tar", &kiln_tar), ("squashfs", &kiln_squashfs)] {
        let setid: Vec<&String> = tree
            .iter()
            .filter(|(_, m)| {
                m["kind"] == "file"
                    && u32::from_str_radix(m["mode"].as_str().unwrap(), 8).unwrap() & 0o6000 != 0
            })
            .map(|(p, _)| p)
            .collect();
        for p in [
            "usr/bin/passwd",
            "usr/bin/mount",
            "usr/bin/sudo",
            "usr/bin/chage",
        ] {
            assert!(
                setid.iter().any(|s| *s == p),
                "{what}: {p} is not setuid/setgid: {setid:?}"
            );
        }
        // cap_net_raw+ep as a v2 capability (20 bytes): no root id of
        // the build host's namespace bound into it.
        assert_eq!(
            tree["usr/bin/ping"]["xattrs"]["security.capability"],
            "0100000200200000000000000000000000000000",
            "{what}"
        );
        assert_eq!(tree["usr/bin/ping"]["mode"], "0755", "{what}");
        assert_eq!(tree["dev/null"]["kind"], "char", "{what}");
        assert_eq!(tree["dev/null"]["device"], json!([1, 3]), "{what}");
        assert_eq!(tree["dev/console"]["device"], json!([5, 1]), "{what}");
    }

    // kiln's two artifacts of one tree agree on every path, but for the
    // ACLs (system.posix_acl_*, on systemd's journal directory) that only
    // tar keeps: squashfs has no `system` attribute namespace, in either
    // tool's image.
    assert_eq!(kiln_tar.len(), kiln_squashfs.len());
    let mut acls = 0;
    for (p, m) in &kiln_tar {
        let mut m = m.clone();
        if let Some(x) = m["xattrs"].as_object_mut() {
            let before = x.len();
            x.retain(|k, _| !k.starts_with("system."));
            acls += before - x.len();
        }
        assert_eq!(
            Some(&m),
            kiln_squashfs.get(p),
            "{p}: kiln's tar and squashfs differ"
        );
    }
    assert!(acls > 0, "the tar keeps ACLs");

    // Where the trees themselves differ, for reasons of how they were
    // made, not of what the archivers kept (the rest must be identical):
    // - the backups shadow's tools and systemd-sysusers leave take the
    //   mode and owner the original had when they ran, so they record the
    //   order of the package scripts (dpkg's for kiln, apt's for
    //   mmdebstrap);
    // - /etc/machine-id: kiln empties systemd's file (0444) in place,
    //   mmdebstrap writes a new empty one (0644).
    let made_differently = [
        "etc/passwd-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/machine-id",
    ];
    for (what, ours, theirs) in [
        ("tar", &kiln_tar, &peer_tar),
        ("squashfs", &kiln_squashfs, &peer_squashfs),
    ] {
        let common_paths: Vec<&String> = ours.keys().filter(|p| theirs.contains_key(*p)).collect();
        assert!(
            common_paths.len() > 3000,
            "{what}: only {} paths in common",
            common_paths.len()
        );
        for p in [
            "usr/bin/passwd",
            "usr/bin/sudo",
            "usr/bin/ping",
            "dev/null",
            "dev/tty",
            "etc/shadow",
        ] {
            assert!(
                theirs.contains_key(p),
                "{what}: mmdebstrap's tree has no {p}"
            );
        }
        let differ: Vec<String> = common_paths
            .iter()
            .filter(|p| ours[**p] != theirs[**p])
            .filter(|p| {
                let same_kind = ours[**p]["kind"] == theirs[**p]["kind"]
                    && ours[**p]["xattrs"] == theirs[**p]["xattrs"];
                !(made_differently.contains(&p.as_str()) && same_kind)
            })
            .map(|p| format!("{p}: kiln {} mmdebstrap {}", ours[*p], theirs[*p]))
            .collect();
        assert!(
            differ.is_empty(),
            "{what}: {} of {} common paths differ:\n{}",
            differ.len(),
            common_paths.len(),
            differ.join("\n")
        );
        let only = |a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>| -> Vec<String> {
            a.keys().filter(|p| !b.contains_key(*p)).cloned().collect()
        };
        eprintln!(
            "{what}: {} paths in common, identical but for {made_differently:?}; \
             kiln only: {:?}; mmdebstrap only: {:?}",
            common_paths.len(),
            only(ours, theirs),
            only(theirs, ours)
        );
    }
}
