//! Disk images built by kiln-osbuild without privileges: partition tables
//! (dos and GPT), an ext4 file system made from a tree at its partition's
//! offset (`kiln.mkfs.ext4`), an empty FAT one, GRUB for BIOS, and the
//! conversions. Each image is booted in QEMU (TCG, no KVM needed) until
//! GRUB has read its grub.cfg from the root file system, which proves the
//! boot sector, the core image and the prefix are right.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bios::{assert_grub_installed, boot_to_grub, grub_tree, EPOCH, MARKER};
use common::{output, run};
use serde_json::{json, Value};

const ROOT_UUID: &str = "6e4ff95f-f662-45ee-a82a-bdf44a2d0b75";
fn loopback(start: u64, size: u64) -> Value {
    json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw", "start": start, "size": size}})
}

fn whole_disk() -> Value {
    json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw"}})
}

fn tree_input() -> Value {
    json!({"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:tree"]})
}

fn grub2_inst(label: &str, location: u64, root_index: u32) -> Value {
    json!({"type": "org.osbuild.grub2.inst", "options": {
        "filename": "disk.raw", "platform": "i386-pc", "location": location,
        "core": {"type": "mkimage", "partlabel": label, "filesystem": "ext4", "binary": "grub-mkimage"},
        "prefix": {"type": "partition", "partlabel": label, "number": root_index, "path": "/boot/grub"},
    }})
}

fn convert(pipeline: &str, formats: &[(&str, Value)]) -> Value {
    let stages: Vec<Value> = formats
        .iter()
        .map(|(file, format)| {
            json!({"type": "org.osbuild.qemu",
            "inputs": {"image": {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
                                 "references": {"name:image": {"file": "disk.raw"}}}},
            "options": {"filename": file, "format": format}})
        })
        .collect();
    json!({"name": pipeline, "stages": stages})
}

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn build(manifest: &Value, exports: &[&str]) -> Built {
    common::assert_valid_for_osbuild(manifest);
    let dir = kiln_testsupport::builduser::dir();
    let out = dir.path().join("out");
    let r = common::export(dir.path(), manifest, exports);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    Built { _dir: dir, out }
}

fn sfdisk_json(image: &Path) -> Value {
    let text = output(Command::new("sfdisk").arg("--json").arg(image));
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["partitiontable"].take()
}

/// blkid's view of the file system at `sector` of `image`.
fn probe(image: &Path, sector: u64) -> std::collections::BTreeMap<String, String> {
    output(
        Command::new("blkid")
            .args(["-p", "-o", "export", "-O"])
            .arg((sector * 512).to_string())
            .arg(image),
    )
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A partition copied out of the image, for debugfs.
fn extract(image: &Path, start: u64, size: u64, to: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(start * 512)).unwrap();
    let mut data = vec![0; (size * 512) as usize];
    f.read_exact(&mut data).unwrap();
    std::fs::write(to, data).unwrap();
}

fn qemu_img_info(path: &Path) -> Value {
    serde_json::from_str(&output(
        Command::new("qemu-img")
            .args(["info", "--output", "json"])
            .arg(path),
    ))
    .unwrap()
}

/// Same guest-visible bytes; `format` names the second one's format
/// (a fixed VHD is not recognised by probing).
fn assert_same_disk(raw: &Path, other: &Path, format: &str) {
    output(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", format])
            .arg(raw)
            .arg(other),
    );
}

