//! Manifests generated for Debian `tar` images: golden, valid against the
//! reference schemas, and byte-for-byte reproducible.

mod common;

use common::check_manifest;
use kiln_api::customizations::{Blueprint, Customizations};
use kiln_api::validate::Family;
use kiln_manifests::customize::ImageCustomizations;
use kiln_manifests::generate::{manifest, ImageRequest, PackageFile};
use serde_json::{json, Value};

fn packages() -> Vec<PackageFile> {
    [
        ("systemd-sysv", "252.36-1~deb12u1", "amd64", 'a'),
        ("base-files", "12.4+deb12u11", "amd64", 'b'),
        ("iproute2", "6.1.0-3", "amd64", 'c'),
    ]
    .into_iter()
    .map(|(name, version, arch, fill)| PackageFile {
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        url: format!("file:///srv/mirror/pool/main/{name}_{version}_{arch}.deb"),
        sha256: fill.to_string().repeat(64),
    })
    .collect()
}

fn customizations() -> Customizations {
    serde_json::from_value(json!({
        "hostname": "node-001",
        "timezone": {"timezone": "Europe/Berlin"},
        "locale": {"languages": ["en_US.UTF-8"]},
        "groups": [{"name": "hpc", "gid": 2000}],
        "users": [{"name": "admin", "groups": ["hpc", "sudo"], "password": "$6$salt$hash",
                   "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQn admin@x"}],
        "services": {"enabled": ["chrony.service"], "masked": ["e2scrub_reap.service"]},
        "directories": [{"path": "/etc/kiln", "mode": "0750", "user": "admin", "group": "hpc"}],
        "files": [{"path": "/etc/kiln/motd", "data": "welcome to node-001\n", "mode": "0644"}]
    }))
    .unwrap()
}

fn build(
    family: Family,
    image_type: &str,
    filename: &str,
    pkgs: &[PackageFile],
    c: &ImageCustomizations,
) -> Value {
    manifest(&ImageRequest {
        family,
        arch: "x86_64",
        image_type,
        filename,
        source_epoch: 1747699200,
        packages: pkgs,
        customizations: c,
    })
    .unwrap()
}

fn generate(pkgs: &[PackageFile], c: &ImageCustomizations) -> Value {
    build(Family::Debian, "tar", "root.tar", pkgs, c)
}

fn rpm_packages() -> Vec<PackageFile> {
    [
        ("bash", "5.1.8-9.el9", "x86_64", 'd'),
        ("rocky-release", "9.5-1.2.el9", "noarch", 'e'),
    ]
    .into_iter()
    .map(|(name, version, arch, fill)| PackageFile {
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        url: format!("file:///srv/mirror/Packages/{name}-{version}.{arch}.rpm"),
        sha256: fill.to_string().repeat(64),
    })
    .collect()
}

/// Every image type the generator writes, for both families, with its golden file.
fn every_type() -> Vec<(&'static str, Value)> {
    let c = ImageCustomizations::from_customizations(&customizations());
    vec![
        ("debian-12-tar.json", generate(&packages(), &c)),
        (
            "debian-12-oci.json",
            build(Family::Debian, "oci", "image.oci.tar", &packages(), &c),
        ),
        (
            "rocky-9-tar.json",
            build(Family::Rpm, "tar", "root.tar", &rpm_packages(), &c),
        ),
        (
            "rocky-9-oci.json",
            build(Family::Rpm, "oci", "image.oci.tar", &rpm_packages(), &c),
        ),
        (
            "debian-12-pxe.json",
            build(
                Family::Debian,
                "pxe",
                "rootfs.squashfs",
                // With an SSH server: the unit that makes its host keys at boot.
                &with_package(
                    with_package(packages(), "openssh-server", "1:9.2p1-2+deb12u5", "e"),
                    "linux-image-6.1.0-35-amd64",
                    "6.1.137-1",
                    "f",
                ),
                &c,
            ),
        ),
        (
            "rocky-9-pxe.json",
            build(
                Family::Rpm,
                "pxe",
                "rootfs.squashfs",
                &with_package(
                    with_package(rpm_packages(), "openssh-server", "8.7p1-43.el9", "e"),
                    "kernel-core",
                    "5.14.0-503.14.1.el9_5",
                    "f",
                ),
                &c,
            ),
        ),
        (
            "debian-12-disk.json",
            build(
                Family::Debian,
                "disk",
                "disk.qcow2",
                &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
                &c,
            ),
        ),
        // osbuild's names: a raw disk, and the pxe files in one .tar.xz.
        (
            "debian-12-minimal-raw.json",
            build(
                Family::Debian,
                "minimal-raw",
                "disk.raw",
                &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
                &c,
            ),
        ),
        (
            "debian-12-pxe-tar-xz.json",
            build(
                Family::Debian,
                "pxe-tar-xz",
                "pxe.tar.xz",
                &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
                &c,
            ),
        ),
        (
            "rocky-9-disk.json",
            build(
                Family::Rpm,
                "disk",
                "disk.qcow2",
                &with_package(rpm_packages(), "kernel-core", "5.14.0-503.14.1.el9_5", "f"),
                &c,
            ),
        ),
    ]
}

