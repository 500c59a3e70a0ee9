//! `kiln image diff`: two artifacts compared with the real tools (tar,
//! sfdisk, mkfs.ext4, qemu-img, debugfs, diffoscope): identical ones said
//! to be so, and a difference named down to the file and the line.

use std::path::Path;
use std::process::Command;

fn kiln_diff(a: &Path, b: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["image", "diff"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), format!("{text}\n{err}"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small root tree: `etc/motd` says `motd`; `usr/bin/tool` is fixed.
fn tree(dir: &Path, motd: &str) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(dir.join("etc/motd"), motd).unwrap();
    std::fs::write(dir.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "@1700000000", "--"])
        .arg(dir.join("etc/motd"))
        .arg(dir.join("usr/bin/tool")));
}

fn tar(tree: &Path, out: &Path) {
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@1700000000",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(out)
        .arg("-C")
        .arg(tree)
        .arg("."));
}

/// A 16 MiB raw disk: a dos partition table, one ext4 partition at 1 MiB
/// filled from `tree`.
fn disk(tree: &Path, out: &Path) {
    run(Command::new("truncate").args(["-s", "16M"]).arg(out));
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x12345678\nstart=2048, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args([
            "-q",
            "-F",
            "-U",
            "a1beba3e-9292-4539-a11f-089d161127f8",
            "-E",
        ])
        .arg("offset=1048576,root_owner=0:0,hash_seed=a1beba3e-9292-4539-a11f-089d161127f8")
        .arg("-d")
        .arg(tree)
        .arg(out)
        .arg("15360"));
}

#[test]
fn identical_artifacts_are_said_to_be_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("t"), "hello\n");
    tar(&dir.path().join("t"), &dir.path().join("a.tar"));
    tar(&dir.path().join("t"), &dir.path().join("b.tar"));
    let (code, out) = kiln_diff(&dir.path().join("a.tar"), &dir.path().join("b.tar"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("identical: a.tar (sha256 "), "{out}");
}

#[test]
fn archives_that_differ_are_explained_to_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("ta"), "hello\n");
    tree(&dir.path().join("tb"), "hullo\n");
    tar(&dir.path().join("ta"), &dir.path().join("a.tar"));
    tar(&dir.path().join("tb"), &dir.path().join("b.tar"));
    let (code, out) = kiln_diff(&dir.path().join("a.tar"), &dir.path().join("b.tar"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differ: a.tar (sha256 "), "{out}");
    assert!(out.contains("etc/motd"), "{out}");
    assert!(out.contains("-hello") && out.contains("+hullo"), "{out}");
    assert!(
        !out.contains("usr/bin/tool"),
        "an identical member named: {out}"
    );
}

/// Export directories: files on one side only, and the pair that differs.
#[test]
fn directories_are_compared_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("vmlinuz"), "kernel\n").unwrap();
    }
    std::fs::write(a.join("initrd.img"), "one\n").unwrap();
    std::fs::write(b.join("initrd.img"), "two\n").unwrap();
    std::fs::write(b.join("extra"), "x\n").unwrap();
    let (code, out) = kiln_diff(&a, &b);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("only in {}: extra", b.display())),
        "{out}"
    );
    assert!(out.contains("identical: vmlinuz"), "{out}");
    assert!(out.contains("differ: initrd.img"), "{out}");
    assert!(out.contains("-one") && out.contains("+two"), "{out}");
}

/// Raw and qcow2 disks: opened without libguestfs, down to the ext4
/// partition's file and line.
#[test]
fn disks_are_opened_to_their_partitions_files() {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("ta"), "hello\n");
    tree(&dir.path().join("tb"), "hullo\n");
    let (ra, rb) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    disk(&dir.path().join("ta"), &ra);
    disk(&dir.path().join("tb"), &rb);
    let (code, out) = kiln_diff(&ra, &rb);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("partition 1: differs"), "{out}");
    assert!(!out.contains("before the first partition differ"), "{out}");
    assert!(
        out.contains("etc/motd") && out.contains("-hello") && out.contains("+hullo"),
        "{out}"
    );

    let (qa, qb) = (dir.path().join("a.qcow2"), dir.path().join("b.qcow2"));
    for (raw, q) in [(&ra, &qa), (&rb, &qb)] {
        run(Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(raw)
            .arg(q));
    }
    let (code, out) = kiln_diff(&qa, &qb);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("qcow2: compared as the raw disks"), "{out}");
    assert!(out.contains("etc/motd") && out.contains("+hullo"), "{out}");

    let (code, out) = kiln_diff(&qa, &qa);
    assert_eq!(code, 0, "{out}");
}
