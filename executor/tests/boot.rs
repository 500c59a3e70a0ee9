//! Boot proof: Debian 12 `pxe` and `disk` images built by kiln-osbuild from
//! real packages (an apt-made `file://` mirror) boot in QEMU (TCG, no KVM)
//! to multi-user.target, where a oneshot unit of the blueprint prints a
//! marker on the serial console.
//!
//! The pxe image boots as a diskless node does, minus the download: the
//! kernel and initrd of the export, the squashfs as a read-only block
//! device (`root=live:/dev/vda`), no network device at all.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::debian_image;
use serde_json::{json, Value};

const MARKER: &str = "KILN-BOOT-MARKER-7d1e";
/// TCG on two shared cores: ~30-60 s to the marker when the machine is
/// quiet (see /work/shared/notes/pxe-live-boot.md), much more under load.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A oneshot unit that prints MARKER on the serial port once multi-user
/// is reached (systemd's own status lines stop once a getty owns it), with
/// the state of the SSH daemon and the fingerprint of the host key this
/// boot made, and e2scrub_reap masked: it starves under emulation and
/// delays multi-user.
fn blueprint(kernel_append: &str) -> Value {
    let script = format!(
        "#!/bin/sh\n\
         fp=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>&1 | cut -d' ' -f2)\n\
         echo \"{MARKER} ssh=$(systemctl is-active ssh.service) fp=$fp end\" > /dev/ttyS0\n"
    );
    let unit = "[Unit]\nDescription=kiln boot marker\nAfter=multi-user.target\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/kiln-marker\n\n\
         [Install]\nWantedBy=multi-user.target\n";
    json!({
        "name": "boot-proof",
        "customizations": {
            "hostname": "node-boot",
            "kernel": {"append": kernel_append},
            "files": [
                {"path": "/usr/local/sbin/kiln-marker", "data": script, "mode": "0755"},
                {"path": "/etc/systemd/system/kiln-marker.service", "data": unit, "mode": "0644"},
            ],
            "services": {"enabled": ["kiln-marker.service"], "masked": ["e2scrub_reap.service"]}
        }
    })
}

/// What the marker line says: the SSH daemon's state and the host key's
/// fingerprint.
fn marker_report(console: &str) -> (String, String) {
    let line = console
        .lines()
        .find(|l| l.contains(MARKER))
        .unwrap_or_else(|| panic!("no marker line in:\n{console}"));
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_owned()
    };
    (field("ssh="), field("fp="))
}

/// The image's artifacts hold no private key (unpacked and scanned).
fn assert_no_private_key(artifacts: &[std::path::PathBuf]) {
    for (artifact, kind, keys) in kiln_testsupport::artifacts::scan_artifacts(artifacts).unwrap() {
        assert_eq!(
            keys,
            Vec::<std::path::PathBuf>::new(),
            "{} ({kind})",
            artifact.display()
        );
    }
}

/// Builds `image.manifest`'s `export` into `out`; panics with the log on failure.
fn build(manifest: &Value, dir: &Path, export: &str) -> Duration {
    let started = Instant::now();
    let r = common::export(dir, manifest, &[export]);
    assert_eq!(
        r.code,
        0,
        "{}\n{}",
        serde_json::to_string_pretty(&r.json).unwrap(),
        r.stderr
    );
    started.elapsed()
}