/// `pkgs` and one more package (a kernel, an SSH server), its checksum
/// `fill` repeated.
fn with_package(
    mut pkgs: Vec<PackageFile>,
    name: &str,
    version: &str,
    fill: &str,
) -> Vec<PackageFile> {
    let arch = pkgs[0].arch.clone();
    pkgs.push(PackageFile {
        name: name.into(),
        version: version.into(),
        arch: arch.clone(),
        url: format!("file:///srv/mirror/{name}_{version}_{arch}"),
        sha256: fill.repeat(64),
    });
    pkgs
}

#[test]
fn every_image_type_matches_its_golden_manifest() {
    for (file, m) in every_type() {
        let got = serde_json::to_string_pretty(&m).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file);
        if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .expect("golden manifest (KILN_UPDATE_GOLDEN=1 writes it)");
        assert_eq!(
            got, want,
            "generated manifest differs from tests/data/{file}"
        );
    }
}

#[test]
fn every_golden_manifest_validates_against_the_reference_schemas() {
    for (file, m) in every_type() {
        if let Some(errors) = check_manifest(&m) {
            assert!(errors.is_empty(), "{file}:\n{}", errors.join("\n"));
        }
        kiln_manifests::ids(&m).unwrap();
    }
    let m = generate(
        &packages(),
        &ImageCustomizations::from_customizations(&customizations()),
    );
    // kiln's stage schema bites too.
    let mut bad = m.clone();
    bad["pipelines"][0]["stages"][0]["options"]["packages"][0]["checksum"] = json!("md5:abc");
    if let Some(errors) = check_manifest(&bad) {
        assert!(errors.iter().any(|e| e.contains("pipelines[0].stages[0]")));
    }
    // And every stage has an id.
    kiln_manifests::ids(&m).unwrap();
}

#[test]
fn every_pipeline_carries_the_source_epoch() {
    // Archives, squashfs, mkfs and images take their timestamps from it:
    // an export pipeline without it would not be reproducible.
    for (file, m) in every_type() {
        for p in m["pipelines"].as_array().unwrap() {
            assert_eq!(
                p["source-epoch"],
                json!(1747699200),
                "{file}: {}",
                p["name"]
            );
        }
    }
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let c = ImageCustomizations::from_customizations(&customizations());
    let a = serde_json::to_vec(&generate(&packages(), &c)).unwrap();
    let b = serde_json::to_vec(&generate(&packages(), &c)).unwrap();
    assert_eq!(a, b);
    // The order the solver listed packages in does not matter.
    let mut reversed = packages();
    reversed.reverse();
    assert_eq!(serde_json::to_vec(&generate(&reversed, &c)).unwrap(), a);
    // A different package changes the tree's stage ids.
    let mut other = packages();
    other[0].version = "252.36-1~deb12u2".into();
    let ids_a = kiln_manifests::ids(&generate(&packages(), &c)).unwrap();
    let ids_b = kiln_manifests::ids(&generate(&other, &c)).unwrap();
    assert_ne!(ids_a.pipelines[0].stages[0], ids_b.pipelines[0].stages[0]);
}