#[test]
fn a_dos_disk_image_boots_grub_from_its_ext4_partition() {
    let (sources, tree) = grub_tree();
    let (sectors, start) = (64 * 2048u64, 2048u64);
    let size = sectors - start;
    let root = loopback(start, size);
    let manifest = json!({
        "version": "2",
        "sources": sources,
        "pipelines": [tree, {"name": "image", "source-epoch": EPOCH, "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": (sectors * 512).to_string()}},
            {"type": "org.osbuild.sfdisk", "devices": {"device": whole_disk()},
             "options": {"label": "dos", "uuid": "0x4b494c4e", "partitions": [
                 {"bootable": true, "start": start, "size": size, "type": "83"}]}},
            {"type": "kiln.mkfs.ext4", "inputs": {"tree": tree_input()}, "devices": {"device": root},
             "options": {"uuid": ROOT_UUID, "label": "root"}},
            grub2_inst("dos", 1, 0),
        ]}, convert("qcow2", &[("disk.qcow2", json!({"type": "qcow2", "compat": "1.1"}))])],
    });
    let built = build(&manifest, &["image", "qcow2"]);
    let raw = built.out.join("image/disk.raw");

    let table = sfdisk_json(&raw);
    assert_eq!(table["label"], json!("dos"));
    assert_eq!(table["id"], json!("0x4b494c4e"));
    let p = &table["partitions"][0];
    assert_eq!(
        (&p["start"], &p["size"], &p["type"], &p["bootable"]),
        (&json!(start), &json!(size), &json!("83"), &json!(true))
    );
    assert_eq!(table["partitions"].as_array().unwrap().len(), 1);

    let fs = probe(&raw, start);
    assert_eq!(fs["TYPE"], "ext4");
    assert_eq!(fs["UUID"], ROOT_UUID);
    assert_eq!(fs["LABEL"], "root");
    let dir = kiln_testsupport::builduser::dir();
    let part = dir.path().join("root.ext4");
    extract(&raw, start, size, &part);
    let cfg = output(
        Command::new("debugfs")
            .args(["-R", "cat /boot/grub/grub.cfg"])
            .arg(&part),
    );
    assert!(cfg.contains(MARKER), "{cfg}");
    let listing = output(
        Command::new("debugfs")
            .args(["-R", "ls -p /boot/grub/i386-pc"])
            .arg(&part),
    );
    assert!(listing.contains("/normal.mod/"), "{listing}");

    assert_grub_installed(&raw, 1);

    let qcow2 = built.out.join("qcow2/disk.qcow2");
    let info = qemu_img_info(&qcow2);
    assert_eq!(info["format"], json!("qcow2"));
    assert_eq!(info["format-specific"]["data"]["compat"], json!("1.1"));
    assert_eq!(info["virtual-size"], json!(sectors * 512));
    assert_same_disk(&raw, &qcow2, "qcow2");

    let line = boot_to_grub(&qcow2, "qcow2");
    assert!(
        line.contains("root=hd0,msdos1 prefix=(hd0,msdos1)/boot/grub"),
        "{line}"
    );
}

const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

