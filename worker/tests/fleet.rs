//! The fleet: three `kiln-composer` processes on one PostgreSQL, twelve
//! `kiln-worker` processes spread over them, and 300 composes of the
//! smallest image kiln builds (a test distribution whose `tar` is two tiny
//! RPM packages from a `file://` repository), submitted round-robin to the
//! composers. While they run: one composer is killed (SIGKILL) and started
//! again, PostgreSQL restarts, two workers are killed (SIGKILL). Then:
//! every compose is terminal and succeeded; each has exactly one artifact
//! per target, with the bytes its status names (and, the builds being
//! reproducible, the same bytes for all); no build ran more often than its
//! recorded requeues allow; an event stream on a composer other than the
//! building worker's showed progress and log lines; no job is left running
//! or leased; and the fleet's metrics counted the builds.
//!
//! `KILN_FLEET_COMPOSES` changes the number of composes (e.g. to try it
//! small). The composer binary is the one cargo built beside
//! `kiln-worker` (`cargo test --workspace` builds both).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{gen_certs, local_target, WORKER};
use futures::StreamExt;
use kiln_testsupport::rpmrepo::{build_rpms, create_repo, RpmSpec};
use kiln_testsupport::{builduser, free_port, metrics, PgCluster};
use reqwest::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const COMPOSERS: usize = 3;
const WORKERS: usize = 12;
/// The time the whole test may take on the 2-core CI machine.
const WITHIN: Duration = Duration::from_secs(8 * 60);

const SPECS: &[RpmSpec<'static>] = &[
    RpmSpec {
        name: "fleet-setup",
        evr: "1.0-1",
        arch: "noarch",
        tags: "",
        files: &[
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("/etc/group", "root:x:0:\n"),
        ],
        scripts: "",
    },
    RpmSpec {
        name: "fleet-hello",
        evr: "1.0-1",
        arch: "noarch",
        tags: "Requires: fleet-setup",
        files: &[("/usr/share/fleet/hello", "hello from the fleet\n")],
        scripts: "",
    },
];

fn distribution(repo: &str) -> String {
    format!(
        r#"name = "fleet-1"
product = "kiln fleet test"
family = "rpm"
codename = "fleet"
os_version = "1"
releasever = "1"
source_epoch = 1731974400

[[repositories]]
id = "fleet"
name = "fleet test packages"
baseurl = "{repo}"

[architectures.x86_64]
package_arch = "x86_64"
image_types = ["tar"]

[image_types.tar]
filename = "root.tar"
mime_type = "application/x-tar"
packages = ["fleet-hello"]
"#
    )
}

