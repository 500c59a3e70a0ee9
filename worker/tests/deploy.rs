//! `deploy/systemd/kiln-worker.service`: systemd accepts it, it sets
//! nothing that would stop rootless builds, and a build runs under its
//! sandbox.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_testsupport::reference::skipped;
use kiln_testsupport::unitfile::{self, UnitFile};
use serde_json::{json, Value};

const WORKER: &str = env!("CARGO_BIN_EXE_kiln-worker");

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/kiln-worker.service")
}

/// Settings that set no_new_privs on a unit with `User=` (systemd.exec(5)
/// of systemd 252: "NoNewPrivileges=yes is implied"), or that forbid the
/// user namespaces themselves. Under no_new_privs the setuid newuidmap and
/// newgidmap gain nothing, and no build can map its ids.
const IMPLY_NO_NEW_PRIVILEGES: &[&str] = &[
    "NoNewPrivileges",
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
];

/// Keys that set how systemd starts, stops and restarts the service, not
/// what its processes may do: the emulation has nothing to apply for them.
const LIFECYCLE: &[&str] = &[
    "Type",
    "Restart",
    "RestartSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "RemoveIPC",
];

#[test]
fn systemd_analyze_verifies_the_worker_unit() {
    if unitfile::program("systemd-analyze").is_none() {
        skipped("systemd-analyze is missing (Debian: apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unitfile::with_program(
        &unit_path(),
        dir.path(),
        "/usr/bin/kiln-worker",
        Path::new(WORKER),
    );
    unitfile::verify(&[unit]).unwrap();
}

#[test]
fn the_worker_unit_sets_nothing_that_implies_no_new_privileges() {
    let unit = UnitFile::read(&unit_path());
    let found: Vec<&str> = unit
        .entries("Service")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| IMPLY_NO_NEW_PRIVILEGES.contains(k))
        .collect();
    assert!(
        found.is_empty(),
        "kiln-worker.service sets {found:?}: each sets no_new_privs for a unit with User=, \
         and builds then cannot map their ids with the setuid newuidmap/newgidmap"
    );
    assert!(unit.get("Service", "User").is_some_and(|u| u != "root"));
}

/// What the unit's sandbox is made of, read from the unit file.
struct Sandbox {
    exec: PathBuf,
    user: String,
    group: String,
    env: Vec<String>,
    state: Vec<(PathBuf, String)>,
    read_write: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    inaccessible: Vec<PathBuf>,
    protect_system: String,
    protect_home: String,
    private_tmp: bool,
    private_ipc: bool,
    protect_cgroups: bool,
    bounding: Option<Vec<String>>,
    no_new_privs: bool,
    umask: String,
    working_dir: String,
}

