//! A whole kiln on loopback: a composer (compose API and mutual-TLS worker
//! API) over a throwaway PostgreSQL database, certificates from
//! tools/gen-certs.sh, a Debian mirror of real packages, and `kiln-worker`
//! processes with their own stores and configuration.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_composer::{AppState, ComposerConfig};
use kiln_testsupport::{builduser, PgCluster};
use serde_json::{json, Value};

pub(crate) const WORKER: &str = env!("CARGO_BIN_EXE_kiln-worker");

pub(crate) struct Kiln {
    pub api: String,
    pub worker_api: String,
    pub state: AppState,
    pub certs: tempfile::TempDir,
    pub mirror: kiln_testsupport::debrepo::DebRepo,
    pub image_type: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    _mirror_dir: tempfile::TempDir,
}

pub(crate) use kiln_testsupport::host::gen_certs;

/// The packages of an image type (the essential set comes with them).
fn package_set(image_type: &str) -> Vec<String> {
    let catalog = kiln_distro::Catalog::embedded().unwrap();
    catalog
        .get("debian-12")
        .unwrap()
        .packages("x86_64", image_type)
        .unwrap()
}

impl Kiln {
    /// A kiln whose mirror holds the packages of `tar` images.
    pub(crate) async fn start(tweak: impl FnOnce(&mut ComposerConfig)) -> Kiln {
        Kiln::start_for("tar", tweak).await
    }

    pub(crate) async fn start_for(
        image_type: &str,
        tweak: impl FnOnce(&mut ComposerConfig),
    ) -> Kiln {
        Kiln::start_for_types(&[image_type], tweak).await
    }

    /// A kiln whose mirror holds the packages of every one of
    /// `image_types`; [`Kiln::request`] composes the first.
    pub(crate) async fn start_for_types(
        image_types: &[&str],
        tweak: impl FnOnce(&mut ComposerConfig),
    ) -> Kiln {
        Kiln::start_mirroring(image_types, &[], tweak).await
    }

    /// A kiln whose mirror holds the packages of `image_types` and those
    /// `extra` packages need.
    pub(crate) async fn start_mirroring(
        image_types: &[&str],
        extra: &[String],
        tweak: impl FnOnce(&mut ComposerConfig),
    ) -> Kiln {
        let image_type = image_types[0];
        let mut packages: Vec<String> = image_types.iter().flat_map(|t| package_set(t)).collect();
        packages.extend(extra.iter().cloned());
        packages.sort();
        packages.dedup();
        let dir = tempfile::tempdir().unwrap();
        let certs = tempfile::tempdir().unwrap();
        gen_certs(
            certs.path(),
            &[
                "--worker",
                "w1.kiln.test",
                "--worker",
                "w2.kiln.test",
                "--worker",
                "intruder.example",
            ],
        );
        let mirror_dir = tempfile::tempdir().unwrap();
        let (mirror, _) =
            kiln_testsupport::aptcache::debian_mirror(mirror_dir.path(), &packages).unwrap();
        let mut config = ComposerConfig {
            data_dir: dir.path().join("composer"),
            database_url: Some(PgCluster::shared().unwrap().create_database().unwrap()),
            ..Default::default()
        };
        config.worker_api.ca = Some(certs.path().join("ca.pem"));
        config.worker_api.cert = Some(certs.path().join("composer.pem"));
        config.worker_api.key = Some(certs.path().join("composer.key"));
        config.worker_api.allowed_domains = vec!["*.kiln.test".into()];
        config.queue.reap_interval_secs = 1;
        config.repositories.allow = vec![kiln_composer::AllowEntry::Prefix(mirror.url())];
        tweak(&mut config);
        let tls = kiln_composer::worker_api::load_tls(&config.worker_api)
            .unwrap()
            .unwrap();
        let state = AppState::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!(
            "http://{}/api/image-builder-composer/v2",
            listener.local_addr().unwrap()
        );
        let s = state.clone();
        tokio::spawn(
            async move { kiln_composer::serve(s, listener, std::future::pending()).await },
        );
        let wl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker_api = format!("https://localhost:{}", wl.local_addr().unwrap().port());
        tokio::spawn(kiln_composer::worker_api::serve(
            state.clone(),
            wl,
            tls,
            std::future::pending(),
        ));
        Kiln {
            api,
            worker_api,
            state,
            certs,
            mirror,
            image_type: image_type.to_owned(),
            http: reqwest::Client::new(),
            dir,
            _mirror_dir: mirror_dir,
        }
    }