/// Runs QEMU (serial console on its stdout) until MARKER appears; returns
/// the time it took and the console. Panics with the console's tail otherwise.
fn boot_until_marker(args: &[String]) -> (Duration, String) {
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "2048",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-vga",
            "none",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (Debian: qemu-system-x86)");
    let mut stdout = qemu.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let mut found = None;
    while started.elapsed() < BOOT_TIMEOUT {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(chunk) => console.extend(chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // QEMU exited (-no-reboot: a panic or a poweroff).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // The whole marker line: what it reports follows the marker.
        let text = String::from_utf8_lossy(&console);
        if text
            .split_once(MARKER)
            .is_some_and(|(_, rest)| rest.contains(" end"))
        {
            found = Some(started.elapsed());
            break;
        }
    }
    let _ = qemu.kill();
    let status = qemu.wait();
    let _ = reader.join();
    let text = String::from_utf8_lossy(&console);
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    let mut stderr = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let took = found.unwrap_or_else(|| {
        panic!(
            "no {MARKER} on the serial console after {:?} (qemu: {status:?} {stderr}); last lines:\n{tail}",
            started.elapsed()
        )
    });
    (took, text.into_owned())
}

/// The kernel's own report of the command line it booted with.
fn booted_cmdline(console: &str) -> &str {
    console
        .lines()
        .find_map(|l| l.split_once("Command line: ").map(|(_, c)| c.trim()))
        .unwrap_or_else(|| panic!("the kernel printed no command line:\n{console}"))
}

#[test]
fn debian_12_pxe_image_boots_from_its_squashfs_to_multi_user() {
    let bp = blueprint("console=ttyS0 rd.shell=0 rd.emergency=poweroff panic=-1");
    let image = debian_image("pxe", &["openssh-server"], bp.clone());
    let dir = kiln_testsupport::builduser::dir();
    let built = build(&image.manifest, dir.path(), "pxe");
    let pxe = dir.path().join("out/pxe");
    assert_no_private_key(&[pxe.join("initrd.img"), pxe.join("rootfs.squashfs")]);
    // The command line a boot target would give, with the squashfs as a
    // local block device instead of a URL.
    let blueprint: kiln_api::customizations::Blueprint = serde_json::from_value(bp).unwrap();
    let c = kiln_manifests::customize::ImageCustomizations::from_blueprint(&blueprint);
    let cmdline = kiln_manifests::generate::pxe_kernel_cmdline_with_root("live:/dev/vda", &c);
    assert!(!cmdline.contains("rd.neednet"), "{cmdline}");
    let args = [
        "-kernel".into(),
        pxe.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        pxe.join("initrd.img").display().to_string(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,readonly=on",
            pxe.join("rootfs.squashfs").display()
        ),
        "-append".into(),
        cmdline.clone(),
    ];
    let (took, console) = boot_until_marker(&args);
    assert_eq!(booted_cmdline(&console), cmdline);
    // The image has no host key: the node made its own before sshd
    // started, and makes a new one on every boot of its live root.
    let (ssh, first) = marker_report(&console);
    assert_eq!(ssh, "active", "ssh.service");
    assert!(first.starts_with("SHA256:"), "{first}");
    let (again, second_console) = boot_until_marker(&args);
    let (ssh, second) = marker_report(&second_console);
    assert_eq!(ssh, "active", "ssh.service, second boot");
    assert!(second.starts_with("SHA256:"), "{second}");
    assert_ne!(first, second, "two boots of one image share a host key");
    eprintln!(
        "pxe: built in {built:?}, marker after {took:?} and {again:?}; host keys {first} and {second}"
    );
}

#[test]
fn debian_12_disk_image_boots_grub_and_its_kernel_to_multi_user() {
    let image = debian_image(
        "disk",
        &["openssh-server"],
        blueprint("rd.shell=0 rd.emergency=poweroff panic=-1"),
    );
    let dir = kiln_testsupport::builduser::dir();
    let started = Instant::now();
    let r = common::export(dir.path(), &image.manifest, &["image", "qcow2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let built = started.elapsed();
    let qcow2 = dir.path().join("out/qcow2/disk.qcow2");
    assert_no_private_key(&[dir.path().join("out/image/disk.raw"), qcow2.clone()]);
    // Booted from a copy-on-write snapshot: the artifact stays as built.
    let (took, console) = boot_until_marker(&[
        "-drive".into(),
        format!("file={},if=virtio,snapshot=on", qcow2.display()),
    ]);
    // GRUB's menu entry booted the tree's kernel on the root file system
    // the image pipeline made, with the console on the serial port.
    let uuid = image.manifest["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["stages"].as_array().unwrap())
        .find(|s| s["type"] == "kiln.mkfs.ext4")
        .unwrap()["options"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let cmdline = booted_cmdline(&console);
    assert!(
        cmdline.starts_with("BOOT_IMAGE=/boot/vmlinuz-"),
        "{cmdline}"
    );
    assert!(
        cmdline.contains(&format!(
            " root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8"
        )),
        "{cmdline}"
    );
    let (ssh, fp) = marker_report(&console);
    assert_eq!(ssh, "active", "ssh.service");
    assert!(fp.starts_with("SHA256:"), "{fp}");
    eprintln!("disk: built in {built:?}, marker after {took:?}");
}
