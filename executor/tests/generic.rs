//! kiln-osbuild on manifests of generic stages: ids, outputs, the store,
//! checkpoints, errors, the monitor and crash cleanup.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use common::{attachments_under, ran, run, EXE};
use kiln_testsupport::builduser;
use serde_json::{json, Value};
use sha2::Digest;

const MOTD: &str = "kiln was here\n";

fn checksum(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// inline source → mkdir → copy → tar, with the host as build root.
fn generic(tree_tail: Vec<Value>) -> Value {
    let cs = checksum(MOTD.as_bytes());
    let mut stages = vec![
        json!({"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc/kiln", "mode": 493, "parents": true}]}}),
        json!({"type": "org.osbuild.copy",
               "inputs": {"inlinefile": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {cs.clone(): {}}}},
               "options": {"paths": [{"from": format!("input://inlinefile/{cs}"), "to": "tree:///etc/kiln/motd"}]}}),
    ];
    stages.extend(tree_tail);
    json!({
        "version": "2",
        "sources": {"org.osbuild.inline": {"items": {cs: {"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(MOTD)}}}},
        "pipelines": [
            {"name": "tree", "source-epoch": 1747699200, "stages": stages},
            {"name": "archive", "stages": [
                {"type": "org.osbuild.tar", "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:tree"]}},
                 "options": {"filename": "root.tar"}}
            ]}
        ]
    })
}

/// Stage ids from the independent implementation of osbuild's algorithm.
fn osbuild_ids(manifest: &Value) -> Value {
    let script = include_str!("../../manifests/tests/data/osbuild_ids.py");
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn build(
    store: &std::path::Path,
    out: &std::path::Path,
    manifest: &Value,
    extra: &[&str],
) -> common::Run {
    let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec![
        "--json",
        "--store",
        s,
        "--output-directory",
        o,
        "--export",
        "archive",
    ];
    args.extend(extra);
    run(&args, manifest)
}

fn tar_listing(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tvf").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[5])
        })
        .collect()
}