#[test]
fn a_gpt_disk_image_with_bios_boot_esp_and_root_partitions() {
    let (sources, tree) = grub_tree();
    let sectors = 96 * 2048u64;
    // BIOS boot 1 MiB, ESP 32 MiB, root the rest (GPT keeps 33 sectors at the end).
    let (bios, esp, root) = (
        (2048u64, 2048u64),
        (4096u64, 65536u64),
        (69632u64, sectors - 69632 - 2048),
    );
    let esp_dev = loopback(esp.0, esp.1);
    let root_dev = loopback(root.0, root.1);
    let manifest = json!({
        "version": "2",
        "sources": sources,
        "pipelines": [tree, {"name": "image", "source-epoch": EPOCH, "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": (sectors * 512).to_string()}},
            {"type": "org.osbuild.sfdisk", "devices": {"device": whole_disk()},
             "options": {"label": "gpt", "uuid": "D209C89E-EA5E-4FBD-B161-B461CCE297E0", "partitions": [
                 {"start": bios.0, "size": bios.1, "type": BIOS_BOOT, "name": "BIOS boot", "uuid": "FAC7F1FB-3E8D-4137-A512-961DE09A5549", "attrs": [0]},
                 {"start": esp.0, "size": esp.1, "type": ESP, "name": "EFI System", "uuid": "68B2905B-DF3E-4FB3-80FA-49D1E773AA33"},
                 {"partnum": 3, "start": root.0, "size": root.1, "type": LINUX, "name": "root", "uuid": "6264D520-3FB9-423F-8AB8-7A0A8E3D3562", "attrs": [59]}]}},
            {"type": "org.osbuild.mkfs.fat", "devices": {"device": esp_dev},
             "options": {"volid": "7B7795E7", "label": "ESP", "fat-size": 16}},
            {"type": "kiln.mkfs.ext4", "inputs": {"tree": tree_input()}, "devices": {"device": root_dev},
             "options": {"uuid": ROOT_UUID}},
            grub2_inst("gpt", bios.0, 2),
        ]}, convert("images", &[
            ("disk.vmdk", json!({"type": "vmdk", "subformat": "streamOptimized"})),
            ("disk.vhd", json!({"type": "vpc"})),
            ("disk.vdi", json!({"type": "vdi"})),
        ])],
    });
    let built = build(&manifest, &["image", "images"]);
    let raw = built.out.join("image/disk.raw");

    let table = sfdisk_json(&raw);
    assert_eq!(table["label"], json!("gpt"));
    assert_eq!(table["id"], json!("D209C89E-EA5E-4FBD-B161-B461CCE297E0"));
    let parts: Vec<Value> = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            // The node is the image's path with the partition number appended.
            let node = p["node"].as_str().unwrap();
            let number = &node[node.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
            json!([number, p["start"], p["size"], p["type"], p["uuid"], p["name"], p["attrs"]])
        })
        .collect();
    assert_eq!(
        parts,
        [
            json!([
                "1",
                bios.0,
                bios.1,
                BIOS_BOOT,
                "FAC7F1FB-3E8D-4137-A512-961DE09A5549",
                "BIOS boot",
                "RequiredPartition"
            ]),
            json!([
                "2",
                esp.0,
                esp.1,
                ESP,
                "68B2905B-DF3E-4FB3-80FA-49D1E773AA33",
                "EFI System",
                null
            ]),
            json!([
                "3",
                root.0,
                root.1,
                LINUX,
                "6264D520-3FB9-423F-8AB8-7A0A8E3D3562",
                "root",
                "GUID:59"
            ]),
        ]
    );

    let fat = probe(&raw, esp.0);
    assert_eq!(fat["TYPE"], "vfat");
    assert_eq!(fat["UUID"], "7B77-95E7");
    assert_eq!(fat["LABEL"], "ESP");
    assert_eq!(fat["VERSION"], "FAT16");
    let dir = kiln_testsupport::builduser::dir();
    let esp_file = dir.path().join("esp.fat");
    extract(&raw, esp.0, esp.1, &esp_file);
    // Not mounted (the test host's kernel may lack vfat): fsck.fat checks
    // it whole; the one entry is the volume label, no cluster is used.
    let fsck = output(Command::new("fsck.fat").arg("-n").arg(&esp_file));
    assert!(fsck.contains("1 files, 0/"), "{fsck}");
    assert_eq!(probe(&raw, root.0)["UUID"], ROOT_UUID);

    // The core image sits in the BIOS boot partition.
    assert_grub_installed(&raw, bios.0);

    let images = built.out.join("images");
    for (file, format) in [
        ("disk.vmdk", "vmdk"),
        ("disk.vhd", "vpc"),
        ("disk.vdi", "vdi"),
    ] {
        let path = images.join(file);
        if format != "vpc" {
            assert_eq!(qemu_img_info(&path)["format"], json!(format), "{file}");
        }
        assert_same_disk(&raw, &path, format);
    }
    // osbuild's vpc default: a fixed VHD, its footer ("conectix", disk
    // type 2) after the raw bytes.
    let vhd = std::fs::read(images.join("disk.vhd")).unwrap();
    let footer = &vhd[vhd.len() - 512..];
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(u32::from_be_bytes(footer[60..64].try_into().unwrap()), 2);
    let vmdk = qemu_img_info(&images.join("disk.vmdk"));
    assert_eq!(
        vmdk["format-specific"]["data"]["create-type"],
        json!("streamOptimized")
    );

    let line = boot_to_grub(&images.join("disk.vmdk"), "vmdk");
    assert!(
        line.contains("root=hd0,gpt3 prefix=(hd0,gpt3)/boot/grub"),
        "{line}"
    );
}