impl Sandbox {
    /// Every `[Service]` key is either applied here or one of
    /// [`LIFECYCLE`]; an unknown one fails the test, so that a setting
    /// added to the unit is never left out of the emulation silently.
    fn of(unit: &UnitFile) -> Sandbox {
        let s = "Service";
        let paths = |key: &str| -> Vec<PathBuf> {
            unit.list(s, key)
                .into_iter()
                .filter_map(|p| {
                    let (optional, p) = match p.strip_prefix('-') {
                        Some(rest) => (true, rest.to_owned()),
                        None => (false, p),
                    };
                    let p = PathBuf::from(p.trim_start_matches('+'));
                    (!optional || p.exists()).then_some(p)
                })
                .collect()
        };
        let mut state = Vec::new();
        for (key, root) in [
            ("StateDirectory", "/var/lib"),
            ("CacheDirectory", "/var/cache"),
            ("LogsDirectory", "/var/log"),
            ("RuntimeDirectory", "/run"),
        ] {
            let mode = unit
                .get(s, &format!("{key}Mode"))
                .unwrap_or("0755")
                .to_owned();
            for d in unit.list(s, key) {
                state.push((Path::new(root).join(d), mode.clone()));
            }
        }
        let known = [
            "ExecStart",
            "User",
            "Group",
            "Environment",
            "StateDirectory",
            "StateDirectoryMode",
            "CacheDirectory",
            "CacheDirectoryMode",
            "LogsDirectory",
            "LogsDirectoryMode",
            "RuntimeDirectory",
            "RuntimeDirectoryMode",
            "ReadWritePaths",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "PrivateIPC",
            "ProtectControlGroups",
            "CapabilityBoundingSet",
            "UMask",
            "WorkingDirectory",
        ];
        let mut no_new_privs = false;
        for (k, v) in unit.entries(s) {
            if IMPLY_NO_NEW_PRIVILEGES.contains(&k) {
                // As systemd does for a unit with User=: on, whatever else it does.
                let off = matches!(
                    v.to_ascii_lowercase().as_str(),
                    "" | "no" | "false" | "off" | "0"
                );
                no_new_privs |= !off;
            } else {
                assert!(
                    known.contains(&k) || LIFECYCLE.contains(&k),
                    "kiln-worker.service sets {k}=, which this emulation does not apply: \
                     teach it (worker/tests/deploy.rs) before relying on the setting"
                );
            }
        }
        let exec = unit.get(s, "ExecStart").expect("ExecStart=");
        let exec = exec
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches(['-', '@', ':', '+', '!']);
        let user = unit.get(s, "User").expect("User=").to_owned();
        Sandbox {
            exec: PathBuf::from(exec),
            group: unit.get(s, "Group").unwrap_or(&user).to_owned(),
            user,
            env: unit.list(s, "Environment"),
            state,
            read_write: paths("ReadWritePaths"),
            read_only: paths("ReadOnlyPaths"),
            inaccessible: paths("InaccessiblePaths"),
            protect_system: unit.get(s, "ProtectSystem").unwrap_or("no").to_owned(),
            protect_home: unit.get(s, "ProtectHome").unwrap_or("no").to_owned(),
            private_tmp: unit.flag(s, "PrivateTmp"),
            private_ipc: unit.flag(s, "PrivateIPC"),
            protect_cgroups: unit.flag(s, "ProtectControlGroups"),
            bounding: unit
                .entries(s)
                .iter()
                .any(|(k, _)| *k == "CapabilityBoundingSet")
                .then(|| unit.list(s, "CapabilityBoundingSet")),
            no_new_privs,
            umask: unit.get(s, "UMask").unwrap_or("0022").to_owned(),
            working_dir: unit.get(s, "WorkingDirectory").unwrap_or("/").to_owned(),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn passwd_field(user: &str, field: usize) -> String {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = line.trim().split(':').collect();
    assert!(
        f.len() > field,
        "user {user} does not exist (tools/build-user.sh makes kiln)"
    );
    f[field].to_owned()
}

/// The mount namespace and credentials systemd would give the unit, as a
/// script for `unshare --mount` (run as root), ending in `COMMAND` as the
/// unit's user. `scratch` is an empty directory; `binary` is installed at
/// the unit's ExecStart path.
fn script(sb: &Sandbox, scratch: &Path, binary: &Path, command: &str) -> String {
    let mut s = vec![
        "set -euo pipefail".to_owned(),
        "mount --make-rprivate /".to_owned(),
        format!("S={}; mount -t tmpfs -o mode=0700 kiln-sandbox \"$S\"", q(scratch)),
        // Directories the unit names but the host lacks are made in
        // overlays of their parents, so the host's own stay untouched.
        r#"ov() { local n=$(echo "$1" | tr / _); mkdir -p "$S/$n/u" "$S/$n/w"; mount -t overlay "kiln-$n" -o "lowerdir=$1,upperdir=$S/$n/u,workdir=$S/$n/w" "$1"; }"#.to_owned(),
    ];
    let mut parents: Vec<PathBuf> = vec![sb.exec.parent().unwrap().to_owned()];
    parents.extend(sb.state.iter().map(|(d, _)| d.parent().unwrap().to_owned()));
    parents.sort();
    parents.dedup();
    for p in &parents {
        s.push(format!("ov {}", q(p)));
    }
    s.push(format!("install -m 0755 {} {}", q(binary), q(&sb.exec)));
    let owner = format!("{}:{}", sb.user, sb.group);
    for (d, mode) in &sb.state {
        s.push(format!("install -d -m {mode} {}", q(d)));
        s.push(format!("chown {owner} {}", q(d)));
    }
    // ProtectSystem=: strict, every mount but the API file systems
    // read-only; full and yes, /usr and /boot (full: /etc too).
    let ro_roots: Vec<&str> = match sb.protect_system.as_str() {
        "strict" => vec!["/"],
        "full" => vec!["/usr", "/boot", "/efi", "/etc"],
        "yes" | "true" => vec!["/usr", "/boot", "/efi"],
        "no" | "false" => vec![],
        other => panic!("ProtectSystem={other}: unknown to the emulation"),
    };
    let remount_ro = |root: &str| {
        format!(
            "findmnt -rn -o TARGET -R {root} | while read -r m; do m=$(printf '%b' \"$m\"); \
             case \"$m\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;; *) mount -o remount,bind,ro \"$m\";; esac; done"
        )
    };
    for root in ro_roots {
        if Path::new(root).exists() {
            s.push(remount_ro(root));
        }
    }
    for p in &sb.read_only {
        s.push(format!(
            "mount --bind {0} {0}; mount -o remount,bind,ro {0}",
            q(p)
        ));
    }
    let writable = sb.read_write.iter().chain(sb.state.iter().map(|(d, _)| d));
    for p in writable {
        s.push(format!(
            "mount --bind {0} {0}; mount -o remount,bind,rw {0}",
            q(p)
        ));
    }
    if sb.protect_cgroups {
        s.push(
            "findmnt -rn -o TARGET -R /sys/fs/cgroup | while read -r m; do mount -o remount,bind,ro \"$m\"; done"
                .to_owned(),
        );
    }
    let homes = ["/home", "/root", "/run/user"];
    match sb.protect_home.as_str() {
        "no" | "false" => {}
        "yes" | "true" => {
            for h in homes {
                s.push(format!(
                    "[ ! -d {h} ] || mount -t tmpfs -o ro,mode=000 kiln-home {h}"
                ));
            }
        }
        "read-only" => {
            for h in homes {
                s.push(format!("[ ! -d {h} ] || mount -o remount,bind,ro {h} 2>/dev/null || {{ mount --bind {h} {h}; mount -o remount,bind,ro {h}; }}"));
            }
        }
        "tmpfs" => {
            for h in homes {
                s.push(format!(
                    "[ ! -d {h} ] || mount -t tmpfs -o ro,mode=755 kiln-home {h}"
                ));
            }
        }
        other => panic!("ProtectHome={other}: unknown to the emulation"),
    }
    for p in &sb.inaccessible {
        s.push(format!(
            "if [ -d {0} ]; then mount -t tmpfs -o ro,mode=000 kiln-none {0}; else mount --bind /dev/null {0}; fi",
            q(p)
        ));
    }
    if sb.private_tmp {
        for t in ["/tmp", "/var/tmp"] {
            s.push(format!(
                "mount -t tmpfs -o mode=1777,nosuid,nodev kiln-tmp {t}"
            ));
        }
    }
    // The process: the unit's user with its groups, its bounding set, its
    // environment (systemd's own variables and Environment=), umask and
    // working directory.
    let home = passwd_field(&sb.user, 5);
    let shell = passwd_field(&sb.user, 6);
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        format!("HOME={home}"),
        format!("USER={}", sb.user),
        format!("LOGNAME={}", sb.user),
        format!("SHELL={shell}"),
        "INVOCATION_ID=00000000000000000000000000000000".to_owned(),
    ];
    for (key, root) in [
        ("STATE_DIRECTORY", "/var/lib"),
        ("CACHE_DIRECTORY", "/var/cache"),
    ] {
        let dirs: Vec<String> = sb
            .state
            .iter()
            .filter(|(d, _)| d.starts_with(root))
            .map(|(d, _)| d.display().to_string())
            .collect();
        if !dirs.is_empty() {
            env.push(format!("{key}={}", dirs.join(":")));
        }
    }
    env.extend(sb.env.iter().cloned());
    let mut setpriv = vec![
        "setpriv".to_owned(),
        format!("--reuid={}", sb.user),
        format!("--regid={}", sb.group),
        "--init-groups".to_owned(),
    ];
    if let Some(caps) = &sb.bounding {
        let mut set = vec!["-all".to_owned()];
        for c in caps {
            let name = c.to_ascii_lowercase();
            let name = name
                .strip_prefix("cap_")
                .unwrap_or_else(|| panic!("{c}: not a CAP_ name"));
            set.push(format!("+{name}"));
        }
        setpriv.push(format!("--bounding-set={}", set.join(",")));
    }
    if sb.no_new_privs {
        setpriv.push("--no-new-privs".to_owned());
    }
    s.push(format!("cd {}", quote(&sb.working_dir)));
    s.push(format!("umask {}", sb.umask));
    let env: Vec<String> = env.iter().map(|e| quote(e)).collect();
    s.push(format!(
        "status=0; {} -- env -i {} /bin/sh -c {} {} || status=$?",
        setpriv.join(" "),
        env.join(" "),
        quote(command),
        q(&sb.exec),
    ));
    s.join("\n")
}

const MOTD: &str = "kiln was here\n";

/// The smallest build: an inline file copied into a tree made with the
/// host as build root, the tree packed as a tar (what
/// executor/tests/generic.rs builds).
fn manifest() -> Value {
    let cs = "sha256:81ae1735a4fd712a5764bfff5aa1cbb71ddb041d727a3fa85dfe5e05cb740bce";
    json!({
        "version": "2",
        "sources": {"org.osbuild.inline": {"items": {cs: {"encoding": "base64", "data": "a2lsbiB3YXMgaGVyZQo="}}}},
        "pipelines": [
            {"name": "tree", "source-epoch": 1747699200, "stages": [
                {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc/kiln", "mode": 493, "parents": true}]}},
                {"type": "org.osbuild.copy",
                 "inputs": {"inlinefile": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {cs: {}}}},
                 "options": {"paths": [{"from": format!("input://inlinefile/{cs}"), "to": "tree:///etc/kiln/motd"}]}}
            ]},
            {"name": "archive", "stages": [
                {"type": "org.osbuild.tar", "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:tree"]}},
                 "options": {"filename": "root.tar"}}
            ]}
        ]
    })
}