/// The composer binary cargo built beside `kiln-worker`.
fn composer_binary() -> PathBuf {
    let bin = Path::new(WORKER).with_file_name("kiln-composer");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` (or `cargo build -p kiln-composer`) builds it",
        bin.display()
    );
    bin
}

struct Composer {
    config: PathBuf,
    log: PathBuf,
    api: String,
    api_port: u16,
    metrics: String,
    child: Option<Child>,
}

impl Composer {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(composer_binary())
                .arg("--config")
                .arg(&self.config)
                .env_remove("KILN_COMPOSER_CONFIG")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "composer did not come up: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Composer {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct FleetWorker {
    name: String,
    composer: usize,
    child: Child,
    log: PathBuf,
}

impl Drop for FleetWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits a compose to composer `first`, or the next ones while it is down.
async fn submit(
    http: &reqwest::Client,
    composers: &[String],
    first: usize,
    body: &Value,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = first;
    loop {
        if let Ok(r) = http
            .post(format!("{}/compose", composers[i % composers.len()]))
            .json(body)
            .send()
            .await
        {
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status == 201 {
                return v["id"].as_str().unwrap().to_owned();
            }
            assert!(status.is_server_error(), "{status}: {v}");
        }
        assert!(Instant::now() < deadline, "no composer took the compose");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a compose's event stream to its end (or `within`); its text.
async fn follow(http: reqwest::Client, url: String, within: Duration) -> String {
    let mut text = String::new();
    let Ok(r) = http.get(&url).send().await else {
        return text;
    };
    let mut stream = r.bytes_stream();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// One Prometheus scrape of `url`, parsed.
async fn scrape(http: &reqwest::Client, url: &str) -> metrics::Scrape {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    metrics::parse(&text)
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_of_composers_and_workers_survives_its_failures() {
    let started = Instant::now();
    let composes: usize = std::env::var("KILN_FLEET_COMPOSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    builduser::give(dir.path());

    // The packages, their repository and the distribution that names it.
    let rpms = build_rpms(&dir.path().join("build"), SPECS).unwrap();
    let repo = dir.path().join("repo");
    create_repo(&rpms, &repo, "gz").unwrap();
    let repo_url = format!("file://{}/", repo.display());
    let distributions = dir.path().join("distributions");
    std::fs::create_dir_all(&distributions).unwrap();
    std::fs::write(distributions.join("fleet-1.toml"), distribution(&repo_url)).unwrap();

    // Its own cluster: the test restarts it.
    let pg = PgCluster::start(&[("fsync", "off")]).unwrap();
    let database = pg.create_database().unwrap();
    let certs = dir.path().join("certs");
    let names: Vec<String> = (0..WORKERS).map(|i| format!("w{i}.fleet.test")).collect();
    let mut args: Vec<&str> = Vec::new();
    for n in &names {
        args.extend(["--worker", n]);
    }
    gen_certs(&certs, &args);
    builduser::give(&certs);
    for n in &names {
        for f in [format!("worker-{n}.pem"), format!("worker-{n}.key")] {
            builduser::give(&certs.join(f));
        }
    }

    let mut composers: Vec<Composer> = Vec::new();
    let mut worker_ports = Vec::new();
    for i in 0..COMPOSERS {
        let (api_port, worker_port, metrics_port) = (
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        let config = dir.path().join(format!("composer{i}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{api_port}"
data_dir = "{data}"
database_url = "{database}"
distributions_dir = "{distributions}"
[queue]
heartbeat_timeout_secs = 10
reap_interval_secs = 1
max_retries = 10
[jobs]
concurrency = 2
[metrics]
listen = "127.0.0.1:{metrics_port}"
[repositories]
allow = ["{repo_url}"]
[worker_api]
listen = "127.0.0.1:{worker_port}"
ca = "{certs}/ca.pem"
cert = "{certs}/composer.pem"
key = "{certs}/composer.key"
allowed_domains = ["*.fleet.test"]
"#,
                data = dir.path().join(format!("composer{i}")).display(),
                distributions = distributions.display(),
                certs = certs.display(),
            ),
        )
        .unwrap();
        let mut c = Composer {
            config,
            log: dir.path().join(format!("composer{i}.log")),
            api: format!("http://127.0.0.1:{api_port}/api/image-builder-composer/v2"),
            api_port,
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            child: None,
        };
        c.start();
        composers.push(c);
        worker_ports.push(worker_port);
    }
    for c in &composers {
        c.wait_ready();
    }

    // Twelve workers, four per composer, one local directory for all.
    let images = dir.path().join("images");
    let targets = local_target(&images);
    let mut workers: Vec<FleetWorker> = Vec::new();
    // The first worker serves its own metrics.
    let worker_metrics = free_port().unwrap();
    for (i, name) in names.iter().enumerate() {
        let composer = i % COMPOSERS;
        let home = dir.path().join(format!("worker{i}"));
        std::fs::create_dir_all(&home).unwrap();
        builduser::give(&home);
        let config = home.join("worker.toml");
        std::fs::write(
            &config,
            format!(
                "composer = \"https://localhost:{port}\"\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/worker-{name}.pem\"\nkey = \"{certs}/worker-{name}.key\"\narch = \"x86_64\"\nstore = \"{home}/store\"\nwork_dir = \"{home}/jobs\"\nheartbeat_secs = 1\npoll_secs = 5\n{metrics}{targets}\n",
                port = worker_ports[composer],
                metrics = if i == 0 {
                    format!("metrics_listen = \"127.0.0.1:{worker_metrics}\"\n")
                } else {
                    String::new()
                },
                certs = certs.display(),
                home = home.display(),
            ),
        )
        .unwrap();
        let log = home.join("worker.log");
        let child = builduser::run_as(&mut Command::new(builduser::binary(WORKER)))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        workers.push(FleetWorker {
            name: name.clone(),
            composer,
            child,
            log,
        });
    }

    // The composes, spread over the composers; event streams on the two
    // composers that stay up follow the first few.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let apis: Vec<String> = composers.iter().map(|c| c.api.clone()).collect();
    let request = json!({
        "distribution": "fleet-1",
        "image_request": {
            "architecture": "x86_64",
            "image_type": "tar",
            "upload_targets": [{"type": "local", "upload_options": {}}],
        },
    });
    let submissions = {
        let (http, apis, sse) = (http.clone(), apis.clone(), Client::new());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut streams = Vec::new();
            for n in 0..composes {
                let id = submit(&http, &apis, n, &request).await;
                if n < 12 {
                    // Composers 1 and 2: composer 0 is the one killed.
                    let on = 1 + n % 2;
                    let url = format!("{}/composes/{id}/events", apis[on]);
                    streams.push((
                        id.clone(),
                        on,
                        tokio::spawn(follow(sse.clone(), url, WITHIN)),
                    ));
                }
                ids.push(id);
            }
            (ids, streams, started.elapsed())
        })
    };

    // Every composer lists every worker, whichever composer it talks to,
    // with the jobs it holds (`GET /workers`), and counts it active.
    let names_sorted = {
        let mut n = names.clone();
        n.sort();
        n
    };
    let fleet_view = loop {
        assert!(
            started.elapsed() < WITHIN,
            "composer 1 never listed the whole fleet building"
        );
        let list: Value = http
            .get(format!("{}/workers", apis[1]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut listed: Vec<String> = list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /workers: {list}"))
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let holding = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| !w["jobs"].as_array().unwrap().is_empty())
            .count();
        if listed == names_sorted && holding > 0 {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for w in fleet_view["items"].as_array().unwrap() {
        assert_eq!(w["arch"], "x86_64", "{w}");
        for j in w["jobs"].as_array().unwrap() {
            assert!(j["compose_id"].is_string(), "{w}");
            assert!(j["started_at"].is_string(), "{w}");
        }
    }
    let active = metrics::sample(
        &scrape(&http, &composers[2].metrics).await,
        "image_builder_worker_active_workers",
        &[("arch", "x86_64")],
    );
    assert_eq!(active, names.len() as f64, "composer 2's active workers");

    // The failures, while composes come in and build: first two workers
    // killed in the middle of a build each, then composer 0 killed and
    // started again, then PostgreSQL restarted. Each is checked to happen
    // while jobs are still unfinished.
    let queue = kiln_queue::connect(&database).await.unwrap();
    let mut during = Vec::new();
    let mut killed: Vec<(String, uuid::Uuid)> = Vec::new();
    while killed.len() < 2 {
        assert!(
            started.elapsed() < WITHIN,
            "no two workers were building at once"
        );
        let mut building = Vec::new();
        for c in queue
            .list_composes(None, 0, 1000)
            .await
            .map(|(c, _)| c)
            .unwrap_or_default()
        {
            for j in queue.compose_jobs(c.id).await.unwrap_or_default() {
                if j.job_type == "build" && j.state == kiln_queue::JobState::Running {
                    if let Some(w) = j.worker {
                        building.push((w, j.id));
                    }
                }
            }
        }
        for (w, job) in building {
            if killed.len() < 2 && !killed.iter().any(|(k, _)| *k == w) {
                let fw = workers.iter_mut().find(|fw| fw.name == w).unwrap();
                let _ = fw.child.kill();
                let _ = fw.child.wait();
                killed.push((w, job));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    during.push((
        "workers killed",
        !queue.unfinished_counts().await.unwrap().is_empty(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    during.push((
        "composer 0 killed",
        !queue.unfinished_counts().await.unwrap().is_empty(),
    ));
    composers[0].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    composers[0].start();
    composers[0].wait_ready();
    tokio::time::sleep(Duration::from_secs(2)).await;
    during.push((
        "PostgreSQL restarted",
        !queue.unfinished_counts().await.unwrap().is_empty(),
    ));
    pg.restart().unwrap();
    for (what, busy) in &during {
        assert!(busy, "{what} when every job had ended: not during the run");
    }
    let (ids, streams, submitted) = submissions.await.unwrap();

    // Every compose ends.
    let deadline = started + WITHIN;
    let statuses: HashMap<String, Value> = loop {
        let mut all = HashMap::new();
        let mut page = 0;
        let mut complete = true;
        loop {
            let r = http
                .get(format!("{}/composes/?page={page}&size=1000", apis[2]))
                .send()
                .await;
            let Ok(r) = r else {
                complete = false;
                break;
            };
            let list: Value = r.json().await.unwrap_or(Value::Null);
            let Some(items) = list["items"].as_array() else {
                complete = false;
                break;
            };
            for s in items {
                all.insert(s["id"].as_str().unwrap_or_default().to_owned(), s.clone());
            }
            if items.len() < 1000 {
                break;
            }
            page += 1;
        }
        let pending = all
            .values()
            .filter(|s| s["status"] == json!("pending"))
            .count();
        if complete && ids.iter().all(|id| all.contains_key(id)) && pending == 0 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} of {} composes still pending after {:?}",
            ids.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let finished = started.elapsed();
    // A submission cut off by the killed composer or the database restart
    // may have been stored before its answer was lost; the client sent it
    // again. Those composes are the fleet's too: every one is checked.
    let resubmitted = statuses.len() - ids.len();
    let ids: Vec<String> = statuses.keys().cloned().collect();

    // Every compose succeeded, with one artifact per target: the bytes its
    // status names, the same for all (the builds are reproducible).
    let mut digests = HashSet::new();
    for id in &ids {
        let s = &statuses[id];
        assert_eq!(s["status"], json!("success"), "{s}");
        let files = s["image_status"]["upload_status"]["options"]["files"]
            .as_array()
            .unwrap_or_else(|| panic!("no files: {s}"));
        let tar = files
            .iter()
            .find(|f| f["name"] == json!("root.tar"))
            .unwrap();
        let path = images.join(format!("{id}-0-root.tar"));
        let digest = sha256(&path);
        assert_eq!(tar["sha256"].as_str(), Some(digest.as_str()), "{id}");
        digests.insert(digest);
    }
    assert_eq!(digests.len(), 1, "the same image built to different bytes");
    let mut per_compose: HashMap<String, Vec<String>> = HashMap::new();
    for e in std::fs::read_dir(&images).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.get(..36) {
            per_compose.entry(id.to_owned()).or_default().push(name);
        }
    }
    for id in &ids {
        let mut files = per_compose.remove(id).unwrap_or_default();
        files.sort();
        assert_eq!(
            files,
            vec![
                format!("{id}-0-root.tar"),
                format!("{id}-0-root.tar.spdx.json")
            ],
            "{id}"
        );
    }
    assert!(
        per_compose.is_empty(),
        "files of no compose: {per_compose:?}"
    );

    // No build ran more often than its recorded requeues allow, and no
    // job is left running or leased.
    let logs: String = workers
        .iter()
        .map(|w| std::fs::read_to_string(&w.log).unwrap_or_default())
        .collect();
    let mut requeued = 0;
    for id in &ids {
        let jobs = queue.compose_jobs(id.parse().unwrap()).await.unwrap();
        for j in &jobs {
            assert!(j.state.is_finished(), "{j:?}");
            assert_eq!(j.state, kiln_queue::JobState::Success, "{j:?}");
        }
        let build = jobs.iter().find(|j| j.job_type == "build").unwrap();
        let taken = logs
            .lines()
            .filter(|l| l.contains("job taken") && l.contains(&build.id.to_string()))
            .count() as i32;
        assert!(
            taken >= 1 && taken <= build.retries + 1,
            "build {} of {id} taken {taken} times, requeued {}",
            build.id,
            build.retries
        );
        requeued += build.retries;
    }
    let counts = queue.unfinished_counts().await.unwrap();
    assert!(counts.is_empty(), "unfinished jobs: {counts:?}");
    // The builds the killed workers held were taken back and built by
    // another worker (unless the finish was already on its way when the
    // worker died: then it is the killed worker's, never requeued).
    let mut taken_back = 0;
    for (w, job) in &killed {
        let j = queue.job(*job).await.unwrap().unwrap();
        if j.worker.as_deref() == Some(w.as_str()) {
            assert_eq!(j.retries, 0, "{j:?}");
        } else {
            assert!(
                j.retries >= 1,
                "{w}'s build {job} moved without a requeue: {j:?}"
            );
            taken_back += 1;
        }
    }

    // An event stream on a composer the building worker did not talk to
    // showed its progress and its log lines.
    let mut across = 0;
    for (id, on, stream) in streams {
        let text = stream.await.unwrap();
        let jobs = queue.compose_jobs(id.parse().unwrap()).await.unwrap();
        let build = jobs.iter().find(|j| j.job_type == "build").unwrap();
        let worker = workers
            .iter()
            .find(|w| Some(w.name.as_str()) == build.worker.as_deref())
            .unwrap();
        if worker.composer != on
            && text.contains("event: log")
            && text.contains("\"progress\":{")
            && text.contains("\"success\"")
        {
            across += 1;
        }
    }
    assert!(
        across >= 1,
        "no event stream showed another composer's build"
    );

    // The fleet's metrics: every build finished on some composer.
    let mut builds = 0.0;
    for c in &composers {
        let scrape = scrape(&http, &c.metrics).await;
        let success = [("type", "build"), ("status", "success")];
        builds += metrics::sample(&scrape, "image_builder_worker_total_jobs", &success);
    }
    // Composer 0's counters restarted with it.
    assert!(builds >= 1.0 && builds <= composes as f64, "{builds}");
    // A worker's own: its builds, their stages, its uploads and its store.
    let text = http
        .get(format!("http://127.0.0.1:{worker_metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = metrics::parse(&text);
    let value = |name: &str, labels: &[(&str, &str)]| metrics::sample(&scrape, name, labels);
    let built = value(
        "image_builder_worker_build_duration_seconds",
        &[("image_type", "tar"), ("status", "success")],
    );
    assert!(built >= 1.0, "{text}");
    let tarred = value(
        "image_builder_worker_stage_duration_seconds",
        &[("stage", "org.osbuild.tar")],
    );
    // The store holds the whole build after the first: later builds of
    // the same manifest run no stage.
    assert!(tarred >= 1.0, "{text}");
    assert!(
        value(
            "image_builder_worker_upload_bytes_total",
            &[("target", "local")]
        ) > 10240.0 * built - 1.0,
        "{text}"
    );
    let uploads = value(
        "image_builder_worker_upload_duration_seconds",
        &[("target", "local"), ("status", "success")],
    );
    assert_eq!(uploads, built, "{text}");
    assert!(
        value("image_builder_worker_store_bytes", &[]) > 0.0,
        "{text}"
    );
    let per_minute = composes as f64 / finished.as_secs_f64() * 60.0;
    eprintln!(
        "fleet: {composes} composes, {COMPOSERS} composers, {WORKERS} workers ({killed:?} killed): \
         submitted in {submitted:.1?}, all ended in {finished:.1?} ({per_minute:.0} composes/min); \
         {requeued} requeues ({taken_back} of the killed workers' builds); \
         {resubmitted} stored twice by a retried submission; {across} event streams followed another composer's build"
    );

    // No build outlives the fleet: the killed workers' executors end too
    // (they once waited for ever on a stage's leftover bubblewrap).
    let leftovers = || -> Vec<String> {
        let needle = dir.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle) && (c.contains(" osbuild ") || c.starts_with("bwrap")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leftovers().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "builds outlived the fleet"
    );

    // The peer, in the same run: the same builds by the executor alone,
    // WORKERS at a time, each slot with a store of its own as each worker
    // has (no composer, queue, depsolve, upload or failure).
    let any = ids[0].parse().unwrap();
    let manifest: kiln_api::jobs::ManifestResult = queue
        .compose_jobs(any)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.job_type == "manifest")
        .and_then(|j| j.result)
        .map(|r| serde_json::from_value(r).unwrap())
        .expect("a manifest job's result");
    let (alone, alone_took) = executor_alone(dir.path(), &manifest, composes);
    let alone_per_minute = alone as f64 / alone_took.as_secs_f64() * 60.0;
    eprintln!(
        "fleet vs the executor alone: {per_minute:.0} vs {alone_per_minute:.0} builds/min \
         ({alone} builds in {alone_took:.1?}, {WORKERS} at a time): ratio {:.2}",
        per_minute / alone_per_minute
    );
}

/// Runs `manifest` with `kiln-worker osbuild` at least `count` times,
/// [`WORKERS`] at a time, each slot with its own store and the build's
/// checkpoints; returns how many builds ran and how long they took.
fn executor_alone(
    dir: &Path,
    manifest: &kiln_api::jobs::ManifestResult,
    count: usize,
) -> (usize, Duration) {
    let peer = dir.join("peer");
    std::fs::create_dir_all(&peer).unwrap();
    builduser::give(&peer);
    let file = peer.join("manifest.json");
    std::fs::write(&file, manifest.manifest.to_string()).unwrap();
    builduser::give(&file);
    let binary = builduser::binary(WORKER);
    let rounds = count.div_ceil(WORKERS);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for slot in 0..WORKERS {
            let (peer, file, binary) = (&peer, &file, &binary);
            scope.spawn(move || {
                let home = peer.join(format!("slot{slot}"));
                std::fs::create_dir_all(&home).unwrap();
                builduser::give(&home);
                for round in 0..rounds {
                    let out = home.join(format!("out{round}"));
                    let mut cmd = Command::new(binary);
                    cmd.arg("osbuild")
                        .arg("--store")
                        .arg(home.join("store"))
                        .arg("--output-directory")
                        .arg(&out)
                        .args(["--export", &manifest.export, "--json"]);
                    for id in &manifest.checkpoints {
                        cmd.args(["--checkpoint", id]);
                    }
                    let status = builduser::run_as(cmd.arg(file))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(status.success(), "the executor alone: {status}");
                    assert!(out.join(&manifest.export).join(&manifest.filename).exists());
                    std::fs::remove_dir_all(&out).unwrap();
                }
            });
        }
    });
    (rounds * WORKERS, started.elapsed())
}
