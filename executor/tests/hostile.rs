//! Hostile packages: a `.deb` whose postinst and an RPM whose `%post` try
//! to reach past the build, as any package a request names could. Each
//! attempt is logged by the script itself into the tree, and each fails:
//! reading and changing a secret of the build user outside the tree,
//! writing outside the tree, mounting, making a block device, loading a
//! module, connecting to the host's network, signalling a host process.
//! Afterwards the secret is unchanged and in no artifact, and the host has
//! no new mount, device node or process.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testsupport::builduser;
use serde_json::json;

/// The attempts, as a POSIX shell script run by the package manager in the
/// tree (busybox's applets, the same in both trees). Each line of the log
/// is `NAME rc=N OUTPUT`. The host's files are reached past the chroot
/// through `/proc/1/root`: the sandbox's root, which is the host's, read-only.
fn attempts(canary: &Path, port: u16, pid: u32) -> String {
    let dir = canary.parent().unwrap().display();
    let canary = canary.display();
    format!(
        r#"L=/kiln-hostile.log
: > $L
try() {{ name=$1; shift; out=$("$@" 2>&1); rc=$?; echo "$name rc=$rc $out" | busybox tr '\n' ' ' >> $L; echo >> $L; }}
H=/proc/1/root
try read-canary busybox cat $H{canary}
try write-canary busybox sh -c "echo changed >> $H{canary}"
try write-outside busybox sh -c "echo planted > $H{dir}/planted"
try write-host-etc busybox sh -c "echo planted > $H/etc/kiln-planted"
busybox mkdir -p /kiln-mnt
try mount busybox mount -t tmpfs none /kiln-mnt
try mknod-block busybox mknod /kiln-sda b 8 0
echo not-a-module > /kiln-module.ko
try load-module busybox insmod /kiln-module.ko
try connect busybox nc -w 2 127.0.0.1 {port}
try signal busybox kill -TERM {pid}
exit 0
"#
    )
}

/// What the host looks like from here: mount points, device nodes, and the
/// processes of the build user and of its subordinate ids.
#[derive(Debug, PartialEq)]
struct HostView {
    mounts: BTreeSet<String>,
    devices: BTreeSet<String>,
}

fn host_view() -> HostView {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect();
    let mut devices = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) && !p.starts_with("/dev/pts") {
                stack.push(p.clone());
            }
            devices.insert(p.display().to_string());
        }
    }
    HostView { mounts, devices }
}

/// The build user's subordinate uid range, from /etc/subuid.
fn subordinate_uids() -> std::ops::Range<u32> {
    let user = builduser::user();
    let text = std::fs::read_to_string("/etc/subuid").unwrap();
    let start = kiln_executor::userns::subordinate(&text, &user.name, user.uid)
        .expect("the build user has subordinate ids");
    start..start + kiln_executor::userns::IDS
}

/// Processes running as a uid of the build user's subordinate range: what a
/// build leaves behind, if anything.
fn processes_of_subordinate_ids() -> Vec<String> {
    let range = subordinate_uids();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if range.contains(&uid) {
            out.push(status.lines().next().unwrap_or_default().to_owned());
        }
    }
    out
}

/// One hostile build at a time: each test looks at the whole host.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The things a test checks around one hostile build.
struct Trap {
    _turn: std::sync::MutexGuard<'static, ()>,
    canary_dir: PathBuf,
    canary: PathBuf,
    secret: String,
    canary_mtime: std::time::SystemTime,
    listener: std::net::TcpListener,
    victim: std::process::Child,
    before: HostView,
}

