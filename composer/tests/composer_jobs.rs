//! The composer's own jobs: a compose is depsolved and gets its manifest in
//! the composer, then waits for a worker to build it. Against a Debian
//! repository built here on file:// (never the network).

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use common::{start_with, Backend, TestComposer};
use kiln_testsupport::debrepo::DebRepo;
use serde_json::{json, Value};

on_both_backends!(
    compose_is_depsolved_and_gets_its_manifest,
    unsolvable_compose_fails_with_the_reason,
    payload_repositories_add_packages,
);

/// A distribution whose `tar` image is `kiln-a`, and a repository for it.
fn setup(dir: &Path) -> (DebRepo, std::path::PathBuf) {
    let repo = DebRepo::new(&dir.join("repo")).unwrap();
    repo.add("kiln-a", "1.0-1", "Depends: kiln-b\n").unwrap();
    repo.add("kiln-b", "2.0-1", "").unwrap();
    repo.add("kiln-c", "1.0-1", "Conflicts: kiln-a\n").unwrap();
    repo.index().unwrap();
    let distros = dir.join("distributions");
    std::fs::create_dir_all(&distros).unwrap();
    std::fs::write(
        distros.join("testdeb.toml"),
        format!(
            "name = \"testdeb-1\"\nproduct = \"kiln test\"\nfamily = \"debian\"\nos_version = \"1\"\nreleasever = \"1\"\nsource_epoch = 1700000000\n\
             [[repositories]]\nid = \"test\"\nbaseurl = \"{}\"\nsuite = \"test\"\ncomponents = [\"main\"]\n\
             [architectures.x86_64]\npackage_arch = \"amd64\"\nimage_types = [\"tar\"]\n\
             [image_types.tar]\nfilename = \"root.tar\"\nmime_type = \"application/x-tar\"\npackages = [\"kiln-a\"]\n",
            repo.url()
        ),
    )
    .unwrap();
    (repo, distros)
}

fn request(repo: &DebRepo, extra: &[&str]) -> Value {
    json!({
        "distribution": "testdeb-1",
        "image_request": {
            "architecture": "x86_64",
            "image_type": "tar",
            "repositories": [{"baseurl": repo.url(), "suite": "test", "components": ["main"], "check_repo_gpg": false}],
            "upload_targets": [{"type": "local", "upload_options": {}}]
        },
        "customizations": {"hostname": "node-9", "packages": extra}
    })
}

