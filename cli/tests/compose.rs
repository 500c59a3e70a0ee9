//! `kiln compose` run as a process against a real composer, served in this
//! test process over SQLite in a temp dir. Jobs stay queued (no worker);
//! where a test needs a build to happen, it plays the worker through the
//! composer's queue and live state, as the worker API would.

use std::process::Stdio;
use std::time::Duration;

use kiln_api::status::{Progress, SubProgress};
use kiln_api::worker::BuildPhase;
use kiln_composer::{AppState, ComposerConfig};
use kiln_queue::{DequeueFilter, Outcome};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// No `kiln login` of the person running the tests reaches these composers.
const NO_TOKEN_CACHE: &str = "/nonexistent/kiln-tests/token.json";

struct TestComposer {
    /// What `--composer` takes: `http://127.0.0.1:PORT`.
    url: String,
    state: AppState,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start_composer() -> TestComposer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ComposerConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    config.jobs.run_in_composer = false;
    let state = AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = state.clone();
    tokio::spawn(async move {
        kiln_composer::serve(serving, listener, std::future::pending())
            .await
            .unwrap();
    });
    TestComposer {
        url: format!("http://{addr}"),
        state,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestComposer {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/api/image-builder-composer/v2{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn kiln(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KILN);
        cmd.arg("compose")
            .args(args)
            .env("KILN_COMPOSER_URL", &self.url)
            .env("KILN_TOKEN_CACHE", NO_TOKEN_CACHE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `kiln compose ARGS`: exit code, stdout, stderr.
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        finished(self.kiln(args).output().await.unwrap())
    }
}

fn finished(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PXE_FLAGS: [&str; 7] = [
    "start",
    "--distribution",
    "debian-12",
    "--arch",
    "x86_64",
    "--image-type",
    "pxe",
];

/// A running `kiln` whose output arrives on a channel, so a test can wait
/// for what it has printed so far.
struct Running {
    child: tokio::process::Child,
    chunks: mpsc::UnboundedReceiver<String>,
    /// Everything read, and how far `expect` has looked.
    seen: String,
    pos: usize,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, chunks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        Running {
            child,
            chunks,
            seen: String::new(),
            pos: 0,
        }
    }

    /// Waits (20 s at most) for a whole line containing `text` after what
    /// the last call found; returns that line.
    async fn expect(&mut self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.seen[self.pos..].find(text).map(|i| i + self.pos) {
                if let Some(end) = self.seen[i..].find('\n').map(|e| e + i) {
                    let start = self.seen[..i].rfind('\n').map_or(0, |s| s + 1);
                    self.pos = i + text.len();
                    return self.seen[start..end].to_owned();
                }
            }
            match tokio::time::timeout_at(deadline, self.chunks.recv()).await {
                Ok(Some(chunk)) => self.seen.push_str(&chunk),
                Ok(None) => panic!("kiln ended before printing {text:?}:\n{}", self.seen),
                Err(_) => panic!("no {text:?} in 20 s:\n{}", self.seen),
            }
        }
    }

    /// Waits (20 s at most) for `text` after what the last call found,
    /// whole line or not (a terminal's bars end in no newline).
    async fn expect_text(&mut self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.seen[self.pos..].find(text) {
                self.pos += i + text.len();
                return;
            }
            match tokio::time::timeout_at(deadline, self.chunks.recv()).await {
                Ok(Some(chunk)) => self.seen.push_str(&chunk),
                Ok(None) => panic!("kiln ended before printing {text:?}:\n{}", self.seen),
                Err(_) => panic!("no {text:?} in 20 s:\n{}", self.seen),
            }
        }
    }

    /// Waits (20 s at most) for `text` anywhere in the output so far.
    async fn expect_anywhere(&mut self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(text) {
            match tokio::time::timeout_at(deadline, self.chunks.recv()).await {
                Ok(Some(chunk)) => self.seen.push_str(&chunk),
                Ok(None) => panic!("kiln ended before printing {text:?}:\n{}", self.seen),
                Err(_) => panic!("no {text:?} in 20 s:\n{}", self.seen),
            }
        }
    }

    /// Waits for the process to exit: its code, all of stdout, stderr.
    async fn finish(mut self) -> (i32, String, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("kiln exits in time")
            .unwrap();
        while let Some(chunk) = self.chunks.recv().await {
            self.seen.push_str(&chunk);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut stderr).await.unwrap();
        }
        (status.code().unwrap_or(-1), self.seen, stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_list_logs_cancel_and_delete() {
    let c = start_composer().await;
    let dir = tempfile::tempdir().unwrap();

    // Flags, with a blueprint, a repository and targets.
    let bp = dir.path().join("node.toml");
    std::fs::write(
        &bp,
        "name = \"node\"\n[customizations]\nhostname = \"node-7\"\n",
    )
    .unwrap();
    let mut args = PXE_FLAGS.to_vec();
    let bp_arg = bp.to_str().unwrap();
    args.extend([
        "--blueprint",
        bp_arg,
        "--repository",
        "http://deb.debian.org/debian bookworm main",
        "--target",
        "local",
        "--target",
        "aws.s3:eu-west-1",
    ]);
    let (code, out, err) = c.run(&args).await;
    assert_eq!(code, 0, "{err}");
    let flags_id = out.trim().to_owned();
    uuid::Uuid::parse_str(&flags_id).unwrap_or_else(|_| panic!("not an id: {out:?}"));
    let meta = c.get(&format!("/composes/{flags_id}/metadata")).await;
    let image = &meta["request"]["image_request"];
    assert_eq!(image["image_type"], "pxe");
    assert_eq!(
        image["upload_targets"],
        json!([{"type": "local", "upload_options": {}},
               {"type": "aws.s3", "upload_options": {"region": "eu-west-1"}}])
    );
    assert_eq!(
        image["repositories"],
        json!([{"baseurl": "http://deb.debian.org/debian", "suite": "bookworm", "components": ["main"]}])
    );
    assert_eq!(
        meta["request"]["blueprint"]["customizations"]["hostname"],
        "node-7"
    );

    // A request file, answered in JSON.
    let request = json!({
        "distribution": "debian-12",
        "image_request": {"architecture": "x86_64", "image_type": "tar",
                          "upload_targets": [{"type": "local", "upload_options": {}}]},
        "customizations": {"hostname": "from-file"}
    });
    let file = dir.path().join("request.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let (code, out, err) = c
        .run(&[
            "start",
            "--request",
            file.to_str().unwrap(),
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["kind"], "ComposeId");
    let file_id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer["href"],
        format!("/api/image-builder-composer/v2/composes/{file_id}")
    );
    assert_eq!(
        c.get(&format!("/composes/{file_id}/metadata")).await["request"],
        request
    );

    // The same request on standard input.
    let mut child = c
        .kiln(&["start", "--request", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .await
        .unwrap();
    let (code, out, err) = finished(child.wait_with_output().await.unwrap());
    assert_eq!(code, 0, "{err}");
    let stdin_id = out.trim().to_owned();

    // Status: a table, and the composer's JSON.
    let (code, out, _) = c.run(&["status", &flags_id]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("ID      {flags_id}")), "{out}");
    assert!(out.contains("STATUS  pending"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("0 ") && l.contains("pending")),
        "{out}"
    );
    let (code, out, _) = c.run(&["status", &flags_id, "--output", "json"]).await;
    assert_eq!(code, 0);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (st["id"].as_str(), st["status"].as_str()),
        (Some(flags_id.as_str()), Some("pending"))
    );

    // List: newest first.
    let (code, out, _) = c.run(&["list"]).await;
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        rows[0].starts_with(&stdin_id) && rows[2].starts_with(&flags_id),
        "{out}"
    );
    assert!(out.contains("3 of 3 composes"), "{out}");
    let (_, out, _) = c.run(&["--output", "json", "list"]).await;
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["total"], 3);

    // Cancel; the status says so, and the logs tell each job's end.
    let (code, out, err) = c.run(&["cancel", &file_id]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("compose {file_id} canceled"));
    let (_, out, _) = c.run(&["status", &file_id]).await;
    assert!(out.contains("STATUS  failure (canceled)"), "{out}");
    assert!(out.contains("error: compose canceled"), "{out}");
    let (_, out, _) = c.run(&["status", &file_id, "--output", "json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["canceled"],
        true
    );
    let (code, out, _) = c.run(&["logs", &file_id]).await;
    assert_eq!(code, 0);
    for job in ["depsolve", "manifest", "build"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(job) && l.ends_with(": canceled")),
            "{out}"
        );
    }
    let (_, out, _) = c.run(&["logs", &file_id, "--output", "json"]).await;
    let logs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(logs["image_builds"][0]["jobs"].as_array().unwrap().len(), 3);
    let (_, out, _) = c.run(&["cancel", &file_id]).await;
    assert!(
        out.contains("had already finished: failure (canceled)"),
        "{out}"
    );

    // Delete the finished one; it is gone. The unfinished one stays.
    let (code, out, err) = c.run(&["delete", &file_id]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("compose {file_id} deleted"));
    let (code, _, err) = c.run(&["status", &file_id]).await;
    assert_eq!(code, 1);
    assert_eq!(err.trim(), format!("kiln: no compose {file_id}"));
    let (code, _, err) = c.run(&["delete", &flags_id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("has not finished; cancel it first"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_name_the_field() {
    let c = start_composer().await;
    let dir = tempfile::tempdir().unwrap();

    let mut args = PXE_FLAGS.to_vec();
    args[4] = "s390x";
    let (code, out, err) = c.run(&args).await;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with("kiln: "), "{err}");
    assert!(
        err.trim_end().ends_with("(image_request.architecture)"),
        "{err}"
    );
    assert!(err.contains("\"s390x\""), "{err}");

    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        json!({"distribution": "debian-12",
               "image_request": {"architecture": "x86_64", "image_type": "pxe", "colour": "blue"}})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = c.run(&["start", "--request", file.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("image_request.colour"), "{err}");

    // A target the composer would refuse: its options name the field.
    let mut args = PXE_FLAGS.to_vec();
    args.extend(["--target", "gcp:eu,colour=blue"]);
    let (code, _, err) = c.run(&args).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("(image_request.upload_targets[0].upload_options)"),
        "{err}"
    );

    // Caught before asking: the flag's own syntax, the id, the file.
    let mut args = PXE_FLAGS.to_vec();
    args.extend(["--target", "s3:eu"]);
    let (code, _, err) = c.run(&args).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown target type \"s3\""), "{err}");
    let (code, _, err) = c.run(&["status", "../../errors"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("is not a compose id"), "{err}");
    std::fs::write(&file, "{not json").unwrap();
    let (code, _, err) = c.run(&["start", "--request", file.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bad.json: not JSON"), "{err}");

    // Flags and --request do not mix; clap says so (exit 2).
    let (code, _, err) = c
        .run(&["start", "--request", "x.json", "--arch", "x86_64"])
        .await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_composer_is_named() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["list"][..],
        &PXE_FLAGS[..],
        &["wait", "00000000-0000-0000-0000-000000000000"][..],
    ] {
        let out = Command::new(KILN)
            .arg("compose")
            .args(args)
            .args(["--composer", &url])
            .env("KILN_TOKEN_CACHE", NO_TOKEN_CACHE)
            .output()
            .await
            .unwrap();
        let (code, _, err) = finished(out);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "kiln: cannot reach the composer at {url}/api/image-builder-composer/v2/"
            )),
            "{args:?}: {err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{args:?}: {err}");
    }
    let (code, _, err) = finished(
        Command::new(KILN)
            .args(["compose", "list", "--composer", "localhost:8700"])
            .env("KILN_TOKEN_CACHE", NO_TOKEN_CACHE)
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("not a composer URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_a_cancel_and_exits_1() {
    let c = start_composer().await;
    let (_, out, _) = c.run(&PXE_FLAGS).await;
    let id = out.trim().to_owned();

    let mut waiting = Running::spawn(c.kiln(&["wait", &id]));
    // Following: the first status arrived.
    waiting.expect("pending").await;
    let (code, _, err) = c.run(&["cancel", &id]).await;
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = waiting.finish().await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("job depsolve"), "{out}");
    assert!(out.contains(": canceled"), "{out}");
    assert!(out.contains(&format!("compose {id} was canceled")), "{out}");
    assert_eq!(
        err.trim(),
        format!("kiln: compose {id} was canceled: compose canceled")
    );

    // Waiting on a finished compose reports at once; JSON for scripts.
    let (code, out, _) = c.run(&["wait", &id, "--output", "json"]).await;
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["canceled"], true);
    assert_eq!(v["kernel_cmdlines"], json!([null]));
}

const CMDLINE: &str = "boot=live ip=dhcp console=ttyS0";
const ARTIFACTS: &str = "file:///var/lib/kiln/artifacts/image";

/// Plays the worker through a whole pxe build of compose `id` while
/// `watching` follows it: each step waits until kiln has shown the last one
/// (`bars`: as a terminal shows them).
/// A log line that would retitle and clear a terminal, and as kiln shows it.
const HOSTILE: &str = "dpkg: \u{1b}]0;owned\u{7}\u{1b}[2J hostile";
const HOSTILE_SHOWN: &str = "dpkg: ?]0;owned??[2J hostile";

async fn play_pxe_build(c: &TestComposer, id: uuid::Uuid, watching: &mut Running, bars: bool) {
    let queue = &c.state.queue;
    let take = |t: &'static str| async move {
        queue
            .dequeue(
                &DequeueFilter::types(&[t]),
                "test-worker",
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {t} job"))
    };
    let lease = take("depsolve").await;
    queue
        .finish(lease.token, Outcome::Success(json!({"packages": []})))
        .await
        .unwrap();
    watching.expect_text("job depsolve").await;
    let lease = take("manifest").await;
    queue
        .finish(
            lease.token,
            Outcome::Success(json!({"kernel_cmdline": CMDLINE})),
        )
        .await
        .unwrap();

    let build = take("build").await;
    watching.expect_text("job build").await;
    // As the worker API records a worker's report.
    let progress = Progress {
        done: 1,
        total: 3,
        subprogress: Some(SubProgress { done: 2, total: 5 }),
    };
    queue
        .report_live(
            build.job.id,
            Some(id),
            Some(&json!(BuildPhase::Building)),
            Some(&json!(progress)),
            &[
                "org.osbuild.apt: unpacking linux-image-amd64".into(),
                // A build's output may carry terminal control: shown as `?`.
                HOSTILE.into(),
            ],
        )
        .await
        .unwrap();
    if bars {
        watching.expect_text("1/3 pipelines").await;
        watching.expect_text("2/5 stages").await;
    } else {
        watching.expect("building: pipelines 1/3, stages 2/5").await;
    }
    // Printed above the bars, whichever is drawn first.
    watching
        .expect_anywhere("unpacking linux-image-amd64")
        .await;
    queue
        .report_live(
            build.job.id,
            Some(id),
            Some(&json!(BuildPhase::Uploading)),
            None,
            &[],
        )
        .await
        .unwrap();
    watching.expect_text("uploading").await;

    queue
        .finish(
            build.token,
            Outcome::Success(json!({
                "uploads": [{"type": "local", "status": "success", "options": {
                    "url": ARTIFACTS,
                    "files": [{"name": "vmlinuz", "url": format!("{ARTIFACTS}/vmlinuz"), "size": 7, "sha256": "ab12"}]
                }}],
                "artifacts": [{"name": "vmlinuz", "size": 7, "sha256": "ab12"}],
                "kernel_cmdline": CMDLINE,
            })),
        )
        .await
        .unwrap();
    queue.seal_log(build.job.id).await.unwrap();
}

fn assert_report(id: uuid::Uuid, out: &str) {
    assert!(out.contains(&format!("compose {id} succeeded")), "{out}");
    assert!(
        out.contains(&format!("local: success  {ARTIFACTS}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "vmlinuz  7 bytes  sha256:ab12  {ARTIFACTS}/vmlinuz"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("kernel command line: {CMDLINE}")),
        "{out}"
    );
}

/// `kiln compose start --wait --follow-logs` in a pipe: a line per change
/// (progress, phases, jobs), the build's log lines, then where the image
/// went and its kernel command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_follows_a_build_to_its_artifacts() {
    let c = start_composer().await;
    let mut args = PXE_FLAGS.to_vec();
    args.extend(["--wait", "--follow-logs"]);
    let mut waiting = Running::spawn(c.kiln(&args));
    let id: uuid::Uuid = waiting.expect("-").await.trim().parse().unwrap();
    waiting.expect("pending").await;
    play_pxe_build(&c, id, &mut waiting, false).await;

    let (code, out, err) = waiting.finish().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.is_empty(), "{err}");
    // A pipe gets plain lines, no terminal control, not even the build's.
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert!(out.contains(HOSTILE_SHOWN), "{out}");
    assert_report(id, &out);
    // The stored log, the same.
    let (code, logs, _) = c.run(&["logs", &id.to_string()]).await;
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains(HOSTILE_SHOWN), "{logs}");
    assert!(
        !logs.contains('\u{1b}') && !logs.contains('\u{7}'),
        "{logs:?}"
    );

