//! From a depsolved package set and customizations to an osbuild v2 manifest.
//!
//! Pipelines, as osbuild-composer names them: `os` (the tree) and the exports
//! (`archive` for `tar`, `container` for `oci`, `rootfs` + `pxe` for `pxe`,
//! `image` (raw, BIOS-bootable with GRUB) + `qcow2` for `disk`). Debian trees are
//! installed by kiln's `kiln.dpkg` stage (schema in `manifests/stages/`), RPM
//! trees by osbuild's `org.osbuild.rpm`, a disk's root file system made from
//! the tree by `kiln.mkfs.ext4`; everything else uses osbuild's own stages
//! with osbuild's option schemas. No build pipeline: the install
//! stages run with the build host's tools (dpkg, rpm). The same inputs give the
//! same bytes: maps are ordered and nothing depends on time or randomness.

use base64::Engine;
use kiln_api::validate::Family;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::customize::{Entry, ImageCustomizations};
use crate::ManifestError;

/// One package of the depsolved set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub url: String,
    /// Hex SHA-256 of the package file.
    pub sha256: String,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageRequest<'a> {
    pub family: Family,
    /// Image architecture, as the distribution names it (`x86_64`).
    pub arch: &'a str,
    pub image_type: &'a str,
    /// The exported file's name, from the distribution's image type.
    pub filename: &'a str,
    /// SOURCE_DATE_EPOCH of the tree.
    pub source_epoch: u64,
    pub packages: &'a [PackageFile],
    pub customizations: &'a ImageCustomizations,
}

/// Image types this generator writes (for both families).
pub fn supported(_family: Family, image_type: &str) -> bool {
    matches!(base(image_type), "tar" | "oci" | "pxe" | "disk")
}

/// The kiln image type an image type is built as: osbuild's names for the
/// same images (`guest-image`: the qcow2 `disk`; `minimal-raw`: `disk`,
/// exported raw; `pxe-tar-xz`: `pxe`, its three files in one `.tar.xz`).
pub fn base(image_type: &str) -> &str {
    match image_type {
        "guest-image" | "minimal-raw" => "disk",
        "pxe-tar-xz" => "pxe",
        other => other,
    }
}

/// Size of a `disk` image when no file system asks for more.
const DEFAULT_DISK_BYTES: u64 = 4 << 30;
/// Where the root partition starts, in 512-byte sectors (1 MiB: room for GRUB).
const ROOT_START: u64 = 2048;
/// Where GRUB's core image goes: the first sector after the MBR, in the gap
/// before the root partition (osbuild's `location` is where the core is
/// written, so the root partition's start would overwrite its file system).
const GRUB_CORE_SECTOR: u64 = 1;

