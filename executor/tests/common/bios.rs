//! BIOS boot for the disk tests: a tree GRUB's normal mode can run from
//! (modules of the build host, a grub.cfg that prints a marker on the
//! serial port), the bytes GRUB's installation leaves in an image, and a
//! SeaBIOS boot in QEMU (TCG: no KVM needed) until grub.cfg has run.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

pub(crate) const EPOCH: u64 = 1747699200;

pub(crate) const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
/// What grub.cfg prints once GRUB runs it.
pub(crate) const MARKER: &str = "KILN-GRUB-OK";

/// GRUB modules `wanted` needs, by the build host's moddep.lst.
fn module_closure(wanted: &[&str]) -> Vec<String> {
    let deps = std::fs::read_to_string(format!("{GRUB_DIR}/moddep.lst")).unwrap();
    let deps: std::collections::HashMap<&str, Vec<&str>> = deps
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<&str> = wanted.to_vec();
    while let Some(m) = todo.pop() {
        if seen.insert(m.to_owned()) {
            todo.extend(deps.get(m).into_iter().flatten());
        }
    }
    seen.into_iter().collect()
}

/// A pipeline `tree` holding /boot/grub: the modules GRUB's normal mode
/// needs (from the build host, as `file://` sources) and a grub.cfg that
/// prints MARKER on the serial port. Returns (sources, pipeline).
pub(crate) fn grub_tree() -> (Value, Value) {
    let cfg = format!(
        "insmod serial\ninsmod echo\nserial --unit=0 --speed=115200\nterminal_output serial\necho \"{MARKER} root=$root prefix=$prefix\"\n"
    );
    let mut curl = serde_json::Map::new();
    let mut refs = Vec::new();
    let mut paths = Vec::new();
    for m in module_closure(&["normal", "serial", "echo", "terminal"]) {
        let path = format!("{GRUB_DIR}/{m}.mod");
        let cs = checksum(&std::fs::read(&path).unwrap());
        curl.insert(cs.clone(), json!(format!("file://{path}")));
        refs.push(json!({"id": cs}));
        paths.push(json!({"from": format!("input://files/{cs}"), "to": format!("tree:///boot/grub/i386-pc/{m}.mod")}));
    }
    let cs = checksum(cfg.as_bytes());
    refs.push(json!({"id": cs}));
    paths.push(json!({"from": format!("input://files/{cs}"), "to": "tree:///boot/grub/grub.cfg"}));
    let sources = json!({
        "org.osbuild.curl": {"items": curl},
        "org.osbuild.inline": {"items": {cs: {"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&cfg)}}},
    });
    let pipeline = json!({"name": "tree", "source-epoch": EPOCH, "stages": [
        {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/boot/grub/i386-pc", "parents": true}]}},
        {"type": "org.osbuild.copy",
         "inputs": {"files": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": refs}},
         "options": {"paths": paths}},
    ]});
    (sources, pipeline)
}

/// Boots `image` with SeaBIOS until grub.cfg prints MARKER; returns that line.
pub(crate) fn boot_to_grub(image: &Path, format: &str) -> String {
    let dir = kiln_testsupport::builduser::dir();
    let serial = dir.path().join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-m", "128", "-display", "none", "-nic", "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format={format},if=ide,snapshot=on",
            image.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (Debian: qemu-system-x86)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if text.contains(MARKER) && text[text.find(MARKER).unwrap()..].contains('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    text.lines()
        .find(|l| l.contains(MARKER))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("GRUB never ran grub.cfg; serial console:\n{text}"))
}

/// The boot sector is GRUB's boot.img, pointing at `location`, over the
/// partition table; the core image at `location` is diskboot followed by
/// the rest, loading from `location + 1`.
pub(crate) fn assert_grub_installed(image: &Path, location: u64) {
    let disk = std::fs::read(image).unwrap();
    let boot = std::fs::read(format!("{GRUB_DIR}/boot.img")).unwrap();
    assert_eq!(&disk[510..512], &[0x55, 0xaa], "boot signature");
    assert_eq!(
        &disk[..0x5c],
        &boot[..0x5c],
        "boot code before the kernel sector"
    );
    assert_eq!(&disk[0x64..440], &boot[0x64..440], "boot code after it");
    assert_eq!(
        u64::from_le_bytes(disk[0x5c..0x64].try_into().unwrap()),
        location,
        "the boot sector points at the core image"
    );
    let core = &disk[(location * 512) as usize..];
    let diskboot = std::fs::read(format!("{GRUB_DIR}/diskboot.img")).unwrap();
    assert_eq!(
        &core[..0x1f4],
        &diskboot[..0x1f4],
        "core starts with diskboot"
    );
    assert_eq!(
        u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
        location + 1,
        "diskboot loads the rest of the core from the next sector"
    );
    let len = u16::from_le_bytes([core[0x1fc], core[0x1fd]]) as usize;
    assert!(len > 10, "the core is {len} sectors after diskboot");
    assert!(
        core[512..512 + len * 512].iter().any(|b| *b != 0),
        "the core image's body is there"
    );
}

fn checksum(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
