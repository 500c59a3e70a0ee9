//! `kiln boot` through the composer: a real OpenID provider issues the
//! tenants' tokens, the composer (in this process, SQLite) checks each
//! change against the tenant's boot grant and enqueues it, a real
//! `kiln-worker` (in this process, mutual TLS) holding the boot store's and
//! the boot service's credentials runs it against a real S3 boot store
//! (s3s-fs) and the OpenCHAMI BSS and SMD test doubles (which check every
//! request against OpenCHAMI's swagger). The history and the nodes' records
//! come back through `kiln boot history` and `kiln boot nodes`.

use std::process::Output;

use kiln_boot::{BootConfig, LocalBootImage};
use kiln_composer::config::{AuthConfig, BootGrant};
use kiln_composer::{AppState, ComposerConfig};
use kiln_testsupport::oidc::{OidcClient, OidcProvider};
use kiln_testsupport::openchami::{BssTestDouble, Node, SmdTestDouble};
use kiln_testsupport::storage::S3Server;
use serde_json::{json, Value};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const XNAMES: [&str; 3] = ["x1000c0s0b0n0", "x1000c0s0b0n1", "x1000c0s1b0n0"];

struct Run {
    out: Output,
}

impl Run {
    fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        );
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.ok()).unwrap()
    }

    fn refused(&self) -> String {
        assert!(!self.out.status.success(), "{}", self.ok());
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

async fn kiln(url: &str, token: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(KILN)
        .args(args)
        .args(["--composer", url])
        .env("KILN_TOKEN", token)
        .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
        .output()
        .await
        .unwrap();
    Run { out }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boot_changes_go_through_the_composer_within_grants_and_into_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let provider = tokio::task::block_in_place(|| {
        OidcProvider::start(
            "kiln",
            &[
                OidcClient::new("alice-ci", "secret-a", json!({"org_id": "tenant-a"})),
                OidcClient::new("bob-ci", "secret-b", json!({"org_id": "tenant-b"})),
            ],
            &[],
        )
    })
    .unwrap();
    let (token_a, token_b) = (
        provider
            .token_with_scope("alice-ci", "kiln:read kiln:compose")
            .await
            .unwrap(),
        provider
            .token_with_scope("bob-ci", "kiln:read kiln:compose")
            .await
            .unwrap(),
    );

    // The composer: tenant-a may publish `compute*` images to the blade
    // x1000c0s0b0 and the group compute; tenant-b has no grant.
    let certs = dir.path().join("certs");
    kiln_testsupport::host::gen_certs(&certs, &["--worker", "boot1.kiln.test"]);
    let mut config = ComposerConfig {
        data_dir: dir.path().join("composer"),
        auth: AuthConfig {
            issuer: Some(provider.issuer()),
            audience: Some("kiln".into()),
            tenant_claims: vec!["org_id".into()],
            boot_grants: vec![BootGrant {
                tenant: "tenant-a".into(),
                image_names: vec!["compute*".into()],
                groups: vec!["compute".into()],
                xnames: vec!["x1000c0s0b0n*".into()],
                macs: vec![],
                nids: vec![],
            }],
            ..AuthConfig::default()
        },
        ..Default::default()
    };
    config.jobs.run_in_composer = false;
    config.worker_api.ca = Some(certs.join("ca.pem"));
    config.worker_api.cert = Some(certs.join("composer.pem"));
    config.worker_api.key = Some(certs.join("composer.key"));
    config.worker_api.allowed_domains = vec!["*.kiln.test".into()];
    let tls = kiln_composer::worker_api::load_tls(&config.worker_api)
        .unwrap()
        .unwrap();
    let state = AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kiln_composer::serve(
        state.clone(),
        listener,
        std::future::pending(),
    ));
    let wl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker_api = format!("https://localhost:{}", wl.local_addr().unwrap().port());
    tokio::spawn(kiln_composer::worker_api::serve(
        state.clone(),
        wl,
        tls,
        std::future::pending(),
    ));

    // The boot store and boot service, and an image in the store as a
    // compose's boot target leaves it.
    let s3 = S3Server::start("boot").unwrap();
    let nodes: Vec<Node> = XNAMES
        .iter()
        .enumerate()
        .map(|(i, x)| Node::new(x, &format!("02:00:00:00:00:0{i}"), i as u32 + 1))
        .collect();
    let smd = SmdTestDouble::start(&nodes, &[("compute", &XNAMES)], Some("smd-token"))
        .await
        .unwrap();
    let bss = BssTestDouble::start(&nodes, Some("bss-token"))
        .await
        .unwrap();
    let boot: BootConfig = toml::from_str(&format!(
        "prefix = \"kiln\"\nbase_url = \"{s3}/boot\"\nbss = {{ url = \"{bss}\", token = \"bss-token\" }}\nsmd = {{ url = \"{smd}\", token = \"smd-token\" }}\n[store]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nbucket = \"boot\"\naccess_key_id = \"{k}\"\nsecret_access_key = \"{sk}\"\npath_style = true\n",
        s3 = s3.endpoint(),
        bss = bss.url(),
        smd = smd.url(),
        k = s3.access_key_id,
        sk = s3.secret_access_key
    ))
    .unwrap();
    for f in ["vmlinuz", "initrd.img", "rootfs.squashfs"] {
        std::fs::write(dir.path().join(f), format!("{f} bytes")).unwrap();
    }
    let compose_id = uuid::Uuid::new_v4();
    let record = boot
        .deployer()
        .unwrap()
        .store()
        .upload(&LocalBootImage {
            compose_id,
            image_name: "compute".into(),
            arch: "x86_64".into(),
            kernel: dir.path().join("vmlinuz"),
            initrd: dir.path().join("initrd.img"),
            rootfs: dir.path().join("rootfs.squashfs"),
            kernel_cmdline: "rd.live.overlay.overlayfs=1 console=ttyS0".into(),
            packages: vec![],
        })
        .await
        .unwrap();
    let image = format!("compute/{}/x86_64", record.version);

    // The worker that holds the boot credentials; it takes only boot jobs.
    let worker = kiln_worker::WorkerConfig {
        composer: worker_api,
        ca: Some(certs.join("ca.pem")),
        cert: Some(certs.join("worker-boot1.kiln.test.pem")),
        key: Some(certs.join("worker-boot1.kiln.test.key")),
        job_types: vec![kiln_api::jobs::JobKind::Boot],
        store: dir.path().join("worker/store"),
        work_dir: dir.path().join("worker/jobs"),
        heartbeat_secs: 1,
        poll_secs: 2,
        boot: Some(boot),
        ..Default::default()
    };
    worker.check().unwrap();
    tokio::spawn(kiln_worker::run(worker, None));

    let (a, b) = (token_a.as_str(), token_b.as_str());
    let blade = "x1000c0s0b0n0,x1000c0s0b0n1";

    // A dry run plans and changes nothing.
    let dry = kiln(
        &url,
        a,
        &[
            "boot",
            "publish",
            &image,
            "--xname",
            blade,
            "--extra-params",
            "ip=dhcp",
            "--dry-run",
        ],
    )
    .await
    .ok();
    assert!(
        dry.contains("dry run") && dry.contains("x1000c0s0b0n1"),
        "{dry}"
    );
    assert!(bss.entries().is_empty(), "a dry run changed BSS");

    // Outside the grant, or without one: refused naming the field, nothing
    // enqueued, BSS untouched.
    let jobs_before = state.queue.row_counts().await.unwrap().jobs;
    let unknown = uuid::Uuid::new_v4().to_string();
    let bss_requests = bss.requests().len();
    for (token, args, field) in [
        (
            a,
            vec!["publish", &image, "--xname", "x1000c0s1b0n0"],
            "nodes.xnames[0]",
        ),
        (
            a,
            vec!["publish", "login/v1/x86_64", "--xname", "x1000c0s0b0n0"],
            "image",
        ),
        (a, vec!["rollback", "--group", "storage"], "nodes.group"),
        (
            b,
            vec!["publish", &image, "--xname", "x1000c0s0b0n0"],
            "action",
        ),
        (b, vec!["show", "--group", "compute"], "action"),
        (a, vec!["show", "--xname", "not-a-node"], "nodes.xnames[0]"),
        (
            a,
            vec!["publish", "--compose", &unknown, "--xname", "x1000c0s0b0n0"],
            "compose_id",
        ),
    ] {
        let args = [&["boot"][..], &args[..]].concat();
        let err = kiln(&url, token, &args).await.refused();
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(state.queue.row_counts().await.unwrap().jobs, jobs_before);
    assert_eq!(bss.requests().len(), bss_requests, "BSS was asked");

    // Inside the grant: the publish reaches BSS.
    let published = kiln(
        &url,
        a,
        &[
            "boot",
            "publish",
            &image,
            "--xname",
            blade,
            "--extra-params",
            "ip=dhcp",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(published["status"], "success", "{published}");
    assert_eq!(published["requested_by"]["tenant"], "tenant-a");
    for x in &XNAMES[..2] {
        let e = bss
            .entry(x)
            .unwrap_or_else(|| panic!("BSS has nothing for {x}"));
        assert_eq!(e.kernel.as_deref(), Some(record.files.kernel.url.as_str()));
        let params = e.params.unwrap();
        assert!(
            params.contains(&format!("root=live:{}", record.files.rootfs.url))
                && params.ends_with("ip=dhcp"),
            "{params}"
        );
    }
    assert!(
        bss.entry(XNAMES[2]).is_none(),
        "a node outside the selection changed"
    );

    // ... and is in the history: who, which image and compose, which nodes,
    // old and new parameters, when.
    let history = kiln(&url, a, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(history["total"], 1, "{history}");
    let entry = &history["items"][0];
    assert_eq!(entry["action"], "publish");
    assert_eq!(entry["requested_by"]["tenant"], "tenant-a");
    assert_eq!(entry["requested_by"]["subject"], "alice-ci", "{entry}");
    assert_eq!(entry["image"]["version"], record.version.as_str());
    assert_eq!(entry["compose_id"], compose_id.to_string());
    assert_eq!(entry["job_id"], published["id"]);
    let changed: Vec<&str> = entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["xname"].as_str().unwrap())
        .collect();
    assert_eq!(changed, &XNAMES[..2]);
    for c in entry["changes"].as_array().unwrap() {
        assert_eq!(c["before"], Value::Null, "{c}");
        assert_eq!(c["after"]["kernel"], record.files.kernel.url.as_str());
    }
    assert!(entry["created_at"].is_string());
    let text = kiln(&url, a, &["boot", "history", "--node", "x1000c0s0b0n1"])
        .await
        .ok();
    assert!(
        text.contains(&format!("publish {image}"))
            && text.contains("by alice-ci (tenant tenant-a)"),
        "{text}"
    );
    // A node filter that is no xname is refused, naming the parameter.
    let err = kiln(&url, a, &["boot", "history", "--node", "x1000%"])
        .await
        .refused();
    assert!(err.contains("node") && err.contains("xname"), "{err}");
    // Another tenant sees none of it.
    let other = kiln(&url, b, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(other["total"], 0, "{other}");
    let id = published["id"].as_str().unwrap();
    let err = kiln(&url, b, &["boot", "status", id]).await.refused();
    assert!(
        err.contains("404") || err.contains("no boot change"),
        "{err}"
    );
    assert!(kiln(&url, b, &["boot", "nodes", "--output", "json"])
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // What the nodes boot, as recorded, then as read again through the worker.
    let known = kiln(&url, a, &["boot", "nodes"]).await.ok();
    for x in &XNAMES[..2] {
        assert!(known.contains(&format!("{x}  {image}")), "{known}");
    }
    let shown = kiln(&url, a, &["boot", "show", "--group", "compute"])
        .await
        .ok();
    assert!(
        shown.contains(&format!("x1000c0s0b0n0  {image}"))
            && shown.contains("x1000c0s1b0n0  (not a kiln image)"),
        "{shown}"
    );

    // A rollback puts the blade back and is recorded too.
    kiln(&url, a, &["boot", "rollback", "--xname", blade])
        .await
        .ok();
    assert!(
        XNAMES.iter().all(|x| bss.entry(x).is_none()),
        "{:?}",
        bss.entries()
    );
    let history = kiln(&url, a, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(history["total"], 2, "{history}");
    assert_eq!(history["items"][0]["action"], "rollback");
    assert_eq!(
        history["items"][0]["changes"][0]["before"]["kernel"],
        record.files.kernel.url.as_str()
    );
    assert_eq!(history["items"][0]["changes"][0]["after"], Value::Null);
    assert_eq!(state.queue.row_counts().await.unwrap().boot_changes, 2);

    // A change the boot service fails part way is in the history too,
    // marked failed: BSS may hold some of it.
    bss.fail_writes(true);
    let failed = kiln(
        &url,
        a,
        &[
            "boot", "publish", &image, "--xname", blade, "--output", "json",
        ],
    )
    .await;
    assert!(!failed.out.status.success());
    let failed: Value = serde_json::from_slice(&failed.out.stdout).unwrap();
    assert_eq!(failed["status"], "failure", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    bss.fail_writes(false);
    let history = kiln(&url, a, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(history["total"], 3, "{history}");
    let last = &history["items"][0];
    assert_eq!(last["job_id"], failed["id"]);
    assert!(last["failed"].as_str().unwrap().contains("500"), "{last}");
    assert_eq!(last["changes"].as_array().unwrap().len(), 2, "{last}");
    let text = kiln(&url, a, &["boot", "history", "--limit", "1"])
        .await
        .ok();
    assert!(text.contains("FAILED part way"), "{text}");
    assert!(XNAMES.iter().all(|x| bss.entry(x).is_none()));

    // No token, secret or credential of the boot service in what the
    // composer shows.
    let everything = format!(
        "{}{}",
        kiln(&url, a, &["boot", "history", "--output", "json"])
            .await
            .ok(),
        kiln(&url, a, &["boot", "status", id, "--output", "json"])
            .await
            .ok()
    );
    for secret in ["bss-token", "smd-token", s3.secret_access_key.as_str(), a] {
        assert!(!everything.contains(secret), "{secret} shown");
    }
    bss.assert_no_violations();
    smd.assert_no_violations();
}
