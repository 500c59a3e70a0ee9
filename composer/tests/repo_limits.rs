//! A hostile repository against the real `kiln-composer` binary: a
//! decompression bomb (1 GiB of index in ~1 MiB of gzip, correctly listed
//! in its Release) and an oversized index served over HTTP from loopback.
//! Each request fails with 502 naming the file and the configured limit,
//! and the composer's peak resident memory stays under 256 MiB.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::debrepo::DebRepo;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kiln-composer");
const MAX_FETCH: u64 = 16 << 20;
const MAX_INDEX: u64 = 64 << 20;
/// The bound this test states for the composer's peak resident set.
const MAX_RSS_KIB: u64 = 256 << 10;

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// A repository of one package whose `Packages` the test then replaces.
fn repository(dir: &Path) -> DebRepo {
    let repo = DebRepo::new(dir).unwrap();
    repo.add("kiln-a", "1.0", "").unwrap();
    repo.index().unwrap();
    repo
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn depsolve(api: &str, baseurl: &str) -> (u16, Value) {
    let body = json!({
        "distribution": "debian-12", "architecture": "x86_64",
        "blueprint": {"name": "t", "packages": [{"name": "kiln-a"}]},
        "repositories": [{"baseurl": baseurl, "suite": "test", "components": ["main"], "check_repo_gpg": false}],
    });
    let r = reqwest::Client::new()
        .post(format!("{api}/depsolve/blueprint"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_bomb_and_an_oversized_index_are_refused_within_a_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb");
    let bomb_repo = repository(&bomb);
    let bin = bomb.join("dists/test/main/binary-amd64");
    sh(&format!(
        "cd {} && {{ cat Packages; head -c 1073741824 /dev/zero; }} | gzip -1 > Packages.gz && rm Packages",
        bin.display()
    ));
    bomb_repo.release().unwrap();
    assert!(std::fs::metadata(bin.join("Packages.gz")).unwrap().len() < MAX_FETCH);

    let big = dir.path().join("big");
    let big_repo = repository(&big);
    let packages = big.join("dists/test/main/binary-amd64/Packages");
    sh(&format!(
        "head -c 67108864 /dev/zero >> {}",
        packages.display()
    ));
    big_repo.release().unwrap();
    let http_port = kiln_testsupport::free_port().unwrap();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &http_port.to_string(),
        ])
        .current_dir(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let port = kiln_testsupport::free_port().unwrap();
    std::fs::write(
        dir.path().join("composer.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
             [repositories]\nmax_fetch_bytes = {MAX_FETCH}\nmax_index_bytes = {MAX_INDEX}\n\
             allow = [\"file://{}\", \"http://127.0.0.1:{http_port}/\"]\n",
            dir.path().join("state").display(),
            dir.path().display(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .env_remove("KILN_COMPOSER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/api/image-builder-composer/v2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{api}/distributions")).await.is_err() {
        assert!(Instant::now() < deadline, "composer did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, body) = depsolve(&api, &format!("file://{}", bomb.display())).await;
    assert_eq!(status, 502, "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("dists/test/main/binary-amd64/Packages.gz (decompressed): larger than the limit of 67108864 bytes"),
        "{reason}"
    );

    let (status, body) = depsolve(&api, &format!("http://127.0.0.1:{http_port}")).await;
    assert_eq!(status, 502, "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "/dists/test/main/binary-amd64/Packages: larger than the limit of 16777216 bytes"
        ),
        "{reason}"
    );

    let peak = peak_rss_kib(child.id());
    eprintln!("composer peak RSS: {} MiB", peak >> 10);
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    let _ = http.kill();
    let _ = http.wait();
    let (status, _) = common::stop(child);
    assert!(status.success(), "{status}");
}