fn stage_error(manifest: &Value) -> String {
    let dir = kiln_testsupport::builduser::dir();
    let r = common::export(dir.path(), manifest, &["image"]);
    assert_eq!(r.code, 1, "{}\n{}", r.json, r.stderr);
    r.json["error"]["details"]["stage"]["output"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn grub_refuses_a_core_image_that_would_overwrite_a_partition() {
    let (sources, tree) = grub_tree();
    let manifest = json!({
        "version": "2",
        "sources": sources,
        "pipelines": [tree, {"name": "image", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": "16MiB"}},
            {"type": "org.osbuild.sfdisk", "devices": {"device": whole_disk()},
             "options": {"label": "dos", "uuid": "0x4b494c4e", "partitions": [{"start": 2048, "type": "83"}]}},
            // The core image at the root partition's first sector.
            grub2_inst("dos", 2048, 0),
        ]}],
    });
    let out = stage_error(&manifest);
    assert!(
        out.contains("would overwrite partition 1 (sectors 2048..32768)"),
        "{out}"
    );
}

#[test]
fn invalid_disk_stage_options_name_their_path() {
    let dir = kiln_testsupport::builduser::dir();
    let store = dir.path().join("store");
    let stage = |s: Value| {
        json!({"version": "2", "pipelines": [{"name": "image", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": "16MiB"}}, s]}]})
    };
    let cases = [
        (
            stage(
                json!({"type": "org.osbuild.sfdisk", "devices": {"device": whole_disk()},
                "options": {"label": "gpt", "uuid": "x", "partitions": [{"start": 2048, "attrs": [7]}]}}),
            ),
            json!([
                "pipelines",
                0,
                "stages",
                1,
                "options",
                "partitions",
                0,
                "attrs"
            ]),
            "attribute bit 7",
        ),
        (
            stage(
                json!({"type": "org.osbuild.sfdisk", "devices": {"device": whole_disk()},
                "options": {"label": "dos", "uuid": "0x1", "partitions": [{"type": "83,bootable"}]}}),
            ),
            json!([
                "pipelines",
                0,
                "stages",
                1,
                "options",
                "partitions",
                0,
                "type"
            ]),
            "only letters",
        ),
        (
            stage(
                json!({"type": "org.osbuild.mkfs.fat", "devices": {"device": whole_disk()},
                "options": {"volid": "7B7795E7", "label": "MUCH TOO LONG"}}),
            ),
            json!(["pipelines", 0, "stages", 1, "options", "label"]),
            "at most 11",
        ),
        (
            stage(
                json!({"type": "org.osbuild.mkfs.fat", "devices": {"device": whole_disk()},
                "options": {"volid": "7B7795E7", "fat-size": 24}}),
            ),
            json!(["pipelines", 0, "stages", 1, "options", "fat-size"]),
            "12, 16 or 32",
        ),
        (
            // osbuild fills a file system through a mount; kiln cannot mount.
            stage(json!({"type": "org.osbuild.copy",
                "devices": {"root": whole_disk()},
                "mounts": [{"name": "root", "type": "org.osbuild.ext4", "source": "root", "target": "/"}],
                "options": {"paths": [{"from": "input://tree/", "to": "mount://root/"}]}})),
            json!(["pipelines", 0, "stages", 1, "mounts"]),
            "kiln.mkfs.ext4",
        ),
        (
            stage(json!({"type": "org.osbuild.grub2.inst", "options": {
                "filename": "disk.raw", "platform": "i386-pc", "location": "one",
                "core": {"type": "mkimage", "partlabel": "dos", "filesystem": "ext4"},
                "prefix": {"type": "partition", "partlabel": "dos", "number": 0, "path": "/boot/grub"}}})),
            json!(["pipelines", 0, "stages", 1, "options", "location"]),
            "invalid type",
        ),
    ];
    for (manifest, path, word) in cases {
        let r = run(&["--json", "--store", store.to_str().unwrap()], &manifest);
        assert_eq!(r.code, 2, "{manifest}: {}", r.stderr);
        let errors: Vec<(Value, String)> = r.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].clone(), e["message"].as_str().unwrap().to_owned()))
            .collect();
        assert!(
            errors.iter().any(|(p, m)| *p == path && m.contains(word)),
            "expected an error at {path} mentioning {word:?}, got {errors:?}"
        );
    }
}

/// Hostile device options: a file outside the tree, a range whose byte
/// offset overflows, a range past the image's end. Each fails the build
/// with its reason and nothing is written outside the image.
#[test]
fn devices_outside_the_image_file_are_refused() {
    let pipeline = |device: Value| {
        json!({"version": "2", "pipelines": [{"name": "image", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": "16MiB"}},
            {"type": "org.osbuild.mkfs.ext4", "devices": {"device": device},
             "options": {"uuid": ROOT_UUID}}]}]})
    };
    let cases = [
        (
            json!({"type": "org.osbuild.loopback", "options": {"filename": "../../etc/passwd"}}),
            "is not a file of the tree",
        ),
        (
            json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw", "start": u64::MAX / 2}}),
            "out of range",
        ),
        (
            json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw", "start": 65536}}),
            "after the file's end",
        ),
    ];
    for (device, word) in cases {
        let dir = kiln_testsupport::builduser::dir();
        let r = common::export(dir.path(), &pipeline(device.clone()), &["image"]);
        assert_eq!(r.code, 1, "{device}: {}\n{}", r.json, r.stderr);
        let said = r.json.to_string();
        assert!(said.contains(word), "{device}: expected {word:?} in {said}");
        assert!(
            !dir.path().join("out").exists(),
            "{device}: something was exported"
        );
    }
}