struct Built {
    ok: bool,
    result: Value,
    motd: String,
    log: String,
}

/// Builds [`manifest`] with `kiln-worker osbuild` (the builtin executor
/// the worker runs for its jobs) in the store and work directory the
/// unit's environment names, inside [`script`]'s sandbox; the artifact is
/// read back, as root, before the namespace goes away.
fn build_in(sb: &Sandbox) -> Built {
    let scratch = tempfile::tempdir().unwrap();
    let binary = kiln_testsupport::builduser::binary(WORKER);
    let command = r#"mkdir -p "$KILN_WORKER_WORK_DIR/job" && exec "$0" osbuild --json --store "$KILN_WORKER_STORE" --output-directory "$KILN_WORKER_WORK_DIR/job/out" --export archive -"#;
    let mut text = script(sb, scratch.path(), &binary, command);
    let work = sb
        .env
        .iter()
        .find_map(|e| e.strip_prefix("KILN_WORKER_WORK_DIR="))
        .expect("the unit sets KILN_WORKER_WORK_DIR");
    text.push_str(&format!(
        "\necho '--- motd' >&2; tar -xOf {}/job/out/archive/root.tar ./etc/kiln/motd >&2 || true\nexit $status\n",
        quote(work)
    ));
    let mut unshare = Command::new("unshare");
    unshare.args(["--mount", "--propagation", "private"]);
    if sb.private_ipc {
        unshare.arg("--ipc");
    }
    let mut child = unshare
        .args(["bash", "-c", &text])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest().to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (log, motd) = stderr.split_once("--- motd\n").unwrap_or((&stderr, ""));
    Built {
        ok: out.status.success(),
        result: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        motd: motd.to_owned(),
        log: format!("{text}\n--- stderr\n{log}"),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A build runs under kiln-worker.service's settings.
///
/// systemd is not PID 1 on the machines that run these tests (and cannot
/// start units there), so this is an emulation of the sandbox systemd
/// would make, with Linux's own tools, from the settings parsed out of the
/// unit file (nothing here is hard-coded): a mount namespace (`unshare
/// --mount`, `--ipc` for PrivateIPC=) in which ProtectSystem= remounts the
/// host read-only, ReadWritePaths= and the State/CacheDirectory= made for
/// the user are bound writable, ProtectHome= covers the home directories
/// with empty inaccessible tmpfs, PrivateTmp= mounts a /tmp and /var/tmp
/// of its own and ProtectControlGroups= remounts /sys/fs/cgroup read-only;
/// then `setpriv` takes the unit's User= and Group= with their groups, its
/// CapabilityBoundingSet= and, when the unit sets NoNewPrivileges= or a
/// setting that implies it, no_new_privs; `env -i` gives it the unit's
/// environment. What systemd does beyond this (cgroups, its own seccomp
/// filters, credentials, the exact private /tmp layout) is not emulated;
/// the settings that would install seccomp filters are those that imply
/// no_new_privs, which the emulation applies and
/// [`the_worker_unit_sets_nothing_that_implies_no_new_privileges`] refuses.
///
/// Inside it, `kiln-worker osbuild` (the builtin executor the worker runs
/// for a job) builds a tar image in the store and work directory the
/// unit's environment names: bubblewrap, user namespaces mapped by the
/// setuid newuidmap/newgidmap, the stages. A second build with
/// NoNewPrivileges=yes added must fail, which shows that the emulation
/// enforces what it claims.
#[test]
fn a_build_runs_in_the_worker_units_sandbox_emulated() {
    if !is_root() {
        skipped("the sandbox emulation needs root (mount namespaces, setpriv --reuid)");
        return;
    }
    for tool in [
        "unshare",
        "setpriv",
        "findmnt",
        "newuidmap",
        "newgidmap",
        "bwrap",
    ] {
        if unitfile::program(tool).is_none() {
            skipped(&format!(
                "{tool} is missing (tools/test.sh installs util-linux, uidmap and bubblewrap)"
            ));
            return;
        }
    }
    let unit = UnitFile::read(&unit_path());
    let started = std::time::Instant::now();
    let sb = Sandbox::of(&unit);
    let built = build_in(&sb);
    assert!(
        built.ok,
        "the build failed in the unit's sandbox:\n{}",
        built.log
    );
    assert_eq!(built.result["success"], json!(true), "{}", built.log);
    assert_eq!(built.motd, MOTD, "{}", built.log);
    eprintln!("build in the emulated sandbox: {:?}", started.elapsed());

    // The control: the same unit with NoNewPrivileges=yes cannot build.
    let mut nnp = unit.clone();
    nnp.sections
        .iter_mut()
        .find(|(n, _)| n == "Service")
        .unwrap()
        .1
        .push(("NoNewPrivileges".into(), "yes".into()));
    let refused = build_in(&Sandbox::of(&nnp));
    assert!(
        !refused.ok && refused.result["success"] != json!(true),
        "a build succeeded under NoNewPrivileges=yes: the emulation does not enforce it\n{}",
        refused.log
    );
}
