//! Request to manifest ready: `POST /compose` of a `pxe` image until its
//! manifest job has succeeded, with the depsolve cache warm, on the real
//! bookworm indexes (main, updates, security) served as file:// repositories
//! made from the machine's apt lists. The first compose (cold: fetch, verify,
//! parse) is printed apart.
//!
//! `cargo bench -p kiln-composer --bench manifest` (KILN_BENCH_RUNS, default 30).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_composer::{AppState, ComposerConfig};
use kiln_queue::JobState;
use serde_json::{json, Value};

const LISTS: &str = "/var/lib/apt/lists";

/// (suite, apt list file stem) of the machine's bookworm indexes.
const SUITES: &[(&str, &str)] = &[
    (
        "bookworm",
        "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
    ),
    (
        "bookworm-updates",
        "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages",
    ),
    (
        "bookworm-security",
        "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
    ),
];

/// A repository per suite whose Packages is the machine's list (the package
/// files themselves are not there: a manifest only names them).
fn repositories(root: &Path) -> Vec<Value> {
    SUITES
        .iter()
        .map(|(suite, stem)| {
            let list = ["", ".lz4", ".xz", ".gz"]
                .iter()
                .map(|ext| PathBuf::from(LISTS).join(format!("{stem}{ext}")))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{LISTS}/{stem}* missing: run apt-get update"));
            let data = std::fs::read(&list).expect("reading the apt list");
            let text = kiln_depsolve::compression::decompress_to_string(&list.display().to_string(), &data)
                .expect("decompressing the apt list");
            let dir = root.join(suite);
            let bin = dir.join(format!("dists/{suite}/main/binary-amd64"));
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("Packages"), text).unwrap();
            let release = Command::new("apt-ftparchive")
                .args(["-o", &format!("APT::FTPArchive::Release::Suite={suite}")])
                .args(["-o", "APT::FTPArchive::Release::Components=main", "-o", "APT::FTPArchive::Release::Architectures=amd64"])
                .args(["release", &format!("dists/{suite}")])
                .current_dir(&dir)
                .output()
                .expect("apt-ftparchive (apt-utils)");
            assert!(release.status.success());
            std::fs::write(dir.join(format!("dists/{suite}/Release")), release.stdout).unwrap();
            json!({"baseurl": format!("file://{}", dir.display()), "suite": suite, "components": ["main"], "check_repo_gpg": false})
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let repos = repositories(dir.path());
    let mut config = ComposerConfig {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.jobs.concurrency = 2;
    let state = AppState::open(config).await.expect("composer state");
    let queue = state.queue.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!(
        "http://{}/api/image-builder-composer/v2",
        listener.local_addr().unwrap()
    );
    tokio::spawn(kiln_composer::serve(
        state,
        listener,
        std::future::pending(),
    ));

    let mut request: Value =
        serde_json::from_str(include_str!("../../examples/compute-node.json")).unwrap();
    request["image_request"]["repositories"] = json!(repos);
    let http = reqwest::Client::new();
    let mut events = queue.subscribe();

    let mut samples = Vec::new();
    let mut cold = Duration::ZERO;
    for i in 0..=runs {
        let t0 = Instant::now();
        let r = http
            .post(format!("{api}/compose"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id: uuid::Uuid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(120), events.recv())
                .await
                .expect("manifest in time")
                .unwrap();
            if ev.compose != Some(id) {
                continue;
            }
            assert!(
                ev.state != JobState::Failed,
                "compose {id} failed: see its status"
            );
            if ev.job_type == "manifest" && ev.state == JobState::Success {
                break;
            }
        }
        let took = t0.elapsed();
        if i == 0 {
            cold = took;
        } else {
            samples.push(took);
        }
    }
    samples.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!();
    println!("request to manifest ready: pxe image of examples/compute-node.json on bookworm main+updates+security");
    println!(
        "{:<50} {:>10}",
        "kiln cold (fetch, verify, parse, solve, write)",
        ms(cold)
    );
    println!(
        "{:<50} {:>10}",
        format!("kiln warm p50 ({runs} composes)"),
        ms(samples[samples.len() / 2])
    );
    println!(
        "{:<50} {:>10}",
        "kiln warm p99",
        ms(samples[samples.len() * 99 / 100])
    );
    println!("osbuild-composer cannot run on this machine (Fedora/RHEL only); the issue quotes seconds for it");
    println!("goal: warm <= 50 ms");
}
