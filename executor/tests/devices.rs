//! Device nodes without `mknod`: `kiln.devices` records them in the tree
//! (stages run in a user namespace, where the kernel refuses `mknod`), and
//! every artifact stage writes them as device nodes: tar in each format
//! and with compression, squashfs, the OCI layer and ext4. The artifacts
//! are read back with the tools a user would use (GNU tar, unsquashfs,
//! debugfs, e2fsck); no placeholder file reaches any of them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::output;
use serde_json::{json, Value};

const EPOCH: i64 = 1_700_000_000;
/// A long name, past ustar's 100 bytes for a member name.
fn long_dir() -> String {
    format!("disk/by-id/{}", ["nvme-kiln-0123456789"; 5].join("/"))
}

fn tree_input() -> Value {
    json!({"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:tree"]})
}

fn tar(name: &str, options: Value) -> Value {
    json!({"name": name, "stages": [
        {"type": "org.osbuild.tar", "inputs": {"tree": tree_input()}, "options": options}]})
}

/// A tree with four nodes: null and console (modes and group changed by
/// later stages, as any file's), a block device, and one at a long path.
fn manifest(extra: Vec<Value>) -> Value {
    let mut pipelines = vec![json!({"name": "tree", "source-epoch": EPOCH, "stages": [
        {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc", "mode": 493}]}},
        {"type": "kiln.devices", "options": {"nodes": [
            {"path": "/dev/null", "type": "char", "major": 1, "minor": 3, "mode": 438},
            {"path": "/dev/console", "type": "char", "major": 5, "minor": 1, "mode": 384},
            {"path": "/dev/sda", "type": "block", "major": 8, "minor": 0, "mode": 432, "gid": 6},
            {"path": format!("/dev/{}/part1", long_dir()), "type": "block", "major": 259, "minor": 1, "mode": 384},
        ]}},
        {"type": "org.osbuild.chmod", "options": {"items": {"/dev/console": {"mode": "0620"}}}},
        {"type": "org.osbuild.chown", "options": {"items": {"/dev/console": {"group": 5}}}},
    ]})];
    pipelines.extend(extra);
    json!({"version": "2", "pipelines": pipelines})
}

/// (type and mode, uid/gid, major,minor) by path, as `ls -l` spells them.
type Nodes = BTreeMap<String, (String, String, String)>;

fn expected() -> Nodes {
    let mut m = Nodes::new();
    for (path, mode, owner, dev) in [
        ("dev/null", "crw-rw-rw-", "0/0", "1,3"),
        ("dev/console", "crw--w----", "0/5", "5,1"),
        ("dev/sda", "brw-rw----", "0/6", "8,0"),
    ] {
        m.insert(path.into(), (mode.into(), owner.into(), dev.into()));
    }
    m.insert(
        format!("dev/{}/part1", long_dir()),
        ("brw-------".into(), "0/0".into(), "259,1".into()),
    );
    m
}

/// Every entry of a `tar -tv` / `unsquashfs -lln` listing: path →
/// (mode, owner, device numbers or size). `strip` is the path's prefix.
fn listing(text: &str, strip: &str) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // tar prints "1,3"; unsquashfs "1,  3".
        let (dev, path) = if f[0].starts_with(['c', 'b']) && f[2].ends_with(',') {
            (format!("{}{}", f[2], f[3]), f[6])
        } else {
            (f[2].to_owned(), f[5])
        };
        let path = path.strip_prefix(strip).unwrap_or(path);
        let path = path.trim_end_matches('/');
        assert!(
            out.insert(path.to_owned(), (f[0].to_owned(), f[1].to_owned(), dev))
                .is_none(),
            "{path} twice in\n{text}"
        );
    }
    out
}

fn devices_of(all: &BTreeMap<String, (String, String, String)>) -> Nodes {
    all.iter()
        .filter(|(p, _)| p.starts_with("dev/") && !all[*p].0.starts_with('d'))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect()
}

fn tar_list(path: &Path) -> String {
    output(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(path),
    )
}

fn build(manifest: &Value, exports: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    common::assert_valid_for_osbuild(manifest);
    let dir = kiln_testsupport::builduser::dir();
    let r = common::export(dir.path(), manifest, exports);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let out = dir.path().join("out");
    (dir, out)
}