    /// A compose of the mirror's image type with these upload targets.
    pub(crate) fn request(&self, targets: Value) -> Value {
        self.request_of(&self.image_type, targets)
    }

    /// A compose of `image_type` with these upload targets.
    pub(crate) fn request_of(&self, image_type: &str, targets: Value) -> Value {
        json!({
            "distribution": "debian-12",
            "image_request": {
                "architecture": "x86_64",
                "image_type": image_type,
                "repositories": [{"baseurl": self.mirror.url(), "suite": "test", "components": ["main"], "check_repo_gpg": false}],
                "upload_targets": targets,
            },
            "blueprint": {"name": "node", "customizations": {"hostname": "node-e2e"}}
        })
    }

    pub(crate) async fn submit(&self, request: &Value) -> String {
        self.submit_as(request, None).await
    }

    /// Submits with `X-Request-Id: request_id` (when given), which the
    /// answer must carry back.
    pub(crate) async fn submit_as(&self, request: &Value, request_id: Option<&str>) -> String {
        let mut r = self
            .http
            .post(format!("{}/compose", self.api))
            .json(request);
        if let Some(rid) = request_id {
            r = r.header("X-Request-Id", rid);
        }
        let r = r.send().await.unwrap();
        if let Some(rid) = request_id {
            assert_eq!(r.headers()["x-request-id"], rid);
        }
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn status(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/composes/{id}", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the compose until `done(status)` or the deadline.
    pub(crate) async fn wait(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status(id).await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "compose {id} did not get there in {within:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes a worker.toml for `name` (a certificate from gen-certs) and
    /// starts a worker with it; `targets` is TOML for `[targets.*]`.
    pub(crate) fn worker(&self, name: &str, targets: &str) -> Worker {
        self.worker_with(name, targets, self.certs.path())
    }

    pub(crate) fn worker_with(&self, name: &str, targets: &str, certs: &Path) -> Worker {
        let home = self
            .dir
            .path()
            .join(format!("worker-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&home).unwrap();
        // The worker runs as the build user (it refuses root): its home,
        // certificate and key are that user's.
        builduser::give(self.dir.path());
        builduser::give(&home);
        builduser::give(certs);
        for f in [format!("worker-{name}.pem"), format!("worker-{name}.key")] {
            if certs.join(&f).exists() {
                builduser::give(&certs.join(f));
            }
        }
        let config = format!(
            "composer = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\narch = \"x86_64\"\nstore = \"{}\"\nwork_dir = \"{}\"\nheartbeat_secs = 1\npoll_secs = 2\n{targets}\n",
            self.worker_api,
            self.certs.path().join("ca.pem").display(),
            certs.join(format!("worker-{name}.pem")).display(),
            certs.join(format!("worker-{name}.key")).display(),
            home.join("store").display(),
            home.join("jobs").display(),
        );
        let file = home.join("worker.toml");
        std::fs::write(&file, config).unwrap();
        let log = home.join("worker.log");
        let child = builduser::run_as(&mut Command::new(builduser::binary(WORKER)))
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, home, log }
    }
}

pub(crate) struct Worker {
    pub child: Child,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Worker {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (once: stop taking jobs; twice: stop them at once).
    pub(crate) fn terminate(&self) {
        // SAFETY: kill(2) on the worker's own pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Processes that are this worker's executors (`kiln-worker osbuild`).
    pub(crate) fn executors(&self) -> Vec<u32> {
        let store = self.home.join("store").display().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(" osbuild ") && cmd.contains(&store) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `[targets.local]` section for a directory.
pub(crate) fn local_target(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    builduser::give(dir);
    format!(
        "[targets.local]\ntype = \"local\"\npath = \"{}\"\n",
        dir.display()
    )
}

/// `text` without its ANSI escape sequences (the worker's text log colours
/// field names).
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte (@ to ~).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