/// A UUID derived from `what` and the image's inputs: the same inputs give
/// the same UUIDs, hence the same manifest bytes.
fn stable_uuid(what: &str, packages: &[&PackageFile]) -> String {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    for p in packages {
        h.update(p.sha256.as_bytes());
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The pipelines a `disk` image adds after `os`: the raw disk (`image`) and
/// its qcow2 (`qcow2`). Also returns the stages `os` needs for it.
fn disk(
    req: &ImageRequest,
    packages: &[&PackageFile],
    kver: &str,
    inline: &mut Map<String, Value>,
) -> (Vec<Value>, Vec<Value>) {
    let root_uuid = stable_uuid("root", packages);
    let disk_id = format!("0x{}", &stable_uuid("disk", packages)[..8]);
    let min_root = req
        .customizations
        .filesystems
        .iter()
        .filter(|(m, _)| m == "/")
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    let bytes = DEFAULT_DISK_BYTES
        .max(min_root + (ROOT_START * 512))
        .div_ceil(1 << 20)
        * (1 << 20);
    let sectors = bytes / 512;
    let root_sectors = sectors - ROOT_START;
    let (grub_dir, mkimage, initrd) = match req.family {
        Family::Debian => (
            "/boot/grub",
            "grub-mkimage",
            format!("/boot/initramfs-{kver}.img"),
        ),
        Family::Rpm => (
            "/boot/grub2",
            "grub2-mkimage",
            format!("/boot/initramfs-{kver}.img"),
        ),
    };
    // The serial console last: /dev/console (systemd's status, emergency
    // shells) is the serial port of a rack node or a VM, as osbuild-composer's
    // qcow2 images do it.
    let mut cmdline = format!("root=UUID={root_uuid} ro console=tty0 console=ttyS0,115200n8");
    if let Some(ds) = &req.customizations.cloud_init_datasource {
        cmdline.push_str(&format!(" ds={ds}"));
    }
    if let Some(a) = req
        .customizations
        .kernel_append
        .as_deref()
        .filter(|a| !a.trim().is_empty())
    {
        cmdline.push(' ');
        cmdline.push_str(a.trim());
    }
    let vmlinuz = match req.family {
        Family::Debian => format!("/boot/vmlinuz-{kver}"),
        Family::Rpm => format!("/lib/modules/{kver}/vmlinuz"),
    };
    let grub_cfg = format!(
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
         set timeout=1\nset default=0\ninsmod part_msdos\ninsmod ext2\nsearch --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry 'kiln {kver}' {{\n    linux {vmlinuz} {cmdline}\n    initrd {initrd}\n}}\n"
    );
    let cfg_id = format!("sha256:{}", sha256_hex(grub_cfg.as_bytes()));
    inline.insert(
        cfg_id.clone(),
        json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&grub_cfg)}),
    );
    let os_stages = vec![
        json!({"type": "org.osbuild.dracut", "options": {"kernel": [kver], "compress": "zstd"}}),
        json!({"type": "org.osbuild.fstab", "options": {"filesystems": [
            {"uuid": root_uuid, "vfs_type": "ext4", "path": "/", "options": "defaults", "freq": 1, "passno": 1}
        ]}}),
        json!({"type": "org.osbuild.mkdir", "options": {"paths": [{"path": format!("{grub_dir}/i386-pc"), "parents": true, "exist_ok": true}]}}),
        // What osbuild's grub2 stage does for legacy boot: the core image
        // (grub2.inst) holds only what finds the prefix; `normal` and every
        // module grub.cfg needs are loaded from {grub_dir}/i386-pc. They come
        // from the tree's own GRUB package (grub-pc-bin), the same version
        // as the build root's for the depsolved set.
        json!({"type": "org.osbuild.copy", "options": {"paths": [
            {"from": "tree:///usr/lib/grub/i386-pc/", "to": format!("tree://{grub_dir}/i386-pc/")}
        ]}}),
        json!({
            "type": "org.osbuild.copy",
            "inputs": {"grubcfg": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": [{"id": cfg_id}]}},
            "options": {"paths": [{"from": format!("input://grubcfg/{cfg_id}"), "to": format!("tree://{grub_dir}/grub.cfg")}]},
        }),
    ];
    let root_device = json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw", "start": ROOT_START, "size": root_sectors}});
    let tree = json!({"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]});
    let pipelines = vec![
        json!({"name": "image", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": bytes.to_string()}},
            {"type": "org.osbuild.sfdisk",
             "devices": {"device": {"type": "org.osbuild.loopback", "options": {"filename": "disk.raw"}}},
             "options": {"label": "dos", "uuid": disk_id, "partitions": [
                 {"bootable": true, "start": ROOT_START, "size": root_sectors, "type": "83"}
             ]}},
            // The root file system, made from the tree at the partition's
            // offset (kiln's stage: osbuild mounts the new file system
            // through a loop device and copies the tree in, which takes
            // privileges no kiln build has).
            {"type": "kiln.mkfs.ext4", "inputs": {"tree": tree}, "devices": {"device": root_device},
             "options": {"uuid": root_uuid, "label": "root"}},
            {"type": "org.osbuild.grub2.inst", "options": {
                "filename": "disk.raw", "platform": "i386-pc", "location": GRUB_CORE_SECTOR,
                "core": {"type": "mkimage", "partlabel": "dos", "filesystem": "ext4", "binary": mkimage},
                "prefix": {"type": "partition", "partlabel": "dos", "number": 0, "path": grub_dir},
            }},
        ]}),
        json!({"name": "qcow2", "stages": [{
            "type": "org.osbuild.qemu",
            "inputs": {"image": {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
                                 "references": {"name:image": {"file": "disk.raw"}}}},
            "options": {"filename": req.filename, "format": {"type": "qcow2", "compat": "1.1"}},
        }]}),
    ];
    (os_stages, pipelines)
}

/// The dracut modules a diskless node's initrd needs to fetch its root over
/// HTTP and run it from RAM with a tmpfs overlay (`root=live:URL`).
const LIVE_MODULES: &[&str] = &["dmsquash-live", "livenet", "network-legacy"];

/// The kernel release of the depsolved set, as /lib/modules names it.
fn kernel_release(family: Family, packages: &[&PackageFile]) -> Result<String, ManifestError> {
    let found: Vec<String> = match family {
        // linux-image-6.1.0-35-amd64 (not the linux-image-amd64 metapackage).
        Family::Debian => packages
            .iter()
            .filter_map(|p| p.name.strip_prefix("linux-image-"))
            .filter(|r| {
                r.starts_with(|c: char| c.is_ascii_digit())
                    && !r.ends_with("-dbg")
                    && !r.ends_with("-unsigned")
            })
            .map(str::to_owned)
            .collect(),
        // kernel-core 5.14.0-503.14.1.el9_5, x86_64 -> 5.14.0-503.14.1.el9_5.x86_64
        Family::Rpm => packages
            .iter()
            .filter(|p| p.name == "kernel-core" || p.name == "kernel")
            .map(|p| {
                let v = p
                    .version
                    .split_once(':')
                    .map(|(_, v)| v)
                    .unwrap_or(&p.version);
                format!("{v}.{}", p.arch)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ManifestError {
            path: "packages".into(),
            message: "a pxe image needs a kernel: the package set has none (linux-image-<arch> or kernel)".into(),
        }),
        many => Err(ManifestError {
            path: "packages".into(),
            message: format!("a pxe image boots one kernel; the package set has {}", many.join(", ")),
        }),
    }
}

/// The kernel command line a `pxe` image boots with over the network,
/// without its root: the boot target adds `root=live:<URL of rootfs.squashfs>`.
pub fn pxe_kernel_cmdline(c: &ImageCustomizations) -> String {
    live_cmdline(true, c)
}

/// The whole kernel command line of a `pxe` image whose root file system is
/// `root` (`live:http://SERVER/rootfs.squashfs`, or a block device holding
/// it: `live:/dev/vda`). The network is brought up (`ip=dhcp rd.neednet=1`)
/// only when the root is fetched: without a network device dracut would
/// wait for one until it gives up.
pub fn pxe_kernel_cmdline_with_root(root: &str, c: &ImageCustomizations) -> String {
    let fetched = root
        .strip_prefix("live:")
        .is_some_and(|r| r.contains("://") || r.starts_with("nfs:"));
    format!("root={root} {}", live_cmdline(fetched, c))
}

fn live_cmdline(network: bool, c: &ImageCustomizations) -> String {
    let mut args = vec!["rd.live.overlay.overlayfs=1".to_string()];
    if network {
        args.push("ip=dhcp".into());
        args.push("rd.neednet=1".into());
    }
    if let Some(ds) = &c.cloud_init_datasource {
        args.push(format!("ds={ds}"));
    }
    if let Some(a) = c.kernel_append.as_deref().filter(|a| !a.trim().is_empty()) {
        args.push(a.trim().to_owned());
    }
    args.join(" ")
}

/// The PATH of a container unless its request sets one.
const CONTAINER_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `org.osbuild.oci-archive`'s `config` from the request's `oci`: a shell
/// when it names no program; no default arguments after an entrypoint;
/// Debian's PATH unless `env` sets one; ports without a protocol are TCP.
fn container_config(oci: Option<&kiln_api::customizations::OciConfig>) -> Value {
    let Some(o) = oci else {
        return json!({"Cmd": ["/bin/sh"]});
    };
    let mut config = Map::new();
    let cmd = match (&o.cmd, &o.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => vec!["/bin/sh".to_owned()],
    };
    config.insert("Cmd".into(), json!(cmd));
    if let Some(e) = &o.entrypoint {
        config.insert("Entrypoint".into(), json!(e));
    }
    let mut env = o.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, CONTAINER_PATH.to_owned());
    }
    config.insert("Env".into(), json!(env));
    if let Some(ports) = &o.exposed_ports {
        let ports: Vec<String> = ports
            .iter()
            .map(|p| match p.contains('/') {
                true => p.clone(),
                false => format!("{p}/tcp"),
            })
            .collect();
        config.insert("ExposedPorts".into(), json!(ports));
    }
    if let Some(u) = &o.user {
        config.insert("User".into(), json!(u));
    }
    if let Some(l) = &o.labels {
        config.insert("Labels".into(), json!(l));
    }
    // osbuild's schema spells the option so.
    if let Some(s) = &o.stop_signal {
        config.insert("StopSiganl".into(), json!(s));
    }
    if let Some(v) = &o.volumes {
        config.insert("Volumes".into(), json!(v));
    }
    if let Some(w) = &o.working_dir {
        config.insert("WorkingDir".into(), json!(w));
    }
    Value::Object(config)
}