#[test]
fn device_nodes_land_in_every_tar_format_and_compression() {
    let m = manifest(vec![
        tar("gnu", json!({"filename": "root.tar"})),
        tar(
            "posix-xz",
            json!({"filename": "root.tar.xz", "format": "posix"}),
        ),
        tar(
            "ustar-gzip",
            json!({"filename": "root.tgz", "format": "ustar", "compression": "gzip"}),
        ),
        tar(
            "oldgnu-omit",
            json!({"filename": "root.tar.zst", "format": "oldgnu", "root-node": "omit"}),
        ),
        tar(
            "paths",
            json!({"filename": "dev.tar", "paths": ["dev/", "etc"]}),
        ),
    ]);
    let (_dir, out) = build(
        &m,
        &["gnu", "posix-xz", "ustar-gzip", "oldgnu-omit", "paths"],
    );
    for (export, file, strip) in [
        ("gnu", "root.tar", "./"),
        ("posix-xz", "root.tar.xz", "./"),
        ("ustar-gzip", "root.tgz", "./"),
        ("oldgnu-omit", "root.tar.zst", "./"),
        ("paths", "dev.tar", ""),
    ] {
        let path = out.join(export).join(file);
        let text = tar_list(&path);
        let all = listing(&text, strip);
        assert_eq!(devices_of(&all), expected(), "{export}:\n{text}");
        // The tree's directories are there, once each (listing() checks).
        assert!(
            all.contains_key("dev") && all.contains_key("etc"),
            "{export}:\n{text}"
        );
        // Not the placeholders' attribute either, anywhere in the archive.
        let decompress = match file.rsplit('.').next() {
            Some("xz") => "xz -dc",
            Some("tgz") => "gzip -dc",
            Some("zst") => "zstd -qdc",
            _ => "cat",
        };
        let bytes = Command::new("sh")
            .arg("-c")
            .arg(format!("{decompress} {}", path.display()))
            .output()
            .unwrap();
        assert!(
            bytes.status.success() && bytes.stdout.len() >= 10240,
            "{export}"
        );
        assert!(
            !bytes.stdout.windows(16).any(|w| w == b"user.kiln.device"),
            "{export}: the placeholders' attribute is in the archive"
        );
    }
    // The compressors are the ones the names and options ask for.
    let magic = |p: &str| std::fs::read(out.join(p)).unwrap()[..4].to_vec();
    assert_eq!(magic("posix-xz/root.tar.xz"), b"\xfd7zX");
    assert_eq!(magic("ustar-gzip/root.tgz")[..2], *b"\x1f\x8b");
    assert_eq!(magic("oldgnu-omit/root.tar.zst"), b"\x28\xb5\x2f\xfd");
    // Extracted by tar as root (the test's user): real device nodes.
    let x = kiln_testsupport::builduser::dir();
    output(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(out.join("gnu/root.tar"))
            .arg("-C")
            .arg(x.path()),
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let null = std::fs::symlink_metadata(x.path().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    let sda = std::fs::symlink_metadata(x.path().join("dev/sda")).unwrap();
    assert!(sda.file_type().is_block_device());
    assert_eq!((sda.gid(), sda.mode() & 0o7777), (6, 0o660));
}

#[test]
fn device_nodes_land_in_squashfs_the_oci_layer_and_ext4() {
    let m = manifest(vec![
        json!({"name": "squashfs", "stages": [
            {"type": "org.osbuild.squashfs", "inputs": {"tree": tree_input()},
             "options": {"filename": "root.squashfs", "compression": {"method": "zstd"},
                         "exclude_paths": ["^etc$"]}}]}),
        json!({"name": "oci", "source-epoch": EPOCH, "stages": [
            {"type": "org.osbuild.oci-archive", "inputs": {"base": tree_input()},
             "options": {"architecture": "amd64", "filename": "oci.tar"}}]}),
        json!({"name": "ext4", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "fs.img", "size": "16M"}},
            {"type": "kiln.mkfs.ext4", "inputs": {"tree": tree_input()},
             "devices": {"device": {"type": "org.osbuild.loopback", "options": {"filename": "fs.img", "start": 2048}}},
             "options": {"uuid": "0a6f9b3c-6a1d-4f57-9a3e-0c7f4f4b6d21"}}]}),
    ]);
    let (_dir, out) = build(&m, &["squashfs", "oci", "ext4"]);

    // squashfs: pseudo device nodes where the placeholders were; the
    // stage's own exclusions still apply.
    let text = output(
        Command::new("unsquashfs")
            .args(["-lln", "-d", "r"])
            .arg(out.join("squashfs/root.squashfs")),
    );
    let all = listing(&text, "r/");
    assert_eq!(devices_of(&all), expected(), "{text}");
    assert!(
        !all.contains_key("etc"),
        "exclude_paths is applied:\n{text}"
    );

    // The OCI layer.
    let layout = kiln_testsupport::builduser::dir();
    output(
        Command::new("tar")
            .arg("-xf")
            .arg(out.join("oci/oci.tar"))
            .arg("-C")
            .arg(layout.path()),
    );
    let read = |rel: &str| -> Value {
        serde_json::from_slice(&std::fs::read(layout.path().join(rel)).unwrap()).unwrap()
    };
    let blob = |digest: &Value| {
        format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().strip_prefix("sha256:").unwrap()
        )
    };
    let manifest = read(&blob(&read("index.json")["manifests"][0]["digest"]));
    let layer = layout.path().join(blob(&manifest["layers"][0]["digest"]));
    let text = output(
        Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(&layer),
    );
    let all = listing(&text, "./");
    assert_eq!(devices_of(&all), expected(), "{text}");
    // The diff id is the digest of the uncompressed layer, devices and all.
    let config = read(&blob(&manifest["config"]["digest"]));
    let diff = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | sha256sum", layer.display())),
    );
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", &diff[..64])
    );
    // Times are clamped to the source epoch, the devices' too.
    for line in text.lines().filter(|l| l.starts_with(['c', 'b'])) {
        assert!(line.contains("2023-11-14"), "{line}");
    }

    // ext4: device inodes, e2fsck finds nothing to fix.
    let fs = format!(
        "{}?offset={}",
        out.join("ext4/fs.img").display(),
        2048 * 512
    );
    for (path, (mode, owner, dev)) in expected() {
        let stat = output(Command::new("debugfs").args(["-R", &format!("stat /{path}"), &fs]));
        let kind = if mode.starts_with('c') {
            "character special"
        } else {
            "block special"
        };
        assert!(stat.contains(&format!("Type: {kind}")), "/{path}:\n{stat}");
        let perm = mode_bits(&mode[1..]);
        assert!(
            stat.contains(&format!("Mode:  0{perm:o}")),
            "/{path}:\n{stat}"
        );
        let (uid, gid) = owner.split_once('/').unwrap();
        let users = format!("User: {uid:>5}   Group: {gid:>5}");
        assert!(stat.contains(&users), "/{path} ({users}):\n{stat}");
        let (major, minor) = dev.split_once(',').unwrap();
        assert!(
            stat.contains(&format!(
                "Device major/minor number: {major:0>2}:{minor:0>2}"
            )),
            "/{path}:\n{stat}"
        );
        // No extended attribute: the placeholder's is gone with it.
        assert!(!stat.contains("user.kiln.device"), "/{path}:\n{stat}");
    }
    output(Command::new("e2fsck").args(["-fn", &fs]));
}