async fn wait_for(c: &TestComposer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, graph) = c.get(&format!("/composes/{id}/jobs")).await;
        if done(&graph) {
            return graph;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "compose did not get there: {graph}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn states(graph: &Value) -> Vec<String> {
    graph["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn compose_is_depsolved_and_gets_its_manifest(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (repo, distros) = setup(dir.path());
    let c = start_with(b, |cfg| {
        cfg.jobs.run_in_composer = true;
        cfg.distributions_dir = Some(distros);
    })
    .await;
    let (status, body) = c.post("/compose", &request(&repo, &[])).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let graph = wait_for(&c, &id, |g| states(g) == ["success", "success", "queued"]).await;
    assert!(graph["jobs"][0]["worker"]
        .as_str()
        .unwrap()
        .starts_with("composer@"));

    // The manifest: exactly the depsolved packages, then the customizations.
    let (_, manifests) = c.get(&format!("/composes/{id}/manifests")).await;
    let list = manifests["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let m = &list[0];
    let dpkg = &m["pipelines"][0]["stages"][0];
    let names: Vec<&str> = dpkg["options"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["kiln-a", "kiln-b"]);
    assert!(m["pipelines"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["options"]["hostname"] == "node-9"));
    assert_eq!(m["pipelines"][0]["source-epoch"], 1700000000);
    kiln_manifests::ids(m).unwrap();

    // The package list is the compose's metadata, checksums included.
    let (_, meta) = c.get(&format!("/composes/{id}/metadata")).await;
    let pkgs = meta["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 2);
    let deb = repo.dir().join("pool/main/kiln-a_1.0-1_all.deb");
    let sum = String::from_utf8(
        std::process::Command::new("sha256sum")
            .arg(&deb)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        pkgs[0]["checksum"],
        format!("sha256:{}", sum.split_whitespace().next().unwrap())
    );

    // Now it waits for a worker: pending, not failed.
    let (_, st) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(st["status"], "pending");
}

async fn unsolvable_compose_fails_with_the_reason(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (repo, distros) = setup(dir.path());
    let c = start_with(b, |cfg| {
        cfg.jobs.run_in_composer = true;
        cfg.distributions_dir = Some(distros);
    })
    .await;
    let (_, body) = c.post("/compose", &request(&repo, &["kiln-c"])).await;
    let id = body["id"].as_str().unwrap().to_owned();
    wait_for(&c, &id, |g| states(g) == ["failed", "failed", "failed"]).await;
    let (_, st) = c.get(&format!("/composes/{id}")).await;
    assert_eq!(st["status"], "failure");
    let reason = st["image_status"]["error"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("depsolve job failed")
            && reason.contains("kiln-c")
            && reason.contains("kiln-a"),
        "{reason}"
    );
    let (_, manifests) = c.get(&format!("/composes/{id}/manifests")).await;
    assert_eq!(manifests["manifests"], json!([]));
}

async fn payload_repositories_add_packages(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (repo, distros) = setup(dir.path());
    let extra = DebRepo::new(&dir.path().join("extra")).unwrap();
    extra
        .add("site-tools", "7.0-1", "Depends: kiln-b\n")
        .unwrap();
    extra.index().unwrap();
    let c = start_with(b, |cfg| {
        cfg.jobs.run_in_composer = true;
        cfg.distributions_dir = Some(distros);
        // The site repository is not the distribution's: it must be allowed.
        cfg.repositories.allow = vec![kiln_composer::AllowEntry::Prefix(extra.url())];
    })
    .await;
    let mut req = request(&repo, &["site-tools"]);
    // Without the site repository the package does not exist...
    let (_, body) = c.post("/compose", &req).await;
    let missing = body["id"].as_str().unwrap().to_owned();
    wait_for(&c, &missing, |g| states(g).iter().all(|s| s == "failed")).await;
    // ...with it, it is installed beside the image's own packages.
    req["customizations"]["payload_repositories"] = json!([{"baseurl": extra.url(), "suite": "test", "components": ["main"], "check_repo_gpg": false}]);
    let (status, body) = c.post("/compose", &req).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    wait_for(&c, &id, |g| states(g) == ["success", "success", "queued"]).await;
    let (_, meta) = c.get(&format!("/composes/{id}/metadata")).await;
    let names: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["kiln-a", "kiln-b", "site-tools"]);
}

/// A canceled compose stops its running depsolve: with one job slot and a
/// repository that never answers, the next compose is depsolved right
/// after the cancel, not when the stuck fetch would have timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_compose_stops_its_running_depsolve() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, distros) = setup(dir.path());
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let c = start_with(Backend::Sqlite, |cfg| {
        cfg.jobs.run_in_composer = true;
        cfg.jobs.concurrency = 1;
        cfg.queue.heartbeat_timeout_secs = 3;
        cfg.repositories.fetch_timeout_secs = 300;
        cfg.distributions_dir = Some(distros);
        cfg.repositories.allow = vec![kiln_composer::AllowEntry::Prefix(format!(
            "http://127.0.0.1:{port}/"
        ))];
    })
    .await;
    let mut stuck = request(&repo, &[]);
    stuck["image_request"]["repositories"] = json!([{"baseurl": format!("http://127.0.0.1:{port}/debian"),
        "suite": "test", "components": ["main"], "check_repo_gpg": false}]);
    let (status, body) = c.post("/compose", &stuck).await;
    assert_eq!(status, 201, "{body}");
    let first = body["id"].as_str().unwrap().to_owned();
    wait_for(&c, &first, |g| states(g)[0] == "running").await;
    let (status, body) = c
        .post(&format!("/composes/{first}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (_, body) = c.post("/compose", &request(&repo, &[])).await;
    let second = body["id"].as_str().unwrap().to_owned();
    // Without the stop, the one slot stays taken until the stuck fetch
    // gives up (a minute or more); with it, the next depsolve runs at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, graph) = c.get(&format!("/composes/{second}/jobs")).await;
        if states(&graph)[0] == "success" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the canceled depsolve kept the only slot: {graph}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