/// The architecture as OCI image configs name it (Go's names).
fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Builds the manifest for a request.
pub fn manifest(req: &ImageRequest) -> Result<Value, ManifestError> {
    if !supported(req.family, req.image_type) {
        return Err(ManifestError {
            path: "image_type".into(),
            message: format!(
                "no manifest for image type {:?} of the {:?} family yet",
                req.image_type, req.family
            ),
        });
    }
    if req.packages.is_empty() {
        return Err(ManifestError {
            path: "packages".into(),
            message: "an image needs packages".into(),
        });
    }
    let mut packages: Vec<&PackageFile> = req.packages.iter().collect();
    packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));

    let mut curl = Map::new();
    for p in &packages {
        curl.insert(format!("sha256:{}", p.sha256), Value::String(p.url.clone()));
    }
    let mut inline = Map::new();

    let references: Vec<Value> = packages
        .iter()
        .map(|p| json!({"id": format!("sha256:{}", p.sha256)}))
        .collect();
    let inputs = json!({"packages": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": references}});
    let install = match req.family {
        Family::Debian => json!({
            "type": "kiln.dpkg",
            "inputs": inputs,
            "options": {"packages": packages.iter().map(|p| json!({
                "name": p.name, "version": p.version, "arch": p.arch, "checksum": format!("sha256:{}", p.sha256),
            })).collect::<Vec<_>>()},
        }),
        // osbuild's own stage: rpm --root with the package files, by checksum.
        Family::Rpm => json!({"type": "org.osbuild.rpm", "inputs": inputs}),
    };
    let mut stages = vec![install];
    // A Debian tree has the device nodes debootstrap and mmdebstrap give
    // it; not an OCI image's: a container's /dev is its runtime's, and
    // Debian's own container images ship it empty.
    let kind = base(req.image_type);
    if req.family == Family::Debian && kind != "oci" {
        stages.extend(debian_dev_stages());
    }
    stages.extend(node_identity_stages(&packages));
    stages.extend(customization_stages(req.customizations, &mut inline));
    let mut disk_pipelines = Vec::new();
    let kernel = match kind {
        // The initramfs is a pipeline of its own (below), made beside the
        // root file system.
        "pxe" => Some(kernel_release(req.family, &packages)?),
        "disk" => {
            let kver = kernel_release(req.family, &packages)?;
            let (os, pipelines) = disk(req, &packages, &kver, &mut inline);
            stages.extend(os);
            disk_pipelines = pipelines;
            Some(kver)
        }
        _ => None,
    };

    let mut sources = Map::new();
    sources.insert("org.osbuild.curl".into(), json!({"items": curl}));
    if !inline.is_empty() {
        sources.insert("org.osbuild.inline".into(), json!({"items": inline}));
    }
    // Last in `os`, after everything that runs package tools: every
    // artifact is made from the cleaned tree.
    stages.push(json!({
        "type": "kiln.identity.clean",
        "options": {"remove": IDENTITY_REMOVE, "empty": IDENTITY_EMPTY},
    }));
    // And after it: the same inputs give the same tree, so the same bytes
    // in every artifact made from it.
    stages.push(json!({
        "type": "kiln.reproducible",
        "options": {"remove": match req.family {
            Family::Debian => DEBIAN_BUILD_RECORDS,
            Family::Rpm => RPM_BUILD_RECORDS,
        }},
    }));
    let tree = |name: &str| json!({"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": [format!("name:{name}")]});
    let mut pipelines = vec![json!({"name": "os", "stages": stages})];
    match (kind, &kernel) {
        ("oci", _) => pipelines.push(json!({"name": "container", "stages": [{
            "type": "org.osbuild.oci-archive",
            "inputs": {"base": tree("os")},
            "options": {"architecture": oci_arch(req.arch), "filename": req.filename,
                        "config": container_config(req.customizations.oci.as_ref())},
        }]})),
        ("pxe", Some(kver)) => {
            // Lean: nodes get the kernel and initramfs on their own, so the
            // root file system leaves out what is in /boot (the directory
            // stays, empty).
            pipelines.push(json!({"name": "rootfs", "stages": [{
                "type": "org.osbuild.squashfs",
                "inputs": {"tree": tree("os")},
                "options": {"filename": "rootfs.squashfs", "compression": {"method": "zstd"},
                            "exclude_paths": ["^boot$/.*"]},
            }]}));
            // The os tree's dracut, its modules and kernel, run with the
            // tree as the build root: this pipeline and `rootfs` take only
            // `os`, so the executor builds them at the same time.
            pipelines.push(json!({"name": "initrd", "build": "name:os", "stages": [{
                "type": "kiln.dracut",
                "options": {"kernel": kver, "filename": "initrd.img",
                            "add_modules": LIVE_MODULES, "compress": "zstd"},
            }]}));
            // Debian keeps the kernel in /boot; RPM systems in /lib/modules.
            let vmlinuz = match req.family {
                Family::Debian => format!("input://tree/boot/vmlinuz-{kver}"),
                Family::Rpm => format!("input://tree/lib/modules/{kver}/vmlinuz"),
            };
            pipelines.push(json!({"name": "pxe", "stages": [{
                "type": "org.osbuild.copy",
                "inputs": {"tree": tree("os"), "initrd": tree("initrd"), "rootfs": tree("rootfs")},
                "options": {"paths": [
                    {"from": vmlinuz, "to": "tree:///vmlinuz"},
                    {"from": "input://initrd/initrd.img", "to": "tree:///initrd.img"},
                    {"from": "input://rootfs/rootfs.squashfs", "to": "tree:///rootfs.squashfs"},
                ]},
            }]}));
        }
        ("disk", Some(_)) => {
            // A raw export needs no qcow2.
            if req.image_type == "minimal-raw" {
                disk_pipelines.retain(|p| p["name"] != "qcow2");
            }
            pipelines.append(&mut disk_pipelines)
        }
        _ => pipelines.push(json!({"name": "archive", "stages": [{
            "type": "org.osbuild.tar",
            "inputs": {"tree": tree("os")},
            // pax: the only tar format that keeps extended attributes
            // (file capabilities among them).
            // numeric-owner: the image's own ids, not names looked up in
            // the build host's passwd (another host, other names).
            "options": {"filename": req.filename, "format": "posix", "numeric-owner": true},
        }]})),
    }
    if req.image_type == "pxe-tar-xz" {
        // Upstream's shape: kernel, initramfs and root file system in one
        // tar, compressed by `org.osbuild.xz` (its fast preset: the three
        // files are compressed already).
        let tar_name = req.filename.strip_suffix(".xz").unwrap_or(req.filename);
        pipelines.push(json!({"name": "tar", "stages": [{
            "type": "org.osbuild.tar",
            "inputs": {"tree": tree("pxe")},
            "options": {"filename": tar_name, "format": "posix", "root-node": "omit", "numeric-owner": true},
        }]}));
        pipelines.push(json!({"name": "tarball", "stages": [{
            "type": "org.osbuild.xz",
            "inputs": {"file": {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
                                "references": {"name:tar": {"file": tar_name}}}},
            "options": {"filename": req.filename},
        }]}));
    }
    // Every pipeline carries the epoch: archives, file systems and images
    // take their timestamps from it, so they are reproducible too.
    for p in &mut pipelines {
        p["source-epoch"] = json!(req.source_epoch);
    }
    Ok(json!({
        "version": "2",
        "pipelines": pipelines,
        "sources": sources,
        "metadata": {
            "exports": exports(req.image_type).iter().map(|e| json!({"name": e})).collect::<Vec<_>>(),
            "generators": [{"name": "kiln", "version": env!("CARGO_PKG_VERSION")}],
        },
    }))
}

/// The /dev of a Debian tree, as mmdebstrap makes it: its character
/// devices (recorded by `kiln.devices`, since no stage can `mknod`) and
/// the mount points `pts` and `shm`.
fn debian_dev_stages() -> Vec<Value> {
    let nodes: Vec<Value> = DEBIAN_DEVICES
        .iter()
        .map(|(name, major, minor)| {
            json!({"path": format!("/dev/{name}"), "type": "char", "major": major, "minor": minor, "mode": 0o666})
        })
        .collect();
    vec![
        json!({"type": "kiln.devices", "options": {"nodes": nodes}}),
        json!({"type": "org.osbuild.mkdir", "options": {"paths": [
            {"path": "/dev/pts", "mode": 0o755, "exist_ok": true},
            {"path": "/dev/shm", "mode": 0o755, "exist_ok": true},
        ]}}),
    ]
}

/// (name, major, minor), all 0666 root:root.
const DEBIAN_DEVICES: &[(&str, u32, u32)] = &[
    ("console", 5, 1),
    ("full", 1, 7),
    ("null", 1, 3),
    ("ptmx", 5, 2),
    ("random", 1, 8),
    ("tty", 5, 0),
    ("urandom", 1, 9),
    ("zero", 1, 5),
];

/// What package scripts leave in a tree that makes it one machine: host
/// keys (openssh-server), the snakeoil TLS key pair (ssl-cert), D-Bus's
/// machine id, systemd's random seed and credential secret. Every node
/// booting the image makes its own.
pub const IDENTITY_REMOVE: &[&str] = &[
    "/etc/ssh/ssh_host_dsa_key",
    "/etc/ssh/ssh_host_dsa_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssl/private/ssl-cert-snakeoil.key",
    "/etc/ssl/certs/ssl-cert-snakeoil.pem",
    "/var/lib/dbus/machine-id",
    "/var/lib/systemd/random-seed",
    "/var/lib/systemd/credential.secret",
];

/// Emptied rather than removed: systemd writes a new id into an empty
/// `/etc/machine-id` on each node's first boot (osbuild's `first-boot: no`).
pub const IDENTITY_EMPTY: &[&str] = &["/etc/machine-id"];

/// What a Debian build records of itself rather than of its inputs: the
/// package tools' logs (when each package was unpacked and configured, in
/// which order) and ldconfig's cache of the libraries' inodes and change
/// times. Each is made again on the node when it is next used.
pub const DEBIAN_BUILD_RECORDS: &[&str] = &[
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/apt/eipp.log.xz",
    "/var/cache/ldconfig/aux-cache",
];

/// The same for an RPM build: dnf's logs, ldconfig's cache, and the
/// rpm database's SQLite journals.
pub const RPM_BUILD_RECORDS: &[&str] = &[
    "/var/log/dnf.log",
    "/var/log/dnf.rpm.log",
    "/var/log/dnf.librepo.log",
    "/var/log/hawkey.log",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/rpm/rpmdb.sqlite-shm",
    "/var/lib/rpm/rpmdb.sqlite-wal",
];

/// The unit that makes a node's own keys at boot, where the image has
/// packages that need them.
pub const NODE_IDENTITY_UNIT: &str = "kiln-node-identity.service";

/// A oneshot unit, before the SSH daemon (`ssh.service` on Debian,
/// `sshd.service` on RPM systems) and after cloud-init (which writes keys
/// a site provides per node): it generates only the keys that are missing,
/// so a site's own keys are kept. On a live `pxe` root that is every boot.
fn node_identity_stages(packages: &[&PackageFile]) -> Vec<Value> {
    let has = |name: &str| packages.iter().any(|p| p.name == name);
    let mut exec = Vec::new();
    if has("openssh-server") {
        exec.push("/usr/bin/ssh-keygen -A");
    }
    if has("ssl-cert") {
        exec.push("/usr/sbin/make-ssl-cert generate-default-snakeoil");
    }
    if exec.is_empty() {
        return Vec::new();
    }
    vec![
        json!({"type": "org.osbuild.systemd.unit.create", "options": {
            "filename": NODE_IDENTITY_UNIT,
            "config": {
                "Unit": {
                    "Description": "Generate this node's SSH host keys and other per-node keys missing from the image",
                    "After": ["local-fs.target", "cloud-init.service"],
                    "Before": ["ssh.service", "sshd.service"],
                },
                "Service": {"Type": "oneshot", "RemainAfterExit": true, "ExecStart": exec},
                "Install": {"WantedBy": ["multi-user.target"]},
            },
        }}),
        json!({"type": "org.osbuild.systemd", "options": {"enabled_services": [NODE_IDENTITY_UNIT]}}),
    ]
}

/// The pipeline an image type exports (its main artifact).
pub fn export_pipeline(image_type: &str) -> &'static str {
    match image_type {
        "oci" => "container",
        "pxe" => "pxe",
        "pxe-tar-xz" => "tarball",
        "disk" | "guest-image" => "qcow2",
        "minimal-raw" => "image",
        _ => "archive",
    }
}