    // The status table shows the upload too.
    let (_, out, _) = c.run(&["status", &id.to_string()]).await;
    assert!(out.contains("STATUS  success"), "{out}");
    assert!(
        out.contains(&format!("local: success  {ARTIFACTS}")),
        "{out}"
    );
}

/// On a terminal (`script` gives kiln one), `kiln compose wait` draws bars:
/// pipelines done/total and the current pipeline's stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_a_terminal_draws_progress_bars() {
    let c = start_composer().await;
    let (_, out, _) = c.run(&PXE_FLAGS).await;
    let id: uuid::Uuid = out.trim().parse().unwrap();
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(format!("{KILN} compose wait {id} --follow-logs"))
        .arg("/dev/null")
        .env("KILN_COMPOSER_URL", &c.url)
        .env("KILN_TOKEN_CACHE", NO_TOKEN_CACHE)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut waiting = Running::spawn(script);
    waiting.expect_text("pending").await;
    play_pxe_build(&c, id, &mut waiting, true).await;
    let (code, out, err) = waiting.finish().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("building: pipelines"), "{out}");
    assert!(out.contains("1/3 pipelines"), "{out}");
    // While uploading, the bar counts bytes.
    assert!(out.contains("3 B/3 B"), "{out}");
    assert_report(id, &out.replace('\r', ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_reported_with_its_reason() {
    let c = start_composer().await;
    let (_, out, _) = c.run(&PXE_FLAGS).await;
    let id = out.trim().to_owned();
    let queue = &c.state.queue;
    for t in ["depsolve", "manifest"] {
        let l = queue
            .dequeue(&DequeueFilter::types(&[t]), "w", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        queue
            .finish(l.token, Outcome::Success(json!({})))
            .await
            .unwrap();
    }
    let l = queue
        .dequeue(
            &DequeueFilter::types(&["build"]),
            "w",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .unwrap();
    queue
        .finish(
            l.token,
            Outcome::Failure {
                reason: "1 of 1 uploads failed".into(),
                result: Some(json!({"uploads": [{"type": "aws.s3", "status": "failure",
                    "options": {"reason": "bucket images: access denied"}}]})),
            },
        )
        .await
        .unwrap();
    let (code, out, err) = c.run(&["wait", &id]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("compose {id} failed")), "{out}");
    assert!(
        out.contains("reason: bucket images: access denied"),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "kiln: compose {id} failed: build job failed: 1 of 1 uploads failed"
        )),
        "{err}"
    );
    assert!(
        err.contains("kiln: upload to aws.s3 failed: bucket images: access denied"),
        "{err}"
    );
}