impl Trap {
    fn set() -> Trap {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // The build user's own secret, as its worker.toml or TLS key would
        // be: on the host's root file system (which the sandbox shows
        // read-only), not under /tmp (which it replaces).
        let canary_dir = PathBuf::from(format!(
            "/var/lib/kiln-canary-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&canary_dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&canary_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        builduser::give(&canary_dir);
        let canary = canary_dir.join("secret");
        let secret = format!("kiln-canary-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(&canary, &secret).unwrap();
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
        builduser::give(&canary);
        let canary_mtime = std::fs::metadata(&canary).unwrap().modified().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        // A process of the build user: the worker, say.
        let victim = builduser::run_as(&mut Command::new("sleep"))
            .arg("600")
            .spawn()
            .unwrap();
        Trap {
            _turn: turn,
            canary_dir,
            canary,
            secret,
            canary_mtime,
            listener,
            victim,
            before: host_view(),
        }
    }

    fn script(&self) -> String {
        attempts(
            &self.canary,
            self.listener.local_addr().unwrap().port(),
            self.victim.id(),
        )
    }

    /// Checks the log the script wrote and the host afterwards.
    fn check(mut self, log: &str, artifacts: &[&Path]) {
        let lines: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(" rc=")).collect();
        let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "read-canary",
                "write-canary",
                "write-outside",
                "write-host-etc",
                "mount",
                "mknod-block",
                "load-module",
                "connect",
                "signal"
            ],
            "{log}"
        );
        for (name, rest) in &lines {
            assert!(!rest.starts_with("0 "), "{name} succeeded: {log}");
        }
        let said = |name: &str| lines.iter().find(|(n, _)| *n == name).unwrap().1;
        // The host user's files: its owner is nobody in the sandbox.
        for name in ["read-canary", "write-canary", "write-outside"] {
            assert!(said(name).contains("Permission denied"), "{name}: {log}");
        }
        assert!(
            said("write-host-etc").contains("Read-only file system"),
            "{log}"
        );
        // EPERM (busybox's mount words it as "permission denied").
        assert!(
            said("mount").contains("permission denied")
                || said("mount").contains("Operation not permitted"),
            "{log}"
        );
        assert!(
            said("mknod-block").contains("Operation not permitted"),
            "{log}"
        );
        // Refused (seccomp), not read and found to be no module.
        assert!(
            said("load-module").contains("Operation not permitted"),
            "{log}"
        );
        assert!(
            !log.contains(&self.secret),
            "the secret is in the log: {log}"
        );
        // The secret: unchanged, and in no artifact.
        assert_eq!(std::fs::read_to_string(&self.canary).unwrap(), self.secret);
        assert_eq!(
            std::fs::metadata(&self.canary).unwrap().modified().unwrap(),
            self.canary_mtime
        );
        assert!(!self.canary_dir.join("planted").exists());
        assert!(!Path::new("/etc/kiln-planted").exists());
        for a in artifacts {
            let bytes = std::fs::read(a).unwrap();
            assert!(
                !bytes
                    .windows(self.secret.len())
                    .any(|w| w == self.secret.as_bytes()),
                "the secret is in {}",
                a.display()
            );
        }
        // No connection reached the host's listener.
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the host's listener was reached: {other:?}"),
        }
        // The build user's process lives on (Drop stops it).
        assert!(self.victim.try_wait().unwrap().is_none(), "the victim died");
        // No new mount or device on the host, no process left behind.
        assert_eq!(host_view(), self.before);
        // The sandbox's last processes may still be exiting as the
        // executor returns: they must be gone within seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !processes_of_subordinate_ids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(processes_of_subordinate_ids(), Vec::<String>::new());
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.canary_dir);
        let _ = self.victim.kill();
        let _ = self.victim.wait();
    }
}

/// The log the package's script wrote into the tree, from the image's tar.
fn script_log(tar: &Path) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg("./kiln-hostile.log")
        .output()
        .unwrap();
    assert!(out.status.success(), "no log in the tree");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// busybox-static's package file, from the shared apt cache.
fn busybox_deb(dir: &Path) -> PathBuf {
    let (repo, _) =
        kiln_testsupport::aptcache::debian_mirror(dir, &["busybox-static".to_owned()]).unwrap();
    std::fs::read_dir(repo.dir().join("pool/main"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("busybox-static_")
        })
        .expect("busybox-static in the mirror")
}