/// `rw-rw-rw-` → 0o666.
fn mode_bits(s: &str) -> u32 {
    s.chars().fold(0, |acc, c| (acc << 1) | u32::from(c != '-'))
}

#[test]
fn bad_device_nodes_are_refused_before_anything_runs_or_fail_their_stage() {
    // A valid node, with one field changed (or added) per case.
    for (field, value, says) in [
        ("path", json!("dev/null"), "absolute path"),
        ("path", json!("/dev/a b"), "letters, digits"),
        ("path", json!("/dev/../etc/x"), "letters, digits"),
        ("type", json!("fifo"), "unknown variant"),
        ("major", json!(4096), "major 4096"),
        ("minor", json!(1_048_576), "minor 1048576"),
        ("mode", json!(4096), "mode 4096"),
        ("owner", json!(0), "unknown field"),
    ] {
        let mut node =
            json!({"path": "/dev/x", "type": "char", "major": 1, "minor": 3, "mode": 438});
        node[field] = value;
        let m = json!({"version": "2", "pipelines": [{"name": "tree", "stages": [
            {"type": "kiln.devices", "options": {"nodes": [node]}}]}]});
        let dir = kiln_testsupport::builduser::dir();
        let r = common::export(dir.path(), &m, &["tree"]);
        assert_eq!(r.code, 2, "{node}: {}\n{}", r.json, r.stderr);
        let text = format!("{}{}", r.json, r.stderr);
        assert!(text.contains(says), "{node}: wanted {says:?} in {text}");
        assert!(
            !dir.path().join("store/objects").exists()
                || std::fs::read_dir(dir.path().join("store/objects"))
                    .unwrap()
                    .next()
                    .is_none(),
            "{node}: a stage ran"
        );
    }

    // At run time: a node where a file is, and a v7 tar of device nodes.
    let file_there = json!({"version": "2", "pipelines": [{"name": "tree", "stages": [
        {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/dev/null", "parents": true}]}},
        {"type": "kiln.devices", "options": {"nodes": [
            {"path": "/dev/null", "type": "char", "major": 1, "minor": 3, "mode": 438}]}}]}]});
    let v7 = manifest(vec![tar(
        "v7",
        json!({"filename": "root.tar", "format": "v7"}),
    )]);
    let renamed = manifest(vec![tar(
        "t",
        json!({"filename": "root.tar", "transform": "s,^,x,"}),
    )]);
    // An owner outside the stage's 65536 ids has no file there.
    let stranger = json!({"version": "2", "pipelines": [{"name": "tree", "stages": [
        {"type": "kiln.devices", "options": {"nodes": [
            {"path": "/dev/null", "type": "char", "major": 1, "minor": 3, "mode": 438, "uid": 65536}]}}]}]});
    for (m, export, says) in [
        (
            file_there,
            "tree",
            "/dev/null: a file is there already, and it is not a device node",
        ),
        (v7, "v7", "the v7 format cannot hold device nodes"),
        (
            renamed,
            "t",
            "'transform' cannot rename the tree's device nodes",
        ),
        (stranger, "tree", "/dev/null: Invalid argument"),
    ] {
        let dir = kiln_testsupport::builduser::dir();
        let r = common::export(dir.path(), &m, &[export]);
        assert_eq!(r.code, 1, "{export}: {}\n{}", r.json, r.stderr);
        let text = format!("{}{}", r.json, r.stderr);
        assert!(text.contains(says), "{export}: wanted {says:?} in {text}");
        assert!(
            !dir.path().join("out").join(export).exists(),
            "{export}: exported anyway"
        );
    }
}
