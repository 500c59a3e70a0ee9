//! `kiln boot` through the composer: a real OpenID provider issues the
//! tenants' tokens, the composer (in this process, SQLite) checks each
//! change against the tenant's boot grant and enqueues it, a real
//! `kiln-worker` (in this process, mutual TLS) holding the boot store's and
//! the boot service's credentials runs it against a real S3 boot store
//! (s3s-fs) and the OpenCHAMI BSS and SMD test doubles (which check every
//! request against OpenCHAMI's swagger). The history and the nodes' records
//! come back through `kiln boot history` and `kiln boot nodes`.

mod boot_env;

use boot_env::{BootEnv, XNAMES};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boot_changes_go_through_the_composer_within_grants_and_into_the_history() {
    let env = BootEnv::start(false).await;
    let (bss, smd, state) = (env.bss(), &env.smd, &env.state);
    let record = env.upload("compute").await;
    let compose_id = record.compose_id;
    let image = format!("compute/{}/x86_64", record.version);
    let (a, b) = (env.token_a.as_str(), env.token_b.as_str());
    let blade = "x1000c0s0b0n0,x1000c0s0b0n1";

    // A dry run plans and changes nothing.
    let dry = env
        .kiln(
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
        let err = env.kiln(token, &args).await.refused();
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(state.queue.row_counts().await.unwrap().jobs, jobs_before);
    assert_eq!(bss.requests().len(), bss_requests, "BSS was asked");

    // Inside the grant: the publish reaches BSS.
    let published = env
        .kiln(
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
    let history = env
        .kiln(a, &["boot", "history", "--output", "json"])
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
    let text = env
        .kiln(a, &["boot", "history", "--node", "x1000c0s0b0n1"])
        .await
        .ok();
    assert!(
        text.contains(&format!("publish {image}"))
            && text.contains("by alice-ci (tenant tenant-a)"),
        "{text}"
    );
    // A node filter that is no xname is refused, naming the parameter.
    let err = env
        .kiln(a, &["boot", "history", "--node", "x1000%"])
        .await
        .refused();
    assert!(err.contains("node") && err.contains("xname"), "{err}");
    // Another tenant sees none of it.
    let other = env
        .kiln(b, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(other["total"], 0, "{other}");
    let id = published["id"].as_str().unwrap();
    let err = env.kiln(b, &["boot", "status", id]).await.refused();
    assert!(
        err.contains("404") || err.contains("no boot change"),
        "{err}"
    );
    assert!(env
        .kiln(b, &["boot", "nodes", "--output", "json"])
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // What the nodes boot, as recorded, then as read again through the worker.
    let known = env.kiln(a, &["boot", "nodes"]).await.ok();
    for x in &XNAMES[..2] {
        assert!(known.contains(&format!("{x}  {image}")), "{known}");
    }
    let shown = env
        .kiln(a, &["boot", "show", "--group", "compute"])
        .await
        .ok();
    assert!(
        shown.contains(&format!("x1000c0s0b0n0  {image}"))
            && shown.contains("x1000c0s1b0n0  (not a kiln image)"),
        "{shown}"
    );

    // A rollback puts the blade back and is recorded too.
    env.kiln(a, &["boot", "rollback", "--xname", blade])
        .await
        .ok();
    assert!(
        XNAMES.iter().all(|x| bss.entry(x).is_none()),
        "{:?}",
        bss.entries()
    );
    let history = env
        .kiln(a, &["boot", "history", "--output", "json"])
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
    let failed = env
        .kiln(
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
    let history = env
        .kiln(a, &["boot", "history", "--output", "json"])
        .await
        .json();
    assert_eq!(history["total"], 3, "{history}");
    let last = &history["items"][0];
    assert_eq!(last["job_id"], failed["id"]);
    assert!(last["failed"].as_str().unwrap().contains("500"), "{last}");
    assert_eq!(last["changes"].as_array().unwrap().len(), 2, "{last}");
    let text = env.kiln(a, &["boot", "history", "--limit", "1"]).await.ok();
    assert!(text.contains("FAILED part way"), "{text}");
    assert!(XNAMES.iter().all(|x| bss.entry(x).is_none()));

    // No token, secret or credential of the boot service in what the
    // composer shows.
    let everything = format!(
        "{}{}",
        env.kiln(a, &["boot", "history", "--output", "json"])
            .await
            .ok(),
        env.kiln(a, &["boot", "status", id, "--output", "json"])
            .await
            .ok()
    );
    for secret in [
        "bss-token",
        "smd-token",
        env.s3.secret_access_key.as_str(),
        a,
    ] {
        assert!(!everything.contains(secret), "{secret} shown");
    }
    bss.assert_no_violations();
    smd.assert_no_violations();
}