#[test]
fn a_debian_packages_postinst_cannot_reach_past_the_build() {
    let trap = Trap::set();
    // The postinst also tries the chroot escape of the issue that made
    // builds rootless: chroot into a subdirectory, climb out, chroot there.
    let postinst = format!(
        "#!/bin/sh\n{}",
        trap.script().replace(
            "exit 0\n",
            "mkdir -p /kiln-e; try escape-chroot perl -e 'chroot(\"/kiln-e\") or die \"chroot: $!\\n\"; chdir(\"..\") for 1..64; chroot(\".\") or die \"chroot: $!\\n\"; print \"escaped\\n\"'\nexit 0\n"
        )
    );
    let image = common::debian_image_with(
        "tar",
        &["busybox-static"],
        json!({"name": "hostile"}),
        &[("kiln-hostile", &postinst)],
    );
    let dir = builduser::dir();
    let r = common::export(dir.path(), &image.manifest, &["archive"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let tar = dir.path().join("out/archive/root.tar");
    let log = script_log(&tar);
    let escape = log
        .lines()
        .find_map(|l| l.strip_prefix("escape-chroot rc="))
        .unwrap_or_else(|| panic!("no escape attempt in {log}"));
    assert!(
        !escape.starts_with("0 ") && escape.contains("Operation not permitted"),
        "{log}"
    );
    let without_escape: String = log
        .lines()
        .filter(|l| !l.starts_with("escape-chroot"))
        .map(|l| format!("{l}\n"))
        .collect();
    trap.check(&without_escape, &[&tar]);
}

#[test]
fn an_rpm_packages_post_scriptlet_cannot_reach_past_the_build() {
    let trap = Trap::set();
    let work = builduser::dir();
    // busybox as the tree's /bin/sh, the %post interpreter.
    let bb = work.path().join("bb");
    let deb = busybox_deb(&work.path().join("mirror"));
    let x = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&bb)
        .status()
        .unwrap();
    assert!(x.success());
    let busybox = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| bb.join(p))
        .find(|p| p.exists())
        .unwrap();
    let top = work.path().join("rpmbuild");
    let spec = work.path().join("kiln-hostile.spec");
    std::fs::write(
        &spec,
        format!(
            "%global debug_package %{{nil}}\n%global __os_install_post %{{nil}}\nName: kiln-hostile\nVersion: 1.0\nRelease: 1\nSummary: kiln test\nLicense: MIT\nBuildArch: x86_64\nAutoReqProv: no\n%description\nreaches past the build\n%install\nmkdir -p %{{buildroot}}/usr/bin %{{buildroot}}/bin\ncp {bb} %{{buildroot}}/usr/bin/busybox\nln -s /usr/bin/busybox %{{buildroot}}/bin/sh\n%files\n/usr/bin/busybox\n/bin/sh\n%post -p /bin/sh\n{script}",
            bb = busybox.display(),
            script = trap.script()
        ),
    )
    .unwrap();
    let built = Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let rpm = top.join("RPMS/x86_64/kiln-hostile-1.0-1.x86_64.rpm");
    builduser::readable(work.path());
    use sha2::Digest;
    let cs = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(&rpm).unwrap()))
    );
    let manifest = json!({
        "version": "2",
        "sources": {"org.osbuild.curl": {"items": {cs.clone(): format!("file://{}", rpm.display())}}},
        "pipelines": [
            {"name": "os", "source-epoch": 1731974400, "stages": [
                {"type": "org.osbuild.rpm", "options": {},
                 "inputs": {"packages": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": [{"id": cs}]}}}]},
            {"name": "archive", "source-epoch": 1731974400, "stages": [
                {"type": "org.osbuild.tar", "options": {"filename": "root.tar"},
                 "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}}}]},
        ],
    });
    let dir = builduser::dir();
    let r = common::export(dir.path(), &manifest, &["archive"]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let tar = dir.path().join("out/archive/root.tar");
    trap.check(&script_log(&tar), &[&tar]);
}