/// Every pipeline an image type can export: a qcow2 disk also has its raw
/// image, a `pxe-tar-xz` its three files.
pub fn exports(image_type: &str) -> Vec<&'static str> {
    match image_type {
        "disk" | "guest-image" => vec!["image", "qcow2"],
        "pxe-tar-xz" => vec!["pxe", "tarball"],
        t => vec![export_pipeline(t)],
    }
}

fn customization_stages(c: &ImageCustomizations, inline: &mut Map<String, Value>) -> Vec<Value> {
    let mut stages = Vec::new();
    if !c.groups.is_empty() {
        let groups: Map<String, Value> = c
            .groups
            .iter()
            .map(|(name, gid)| {
                (
                    name.clone(),
                    gid.map(|g| json!({"gid": g})).unwrap_or_else(|| json!({})),
                )
            })
            .collect();
        stages.push(json!({"type": "org.osbuild.groups", "options": {"groups": groups}}));
    }
    if !c.users.is_empty() {
        let users: Map<String, Value> = c
            .users
            .iter()
            .map(|u| {
                let mut o = Map::new();
                if let Some(v) = u.uid {
                    o.insert("uid".into(), json!(v));
                }
                if let Some(v) = u.gid {
                    o.insert("gid".into(), json!(v));
                }
                if !u.groups.is_empty() {
                    o.insert("groups".into(), json!(u.groups));
                }
                if let Some(v) = &u.description {
                    o.insert("description".into(), json!(v));
                }
                if let Some(v) = &u.home {
                    o.insert("home".into(), json!(v));
                }
                if let Some(v) = &u.shell {
                    o.insert("shell".into(), json!(v));
                }
                if let Some(v) = &u.password {
                    o.insert("password".into(), json!(v));
                }
                if !u.keys.is_empty() {
                    o.insert("key".into(), json!(u.keys.join("\n")));
                }
                (u.name.clone(), Value::Object(o))
            })
            .collect();
        stages.push(json!({"type": "org.osbuild.users", "options": {"users": users}}));
    }
    if let Some(h) = &c.hostname {
        stages.push(json!({"type": "org.osbuild.hostname", "options": {"hostname": h}}));
    }
    if let Some(z) = &c.timezone {
        stages.push(json!({"type": "org.osbuild.timezone", "options": {"zone": z}}));
    }
    if let Some(l) = &c.language {
        stages.push(json!({"type": "org.osbuild.locale", "options": {"language": l}}));
    }
    if !c.directories.is_empty() {
        let paths: Vec<Value> = c
            .directories
            .iter()
            .map(|d| {
                let mut o = json!({"path": d.path, "exist_ok": true, "parents": d.parents});
                if let Some(m) = d
                    .mode
                    .as_deref()
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                {
                    o["mode"] = json!(m);
                }
                o
            })
            .collect();
        stages.push(json!({"type": "org.osbuild.mkdir", "options": {"paths": paths}}));
    }
    if !c.files.is_empty() {
        let mut paths = Vec::new();
        for f in &c.files {
            let data = f.data.as_deref().unwrap_or_default();
            let id = format!("sha256:{}", sha256_hex(data.as_bytes()));
            inline.insert(
                id.clone(),
                json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(data)}),
            );
            paths.push(
                json!({"from": format!("input://files/{id}"), "to": format!("tree://{}", f.path)}),
            );
        }
        let mut refs: Vec<String> = paths
            .iter()
            .filter_map(|p| {
                p["from"]
                    .as_str()?
                    .strip_prefix("input://files/")
                    .map(str::to_owned)
            })
            .collect();
        refs.sort();
        refs.dedup();
        stages.push(json!({
            "type": "org.osbuild.copy",
            "inputs": {"files": {"type": "org.osbuild.files", "origin": "org.osbuild.source",
                                 "references": refs.iter().map(|r| json!({"id": r})).collect::<Vec<_>>()}},
            "options": {"paths": paths},
        }));
    }
    let entries: Vec<&Entry> = c.directories.iter().chain(&c.files).collect();
    let modes: Map<String, Value> = entries
        .iter()
        .filter_map(|e| Some((e.path.clone(), json!({"mode": e.mode.clone()?}))))
        .collect();
    if !modes.is_empty() {
        stages.push(json!({"type": "org.osbuild.chmod", "options": {"items": modes}}));
    }
    let owners: Map<String, Value> = entries
        .iter()
        .filter(|e| e.user.is_some() || e.group.is_some())
        .map(|e| {
            let mut o = Map::new();
            if let Some(u) = &e.user {
                o.insert("user".into(), u.clone());
            }
            if let Some(g) = &e.group {
                o.insert("group".into(), g.clone());
            }
            (e.path.clone(), Value::Object(o))
        })
        .collect();
    if !owners.is_empty() {
        stages.push(json!({"type": "org.osbuild.chown", "options": {"items": owners}}));
    }
    if !(c.enabled.is_empty() && c.disabled.is_empty() && c.masked.is_empty()) {
        let mut o = Map::new();
        for (key, list) in [
            ("enabled_services", &c.enabled),
            ("disabled_services", &c.disabled),
            ("masked_services", &c.masked),
        ] {
            if !list.is_empty() {
                o.insert(key.into(), json!(list));
            }
        }
        stages.push(json!({"type": "org.osbuild.systemd", "options": o}));
    }
    stages
}