#[test]
fn generic_manifest_builds_the_tar_with_osbuilds_stage_ids() {
    let dir = kiln_testsupport::builduser::dir();
    let (store, out) = (dir.path().join("store"), dir.path().join("out"));
    let m = generic(vec![]);
    let r = build(&store, &out, &m, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    assert_eq!(r.json["success"], json!(true));
    assert_eq!(r.json["type"], json!("result"));
    // Every stage that ran carries the id osbuild gives it.
    let theirs = osbuild_ids(&m);
    for p in theirs.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let logged: Vec<&str> = r.json["log"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = p["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(logged, expected, "pipeline {name}");
    }
    let tar = out.join("archive/root.tar");
    assert_eq!(
        tar_listing(&tar),
        [
            "drwxr-xr-x root/root ./",
            "drwxr-xr-x root/root ./etc/",
            "drwxr-xr-x root/root ./etc/kiln/",
            "-rw-r--r-- root/root ./etc/kiln/motd"
        ]
    );
    let motd = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("./etc/kiln/motd")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(motd.stdout).unwrap(), MOTD);
    assert!(
        std::fs::read_dir(store.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no working directory is left"
    );
}

#[test]
fn an_unchanged_manifest_rebuilds_from_the_store_without_running_a_stage() {
    let dir = kiln_testsupport::builduser::dir();
    let (store, out) = (dir.path().join("store"), dir.path().join("out"));
    let m = generic(vec![]);
    assert_eq!(build(&store, &out, &m, &[]).code, 0);
    let first = std::fs::read(out.join("archive/root.tar")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let again = build(&store, &out, &m, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        ran(&again.json),
        Vec::<(String, String)>::new(),
        "{}",
        again.json
    );
    assert_eq!(std::fs::read(out.join("archive/root.tar")).unwrap(), first);
}

#[test]
fn a_failing_stage_exits_1_with_its_output_and_checkpoint_resumes_after_it() {
    let dir = kiln_testsupport::builduser::dir();
    let (store, out) = (dir.path().join("store"), dir.path().join("out"));
    let broken = generic(vec![
        json!({"type": "org.osbuild.chmod", "options": {"items": {"/etc/missing": {"mode": "0700"}}}}),
    ]);
    let copy_id = osbuild_ids(&broken)[0]["stages"][1]
        .as_str()
        .unwrap()
        .to_owned();
    let r = build(&store, &out, &broken, &["--checkpoint", &copy_id]);
    assert_eq!(r.code, 1, "{}", r.json);
    assert_eq!(r.json["success"], json!(false));
    assert_eq!(r.json["error"]["type"], json!("org.osbuild.error.stage"));
    let stage = &r.json["error"]["details"]["stage"];
    assert_eq!(stage["type"], json!("org.osbuild.chmod"));
    assert!(
        stage["output"].as_str().unwrap().contains("/etc/missing"),
        "{stage}"
    );
    assert!(
        !out.join("archive").exists(),
        "nothing is exported from a failed build"
    );

    // Fixed: the build resumes after the checkpointed copy stage.
    let fixed = generic(vec![
        json!({"type": "org.osbuild.chmod", "options": {"items": {"/etc/kiln/motd": {"mode": "0600"}}}}),
    ]);
    let r = build(&store, &out, &fixed, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        ran(&r.json),
        [
            ("archive".to_owned(), "org.osbuild.tar".to_owned()),
            ("tree".to_owned(), "org.osbuild.chmod".to_owned())
        ]
    );
    assert!(tar_listing(&out.join("archive/root.tar"))
        .contains(&"-rw------- root/root ./etc/kiln/motd".to_owned()));
}

fn error_paths(r: &common::Run) -> Vec<(Value, String)> {
    r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].clone(), e["message"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn invalid_manifests_exit_2_with_errors_that_name_the_path() {
    let dir = kiln_testsupport::builduser::dir();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let cases: Vec<(Value, Value, &str)> = vec![
        (
            json!({"version": "1", "pipelines": []}),
            json!(["version"]),
            "version",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["pipelines"][0]["stages"][0]["type"] = json!("org.osbuild.nonsense");
                m
            },
            json!(["pipelines", 0, "stages", 0, "type"]),
            "org.osbuild.nonsense",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["pipelines"][0]["stages"][0]["options"]["paths"][0]["mode"] = json!("rwx");
                m
            },
            json!(["pipelines", 0, "stages", 0, "options", "paths", 0, "mode"]),
            "invalid type",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["pipelines"][0]["stages"][0]["options"]["colour"] = json!("blue");
                m
            },
            json!(["pipelines", 0, "stages", 0, "options", "colour"]),
            "unknown field",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["pipelines"][1]["stages"][0]["inputs"]["tree"]["references"] =
                    json!(["name:nowhere"]);
                m
            },
            json!(["pipelines", 1, "stages", 0, "inputs", "tree", "references"]),
            "name:nowhere",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["sources"]["org.osbuild.curl"] =
                    json!({"items": {"sha256:abc": "http://127.0.0.1/x"}});
                m
            },
            json!(["sources", "org.osbuild.curl", "items", "sha256:abc"]),
            "checksum",
        ),
        (
            {
                let mut m = generic(vec![]);
                m["pipelines"][1]["stages"][0]["options"] = json!({});
                m
            },
            json!(["pipelines", 1, "stages", 0, "options"]),
            "filename",
        ),
    ];
    for (manifest, path, word) in cases {
        let r = run(&["--json", "--store", s], &manifest);
        assert_eq!(r.code, 2, "{manifest}: {}", r.stderr);
        assert_eq!(
            r.json["type"],
            json!("https://osbuild.org/validation-error")
        );
        let errors = error_paths(&r);
        assert!(
            errors.iter().any(|(p, m)| *p == path && m.contains(word)),
            "expected an error at {path} mentioning {word:?}, got {errors:?}"
        );
    }
    // Nothing was built for any of them.
    assert!(
        !store.join("objects").exists()
            || std::fs::read_dir(store.join("objects"))
                .unwrap()
                .next()
                .is_none()
    );
    // Without --json the same errors go to stderr, one per line, path first.
    let mut m = generic(vec![]);
    m["pipelines"][0]["stages"][0]["type"] = json!("org.osbuild.nonsense");
    let r = run(&["--store", s], &m);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("pipelines[0].stages[0].type: unknown stage"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_source_whose_bytes_do_not_match_its_checksum_fails_the_build() {
    let dir = kiln_testsupport::builduser::dir();
    let file = dir.path().join("payload");
    std::fs::write(&file, b"not what was promised").unwrap();
    let wrong = checksum(b"the promised bytes");
    let mut m = generic(vec![json!({"type": "org.osbuild.copy",
        "inputs": {"f": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {wrong.clone(): {}}}},
        "options": {"paths": [{"from": format!("input://f/{wrong}"), "to": "tree:///payload"}]}})]);
    m["sources"]["org.osbuild.curl"] =
        json!({"items": {wrong.clone(): format!("file://{}", file.display())}});
    let r = build(&dir.path().join("store"), &dir.path().join("out"), &m, &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["error"]["type"], json!("org.osbuild.error.sources"));
    assert_eq!(r.json["error"]["details"]["checksum"], json!(wrong));
    assert!(
        r.json["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{}",
        r.json
    );
    assert!(!dir
        .path()
        .join("store/sources/org.osbuild.files")
        .join(&wrong)
        .exists());
}

#[test]
fn the_json_seq_monitor_reports_progress_and_results() {
    let dir = kiln_testsupport::builduser::dir();
    let manifest = dir.path().join("m.json");
    std::fs::write(&manifest, generic(vec![]).to_string()).unwrap();
    let records = dir.path().join("monitor");
    let status = builduser::run_as(&mut Command::new("sh"))
        .arg("-c")
        .arg(format!(
            "exec {exe} --store {s} --output-directory {o} --export archive --monitor JSONSeqMonitor --monitor-fd 3 {m} 3>{r}",
            exe = builduser::binary(EXE).display(),
            s = dir.path().join("store").display(),
            o = dir.path().join("out").display(),
            m = manifest.display(),
            r = records.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&records).unwrap();
    let parsed: Vec<Value> = text
        .split('\x1e')
        .filter(|r| !r.is_empty())
        .map(|r| {
            assert!(
                r.ends_with('\n'),
                "RFC 7464: each record ends with a newline"
            );
            serde_json::from_str(r.trim_end()).unwrap()
        })
        .collect();
    let results: Vec<&Value> = parsed.iter().filter_map(|r| r.get("result")).collect();
    assert_eq!(results.len(), 3, "one result per stage");
    assert!(results.iter().all(|r| r["success"] == json!(true)));
    let last = parsed
        .iter()
        .rev()
        .find(|r| r.get("result").is_some())
        .unwrap();
    assert_eq!(last["context"]["pipeline"]["name"], json!("archive"));
    assert_eq!(last["progress"]["total"], json!(2));
    assert!(parsed.iter().all(|r| r["timestamp"].is_number()));
}

#[test]
fn two_builds_share_one_store_safely() {
    let dir = kiln_testsupport::builduser::dir();
    let store = dir.path().join("store");
    let m = generic(vec![]);
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (store, out, m) = (store.clone(), dir.path().join(format!("out{i}")), m.clone());
            std::thread::spawn(move || build(&store, &out, &m, &[]))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(
        std::fs::read(dir.path().join("out0/archive/root.tar"))
            .unwrap()
            .len(),
        std::fs::read(dir.path().join("out1/archive/root.tar"))
            .unwrap()
            .len()
    );
}

#[test]
fn cache_max_size_bounds_the_store() {
    let dir = kiln_testsupport::builduser::dir();
    let store = dir.path().join("store");
    let r = build(
        &store,
        &dir.path().join("out"),
        &generic(vec![]),
        &["--cache-max-size", "1"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(dir.path().join("out/archive/root.tar").exists());
    let objects: Vec<_> = std::fs::read_dir(store.join("objects"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

/// The processes below `pid`: (pid, command name, start time).
fn descendants(pid: u32) -> Vec<(u32, String, u64)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces: split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields
            .get(1)
            .and_then(|f| f.parse::<u32>().ok())
            .unwrap_or(0);
        let start = fields
            .get(19)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        all.push((p, ppid, comm, start));
    }
    let mut out = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for (p, pp, comm, start) in &all {
            if *pp == parent {
                out.push((*p, comm.clone(), *start));
                parents.push(*p);
            }
        }
    }
    out
}

/// Whether a process seen before still runs (same pid, same start time).
fn still_runs(pid: u32, start: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(19).map(str::to_owned))
        })
        .is_some_and(|s| s.parse::<u64>().ok() == Some(start))
}

#[test]
fn kill_9_mid_build_leaves_no_process_or_working_directory_once_the_next_run_starts() {
    let dir = builduser::dir();
    let store = dir.path().join("store");
    // A payload big enough that making a file system of it takes a while.
    let payload = dir.path().join("payload");
    let mut data = Vec::with_capacity(384 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while data.len() < 384 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&payload, &data).unwrap();
    let cs = checksum(&data);
    drop(data);
    let loopback = json!({"type": "org.osbuild.loopback", "options": {"filename": "disk.raw"}});
    let manifest = json!({
        "version": "2",
        "sources": {"org.osbuild.curl": {"items": {cs.clone(): format!("file://{}", payload.display())}}},
        "pipelines": [
            {"name": "tree", "stages": [{"type": "org.osbuild.copy",
             "inputs": {"f": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {cs.clone(): {}}}},
             "options": {"paths": [{"from": format!("input://f/{cs}"), "to": "tree:///payload"}]}}]},
            {"name": "image", "stages": [
            {"type": "org.osbuild.truncate", "options": {"filename": "disk.raw", "size": "1G"}},
            {"type": "kiln.mkfs.ext4", "options": {"uuid": "a1beba3e-9292-4539-a11f-089d161127f8"},
             "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:tree"]}},
             "devices": {"device": loopback}},
        ]}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let records = dir.path().join("monitor");
    let mut child = builduser::run_as(&mut Command::new("sh"))
        .arg("-c")
        .arg(format!(
            "exec {exe} --store {s} --output-directory {o} --export image --monitor JSONSeqMonitor --monitor-fd 3 {m} 3>{r} 2>/dev/null",
            exe = builduser::binary(EXE).display(),
            s = store.display(),
            o = dir.path().join("out").display(),
            m = file.display(),
            r = records.display()
        ))
        .spawn()
        .unwrap();
    // Wait until the file system is being made in the sandbox, then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut sandbox = Vec::new();
    while std::time::Instant::now() < deadline {
        let below = descendants(child.id());
        if below
            .iter()
            .any(|(_, comm, _)| comm.starts_with("mke2fs") || comm.starts_with("mkfs.ext4"))
        {
            sandbox = below;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !sandbox.is_empty(),
        "the mkfs stage never ran: {}",
        std::fs::read_to_string(&records).unwrap_or_default()
    );
    Command::new("kill")
        .arg("-9")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    // The sandbox dies with the executor (bubblewrap's --die-with-parent).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let alive = || -> Vec<String> {
        sandbox
            .iter()
            .filter(|(pid, _, start)| still_runs(*pid, *start))
            .map(|(pid, comm, _)| format!("{pid} {comm}"))
            .collect()
    };
    while !alive().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(alive(), Vec::<String>::new(), "processes left");
    // Nothing of it is mounted on the host, ever.
    assert!(attachments_under(&store).is_empty());
    // The next run opens the store and removes the dead build's directory.
    let r = run(
        &["--json", "--store", store.to_str().unwrap()],
        &generic(vec![]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "working directories left: {tmp:?}");
}

/// `kiln.dracut` takes osbuild's dracut options for one kernel and a file
/// name (anything else is refused before a stage runs), and runs only
/// with a build pipeline: without one, `/` would be the host's.
#[test]
fn kiln_dracut_takes_osbuilds_options_and_needs_a_build_pipeline() {
    let dracut = |options: Value| {
        json!({"version": "2", "pipelines": [{"name": "initrd", "stages": [
            {"type": "kiln.dracut", "options": options}]}]})
    };
    for (options, says) in [
        (
            json!({"kernel": "6.1.0-1-amd64", "filename": "initrd.img", "bogus": 1}),
            "bogus",
        ),
        (json!({"kernel": "6.1.0-1-amd64"}), "filename"),
        (
            json!({"kernel": ["6.1.0-1-amd64"], "filename": "initrd.img"}),
            "kernel",
        ),
    ] {
        let dir = kiln_testsupport::builduser::dir();
        let r = common::export(dir.path(), &dracut(options.clone()), &["initrd"]);
        assert_eq!(r.code, 2, "{options}: {}\n{}", r.json, r.stderr);
        let errors = error_paths(&r);
        assert!(
            errors.iter().any(
                |(p, m)| p == &json!(["pipelines", 0, "stages", 0, "options"]) && m.contains(says)
            ),
            "{options}: wanted {says:?} in {errors:?}"
        );
    }
    let dir = kiln_testsupport::builduser::dir();
    let r = common::export(
        dir.path(),
        &dracut(
            json!({"kernel": "6.1.0-1-amd64", "filename": "initrd.img", "add_modules": ["dmsquash-live"]}),
        ),
        &["initrd"],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.json, r.stderr);
    let text = r.json.to_string();
    assert!(text.contains("needs a build pipeline"), "{text}");
}

/// `org.osbuild.xz` compresses a pipeline's file with xz's fastest preset
/// in its threaded mode, whatever the host's CPUs: the archive unpacks to
/// the tar, and its bytes are those of `xz -0` with two threads (which
/// any thread count of two or more gives).
#[test]
fn xz_compresses_a_pipelines_file_the_same_on_every_host() {
    let dir = kiln_testsupport::builduser::dir();
    let (store, out) = (dir.path().join("store"), dir.path().join("out"));
    let mut manifest = generic(vec![]);
    manifest["pipelines"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "xz", "stages": [{
            "type": "org.osbuild.xz",
            "inputs": {"file": {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
                                "references": {"name:archive": {"file": "root.tar"}}}},
            "options": {"filename": "root.tar.xz"}}]}));
    let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
    let r = run(
        &[
            "--json",
            "--store",
            s,
            "--output-directory",
            o,
            "--export",
            "archive",
            "--export",
            "xz",
        ],
        &manifest,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.json, r.stderr);
    let tar = std::fs::read(out.join("archive/root.tar")).unwrap();
    let xz = std::fs::read(out.join("xz/root.tar.xz")).unwrap();
    let unpacked = Command::new("xz")
        .args(["-dc"])
        .arg(out.join("xz/root.tar.xz"))
        .output()
        .unwrap();
    assert!(unpacked.status.success());
    assert_eq!(unpacked.stdout, tar);
    let mut expected = Command::new("xz")
        .args(["--stdout", "-0", "--threads=2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    expected.stdin.take().unwrap().write_all(&tar).unwrap();
    assert_eq!(expected.wait_with_output().unwrap().stdout, xz);

    // An input that names a file outside its pipeline is refused.
    let mut bad = manifest.clone();
    bad["pipelines"][2]["stages"][0]["inputs"]["file"]["references"] =
        json!({"name:archive": {"file": "../../etc/passwd"}});
    let r = run(
        &[
            "--json",
            "--store",
            s,
            "--output-directory",
            o,
            "--export",
            "xz",
        ],
        &bad,
    );
    assert_ne!(r.code, 0, "{}", r.json);
    let text = r.json.to_string();
    assert!(text.contains("leaves the input"), "{text}");
}
