//! The boot target end to end: a `pxe` compose is built by a worker, its
//! kernel, initrd and squashfs land in the boot image store (a real S3
//! server) under versioned keys, and the BSS test double, checking every
//! request against OpenCHAMI's swagger, points an SMD group at them. Only
//! within the tenant's boot grant: a boot target outside it is refused when
//! the compose is submitted, and neither the queue nor BSS sees it. Each
//! publish is in the composer's boot history, and what the nodes boot in
//! its node records.

mod common;

use std::time::Duration;

use common::Kiln;
use kiln_testsupport::openchami::{BssTestDouble, Node, SmdTestDouble};
use kiln_testsupport::storage::S3Server;
use serde_json::{json, Value};

const NODES: [&str; 3] = ["x1000c0s0b0n0", "x1000c0s0b0n1", "x1000c0s1b0n0"];

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("success") | Some("failure"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pxe_builds_are_published_under_their_own_keys_and_registered_with_bss() {
    let kiln = Kiln::start_for("pxe", |cfg| {
        cfg.auth.boot_grants = vec![kiln_composer::config::BootGrant {
            tenant: "default".into(),
            image_names: vec!["compute".into()],
            groups: vec!["compute".into()],
            xnames: vec![],
            macs: vec![],
            nids: vec![],
        }];
    })
    .await;
    let s3 = S3Server::start("boot").unwrap();
    let nodes: Vec<Node> = NODES
        .iter()
        .enumerate()
        .map(|(i, x)| Node::new(x, &format!("02:00:00:00:00:0{}", i + 1), i as u32 + 1))
        .collect();
    let smd = SmdTestDouble::start(&nodes, &[("compute", &NODES)], Some("smd-token"))
        .await
        .unwrap();
    let bss = BssTestDouble::start(&nodes, Some("bss-token"))
        .await
        .unwrap();
    let config = format!(
        "job_types = [\"build\", \"boot\"]\n[boot]\nprefix = \"kiln\"\nbase_url = \"{s3}/boot\"\nbss = {{ url = \"{bss}\", token = \"bss-token\" }}\nsmd = {{ url = \"{smd}\", token = \"smd-token\" }}\n\n[boot.store]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nbucket = \"boot\"\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\npath_style = true\n",
        s3 = s3.endpoint(),
        bss = bss.url(),
        smd = smd.url(),
        key = s3.access_key_id,
        secret = s3.secret_access_key,
    );
    let worker = kiln.worker("w1.kiln.test", &config);
    let request = kiln.request(json!([{"type": "boot", "upload_options": {
        "image_name": "compute", "nodes": {"group": "compute"}, "extra_params": "ip=dhcp"
    }}]));

    // Outside the grant: 403 naming the field, nothing queued, BSS untouched.
    let bss_before = (bss.entries(), bss.requests().len());
    for (options, field) in [
        (
            json!({"image_name": "login", "nodes": {"group": "compute"}}),
            "image_name",
        ),
        (
            json!({"image_name": "compute", "nodes": {"group": "admin"}}),
            "nodes.group",
        ),
        (
            json!({"image_name": "compute", "nodes": {"xnames": [NODES[0]]}}),
            "nodes.xnames[0]",
        ),
    ] {
        let outside = kiln.request(json!([{"type": "boot", "upload_options": options}]));
        let r = kiln
            .http
            .post(format!("{}/compose", kiln.api))
            .json(&outside)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let err: Value = r.json().await.unwrap();
        assert_eq!(
            err["details"]["field"],
            format!("image_request.upload_targets[0].upload_options.{field}"),
            "{err}"
        );
    }
    assert_eq!(kiln.state.queue.row_counts().await.unwrap().composes, 0);
    assert_eq!((bss.entries(), bss.requests().len()), bss_before);

    let mut published = Vec::new();
    let mut composes = Vec::new();
    for _ in 0..2 {
        let id = kiln.submit(&request).await;
        composes.push(id.clone());
        let done = kiln.wait(&id, Duration::from_secs(900), finished).await;
        assert_eq!(done["status"], json!("success"), "{done}\n{}", worker.log());
        let upload = done["image_status"]["upload_statuses"][0].clone();
        assert_eq!(upload["type"], json!("boot"));
        assert_eq!(upload["status"], json!("success"));
        published.push(upload);
    }
    // Two builds of one blueprint: two versions, nothing overwritten.
    let keys = |u: &Value| -> Vec<String> {
        ["kernel", "initrd", "rootfs"]
            .iter()
            .map(|f| u["options"]["files"][f]["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let (first, second) = (keys(&published[0]), keys(&published[1]));
    for (a, b) in first.iter().zip(&second) {
        assert_ne!(a, b);
        assert!(
            a.starts_with("kiln/compute/") && a.contains("/x86_64/"),
            "{a}"
        );
        assert!(s3.object_path(a).exists() && s3.object_path(b).exists());
    }
    assert_eq!(
        std::fs::read(s3.object_path(&first[0])).unwrap(),
        std::fs::read(s3.object_path(&second[0])).unwrap(),
        "the same kernel, stored twice under different keys"
    );
    // Each record names the image's SBOM, stored beside its files.
    for key in [&first[0], &second[0]] {
        let dir = key.rsplit_once('/').unwrap().0;
        let record: kiln_boot::BootRecord = serde_json::from_slice(
            &std::fs::read(s3.object_path(&format!("{dir}/boot.json"))).unwrap(),
        )
        .unwrap();
        let sbom = record.sbom.expect("boot.json names the SBOM");
        assert_eq!(sbom.key, format!("{dir}/sbom.spdx.json"));
        let bytes = std::fs::read(s3.object_path(&sbom.key)).unwrap();
        assert_eq!(
            sbom.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        let doc: kiln_api::sbom::SpdxDocument = serde_json::from_slice(&bytes).unwrap();
        assert!(doc.packages.iter().any(|p| p.name == "dracut-live"));
    }
    // BSS: the whole group boots the second build.
    let files = &published[1]["options"]["files"];
    for x in NODES {
        let entry = bss
            .entry(x)
            .unwrap_or_else(|| panic!("BSS has nothing for {x}"));
        assert_eq!(entry.kernel.as_deref(), files["kernel"]["url"].as_str());
        assert_eq!(entry.initrd.as_deref(), files["initrd"]["url"].as_str());
        let params = entry.params.unwrap();
        assert!(
            params.contains(&format!(
                "root=live:{}",
                files["rootfs"]["url"].as_str().unwrap()
            )),
            "{params}"
        );
        assert!(
            params.contains("rd.live.overlay.overlayfs=1") && params.ends_with("ip=dhcp"),
            "{params}"
        );
    }
    let kernel_url = files["kernel"]["url"].as_str().unwrap();
    assert!(
        kernel_url.starts_with(&format!("{}/boot/kiln/compute/", s3.endpoint())),
        "{kernel_url}"
    );

    // Both publishes are in the history, newest first: the tenant (no
    // `[auth]`: `default`, no subject), the compose and image, every node
    // with its old and new parameters.
    let get = |path: &str| {
        let url = format!("{}{path}", kiln.api);
        let http = kiln.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let history = get("/boot/history").await;
    assert_eq!(history["total"], 2, "{history}");
    let kernel = |u: &Value| u["options"]["files"]["kernel"]["url"].clone();
    for (entry, build, before) in [
        (&history["items"][0], 1, kernel(&published[0])),
        (&history["items"][1], 0, Value::Null),
    ] {
        assert_eq!(entry["action"], "publish", "{entry}");
        assert_eq!(entry["requested_by"], json!({"tenant": "default"}));
        assert_eq!(entry["compose_id"], json!(composes[build]));
        assert_eq!(entry["image"], published[build]["options"]["image"]);
        assert_eq!(entry["selection"], "group compute");
        let changes = entry["changes"].as_array().unwrap();
        assert_eq!(changes.len(), NODES.len(), "{entry}");
        for (c, x) in changes.iter().zip(NODES) {
            assert_eq!(c["xname"], x);
            assert_eq!(c["before"]["kernel"], before, "{c}");
            assert_eq!(c["after"]["kernel"], kernel(&published[build]));
        }
    }
    // What the nodes boot, as the last publish set it.
    let booted = |build: usize| {
        let get = &get;
        let published = &published;
        async move {
            let nodes = get("/boot/nodes").await;
            let items = nodes["items"].as_array().unwrap().clone();
            assert_eq!(items.len(), NODES.len(), "{nodes}");
            for n in items {
                assert_eq!(n["image"], published[build]["options"]["image"], "{n}");
                assert_eq!(n["current"]["kernel"], kernel(&published[build]));
            }
        }
    };
    booted(1).await;

    // Promote the first compose's image again, by its compose id, through
    // the API: a boot job on the same worker, recorded like the builds.
    let r = kiln
        .http
        .post(format!("{}/boot/changes", kiln.api))
        .json(&json!({"action": "publish", "compose_id": composes[0], "nodes": {"group": "compute"}, "extra_params": "ip=dhcp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let change = r.json::<Value>().await.unwrap()["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("/api/image-builder-composer/v2")
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let s = get(&change).await;
        if !matches!(s["status"].as_str(), Some("pending") | Some("running")) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{s}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    let first_kernel = kernel(&published[0]);
    for x in NODES {
        assert_eq!(
            bss.entry(x).unwrap().kernel.as_deref(),
            first_kernel.as_str()
        );
    }
    let history = get("/boot/history").await;
    assert_eq!(history["total"], 3, "{history}");
    assert_eq!(history["items"][0]["compose_id"], json!(composes[0]));
    assert_eq!(history["items"][0]["job_id"], done["id"]);
    booted(0).await;

    bss.assert_no_violations();
    smd.assert_no_violations();
}