#[test]
fn a_blueprint_spelling_gives_the_same_manifest() {
    let blueprint: Blueprint = serde_json::from_value(json!({
        "name": "node",
        "customizations": {
            "hostname": "node-001",
            "timezone": {"timezone": "Europe/Berlin"},
            "locale": {"languages": ["en_US.UTF-8"]},
            "group": [{"name": "hpc", "gid": 2000}],
            "user": [{"name": "admin", "groups": ["hpc", "sudo"], "password": "$6$salt$hash"}],
            "sshkey": [{"user": "admin", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8gS0Vhb3bmQn admin@x"}],
            "services": {"enabled": ["chrony.service"], "masked": ["e2scrub_reap.service"]},
            "directories": [{"path": "/etc/kiln", "mode": "0750", "user": "admin", "group": "hpc"}],
            "files": [{"path": "/etc/kiln/motd", "data": "welcome to node-001\n", "mode": "0644"}]
        }
    }))
    .unwrap();
    assert_eq!(
        generate(
            &packages(),
            &ImageCustomizations::from_blueprint(&blueprint)
        ),
        generate(
            &packages(),
            &ImageCustomizations::from_customizations(&customizations())
        )
    );
}

#[test]
fn a_container_configuration_reaches_the_oci_archive() {
    let oci = json!({
        "entrypoint": ["/usr/bin/kiln-composer"],
        "env": ["RUST_LOG=info"],
        "user": "kiln-composer",
        "exposed_ports": ["8700", "8701/tcp", "53/udp"],
        "labels": {"org.opencontainers.image.title": "kiln composer"},
        "working_dir": "/var/lib/kiln-composer",
        "volumes": ["/var/lib/kiln-composer"],
        "stop_signal": "SIGINT",
    });
    let config = |c: &ImageCustomizations| {
        let m = build(Family::Debian, "oci", "image.oci.tar", &packages(), c);
        if let Some(errors) = check_manifest(&m) {
            assert!(errors.is_empty(), "{}", errors.join("\n"));
        }
        let container = m["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "container")
            .unwrap()
            .clone();
        container["stages"][0]["options"]["config"].clone()
    };
    let from_api: Customizations = serde_json::from_value(json!({"oci": oci})).unwrap();
    let got = config(&ImageCustomizations::from_customizations(&from_api));
    assert_eq!(
        got,
        json!({
            // An entrypoint without arguments: no default shell after it.
            "Cmd": [],
            "Entrypoint": ["/usr/bin/kiln-composer"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "RUST_LOG=info"],
            "ExposedPorts": ["8700/tcp", "8701/tcp", "53/udp"],
            "User": "kiln-composer",
            "Labels": {"org.opencontainers.image.title": "kiln composer"},
            "StopSiganl": "SIGINT",
            "Volumes": ["/var/lib/kiln-composer"],
            "WorkingDir": "/var/lib/kiln-composer",
        })
    );
    // The blueprint spelling says the same.
    let blueprint: Blueprint =
        serde_json::from_value(json!({"name": "c", "customizations": {"oci": oci}})).unwrap();
    assert_eq!(
        config(&ImageCustomizations::from_blueprint(&blueprint)),
        got
    );
    // A PATH of the request's own replaces Debian's; a command alone stays.
    let own: Customizations = serde_json::from_value(
        json!({"oci": {"cmd": ["/bin/bash", "-l"], "env": ["PATH=/opt/bin"]}}),
    )
    .unwrap();
    assert_eq!(
        config(&ImageCustomizations::from_customizations(&own)),
        json!({"Cmd": ["/bin/bash", "-l"], "Env": ["PATH=/opt/bin"]})
    );
    // Without one, the shell, as before.
    assert_eq!(
        config(&ImageCustomizations::default()),
        json!({"Cmd": ["/bin/sh"]})
    );
}

#[test]
fn pxe_boots_the_depsolved_kernel_with_a_live_root() {
    let c = ImageCustomizations::from_customizations(&customizations());
    let m = build(
        Family::Debian,
        "pxe",
        "rootfs.squashfs",
        &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
        &c,
    );
    let names: Vec<&str> = m["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["os", "rootfs", "initrd", "pxe"]);
    // The initramfs is made by the os tree's dracut in a pipeline of its
    // own, beside the root file system, which leaves out /boot.
    let os = m["pipelines"][0]["stages"].as_array().unwrap();
    assert!(!os.iter().any(|s| s["type"] == "org.osbuild.dracut"));
    assert_eq!(
        m["pipelines"][1]["stages"][0]["options"]["exclude_paths"],
        json!(["^boot$/.*"])
    );
    let initrd = &m["pipelines"][2];
    assert_eq!(initrd["build"], "name:os");
    let dracut = &initrd["stages"][0];
    assert_eq!(dracut["type"], "kiln.dracut");
    assert_eq!(dracut["options"]["kernel"], "6.1.0-35-amd64");
    assert!(dracut["options"]["add_modules"]
        .as_array()
        .unwrap()
        .contains(&json!("dmsquash-live")));
    let copy = &m["pipelines"][3]["stages"][0]["options"]["paths"];
    assert_eq!(copy[0]["from"], "input://tree/boot/vmlinuz-6.1.0-35-amd64");
    assert_eq!(copy[1]["from"], "input://initrd/initrd.img");
    assert_eq!(m["metadata"]["exports"], json!([{"name": "pxe"}]));
    let mut c = c;
    c.kernel_append = Some("console=ttyS0".into());
    c.cloud_init_datasource = Some("nocloud-net;s=http://10.0.0.1/ci/".into());
    assert_eq!(
        kiln_manifests::generate::pxe_kernel_cmdline(&c),
        "rd.live.overlay.overlayfs=1 ip=dhcp rd.neednet=1 ds=nocloud-net;s=http://10.0.0.1/ci/ console=ttyS0"
    );
    // The root fetched over HTTP brings the network up; a local block
    // device does not wait for one.
    assert_eq!(
        kiln_manifests::generate::pxe_kernel_cmdline_with_root(
            "live:http://10.0.0.1/rootfs.squashfs",
            &c
        ),
        "root=live:http://10.0.0.1/rootfs.squashfs rd.live.overlay.overlayfs=1 ip=dhcp rd.neednet=1 ds=nocloud-net;s=http://10.0.0.1/ci/ console=ttyS0"
    );
    c.cloud_init_datasource = None;
    assert_eq!(
        kiln_manifests::generate::pxe_kernel_cmdline_with_root("live:/dev/vda", &c),
        "root=live:/dev/vda rd.live.overlay.overlayfs=1 console=ttyS0"
    );
}

#[test]
fn disk_boots_from_the_root_its_fstab_and_grub_name() {
    let mut c = ImageCustomizations::from_customizations(&customizations());
    c.filesystems.push(("/".into(), 10 << 30));
    c.kernel_append = Some("console=ttyS0".into());
    c.cloud_init_datasource = Some("nocloud-net;s=http://10.0.0.1/ci/".into());
    let m = build(
        Family::Debian,
        "disk",
        "disk.qcow2",
        &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
        &c,
    );
    let image = &m["pipelines"][1]["stages"];
    let mkfs = &image[2];
    let uuid = mkfs["options"]["uuid"].as_str().unwrap();
    // The root file system's UUID is the one fstab and the boot entry use.
    let os = m["pipelines"][0]["stages"].as_array().unwrap();
    let fstab = os
        .iter()
        .find(|s| s["type"] == "org.osbuild.fstab")
        .unwrap();
    assert_eq!(fstab["options"]["filesystems"][0]["uuid"], uuid);
    let cfg_id = os
        .iter()
        .rev()
        .find(|s| s["type"] == "org.osbuild.copy")
        .unwrap()["inputs"]["grubcfg"]["references"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = m["sources"]["org.osbuild.inline"]["items"][&cfg_id]["data"]
        .as_str()
        .unwrap();
    let cfg = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).unwrap(),
    )
    .unwrap();
    assert!(
        cfg.contains(&format!(
            "linux /boot/vmlinuz-6.1.0-35-amd64 root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8 ds=nocloud-net;s=http://10.0.0.1/ci/ console=ttyS0"
        )),
        "{cfg}"
    );
    assert!(
        cfg.contains("initrd /boot/initramfs-6.1.0-35-amd64.img\n"),
        "{cfg}"
    );
    // GRUB talks on the serial port too.
    assert!(cfg.starts_with("serial --unit=0 --speed=115200\n"), "{cfg}");
    // GRUB's core image finds `normal` and the modules grub.cfg loads in
    // /boot/grub/i386-pc: copied there from the tree's grub-pc-bin.
    let modules = os
        .iter()
        .find(|s| {
            s["type"] == "org.osbuild.copy"
                && s["options"]["paths"][0]["from"] == "tree:///usr/lib/grub/i386-pc/"
        })
        .unwrap_or_else(|| panic!("no copy of GRUB's modules in {os:#?}"));
    assert_eq!(
        modules["options"]["paths"][0]["to"],
        "tree:///boot/grub/i386-pc/"
    );
    assert!(os.iter().any(|s| s["type"] == "org.osbuild.mkdir"
        && s["options"]["paths"][0]["path"] == "/boot/grub/i386-pc"));
    // The disk grows to hold the root file system asked for, in whole MiB.
    let size: u64 = image[0]["options"]["size"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        size >= (10 << 30) + 2048 * 512 && size.is_multiple_of(1 << 20),
        "{size}"
    );
    assert_eq!(
        m["metadata"]["exports"],
        json!([{"name": "image"}, {"name": "qcow2"}])
    );
    // Same inputs, same UUIDs.
    let again = build(
        Family::Debian,
        "disk",
        "disk.qcow2",
        &with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
        &c,
    );
    assert_eq!(again, m);
}

#[test]
fn image_types_not_written_yet_are_refused_by_name() {
    let c = ImageCustomizations::default();
    let pkgs = packages();
    let req = |image_type, packages| ImageRequest {
        family: Family::Debian,
        arch: "x86_64",
        image_type,
        filename: "x",
        source_epoch: 0,
        packages,
        customizations: &c,
    };
    assert_eq!(manifest(&req("iso", &pkgs)).unwrap_err().path, "image_type");
    // A disk boots a kernel too: none in the set is refused naming the packages.
    assert_eq!(manifest(&req("disk", &pkgs)).unwrap_err().path, "packages");
    // A pxe image without a kernel, or with two, is refused naming the packages.
    let err = manifest(&req("pxe", &pkgs)).unwrap_err();
    assert_eq!(err.path, "packages");
    assert!(err.message.contains("needs a kernel"), "{err}");
    let two = with_package(
        with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f"),
        "linux-image-6.1.0-36-amd64",
        "6.1.140-1",
        "f",
    );
    assert!(manifest(&req("pxe", &two))
        .unwrap_err()
        .message
        .contains("one kernel"));
    assert_eq!(manifest(&req("tar", &[])).unwrap_err().path, "packages");
}

#[test]
fn upstream_image_type_names_build_kiln_images() {
    let c = ImageCustomizations::from_customizations(&customizations());
    let kernel = || with_package(packages(), "linux-image-6.1.0-35-amd64", "6.1.137-1", "f");
    let disk = build(Family::Debian, "disk", "disk.qcow2", &kernel(), &c);
    // guest-image is the qcow2 disk, byte for byte.
    assert_eq!(
        build(Family::Debian, "guest-image", "disk.qcow2", &kernel(), &c),
        disk
    );
    assert_eq!(
        kiln_manifests::generate::export_pipeline("guest-image"),
        "qcow2"
    );
    // minimal-raw: the same pipelines up to the raw image, which it exports.
    let raw = build(Family::Debian, "minimal-raw", "disk.raw", &kernel(), &c);
    let names = |m: &Value| -> Vec<String> {
        m["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut without_qcow2 = names(&disk);
    without_qcow2.retain(|n| n != "qcow2");
    assert_eq!(names(&raw), without_qcow2);
    assert_eq!(
        raw["pipelines"][0], disk["pipelines"][0],
        "the same os tree"
    );
    assert_eq!(
        kiln_manifests::generate::export_pipeline("minimal-raw"),
        "image"
    );
    // pxe-tar-xz: the pxe pipelines and one tar.xz of the pxe tree.
    let pxe = build(Family::Debian, "pxe", "rootfs.squashfs", &kernel(), &c);
    let tarxz = build(Family::Debian, "pxe-tar-xz", "pxe.tar.xz", &kernel(), &c);
    assert_eq!(
        names(&tarxz),
        [names(&pxe), vec!["tar".to_owned(), "tarball".to_owned()]].concat()
    );
    let pipelines = tarxz["pipelines"].as_array().unwrap();
    let (tar, tarball) = (
        &pipelines[pipelines.len() - 2],
        &pipelines[pipelines.len() - 1],
    );
    assert_eq!(tar["stages"][0]["options"]["filename"], "pxe.tar");
    assert_eq!(
        tar["stages"][0]["inputs"]["tree"]["references"],
        json!(["name:pxe"])
    );
    assert_eq!(tarball["stages"][0]["type"], "org.osbuild.xz");
    assert_eq!(tarball["stages"][0]["options"]["filename"], "pxe.tar.xz");
    assert_eq!(
        kiln_manifests::generate::export_pipeline("pxe-tar-xz"),
        "tarball"
    );
}
