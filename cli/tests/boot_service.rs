//! `kiln boot` on a site whose boot service is OpenCHAMI boot-service (its
//! test double enforcing the reference's rules): publish to a group, a
//! canary of one node at the canary priority, its promotion to the whole
//! group without rebuilding, release tags, rollbacks that undo the promotion
//! and then the canary, and a promotion the service fails part way. Each
//! step is a boot change the composer checks against the tenant's boot
//! grant, records in the history, and a worker runs; at every step the
//! test asks the double's `/bootscript` which image each node would boot.

mod boot_env;

use boot_env::{BootEnv, XNAMES};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_promote_tag_and_rollback_through_the_composer_on_boot_service() {
    let env = BootEnv::start(true).await;
    let service = env.boot_service();
    let (a, b) = (env.token_a.as_str(), env.token_b.as_str());
    let old = env.upload("compute").await;
    let new = env.upload("compute").await;
    let (img_old, img_new) = (
        format!("compute/{}/x86_64", old.version),
        format!("compute/{}/x86_64", new.version),
    );
    let (k_old, k_new) = (old.files.kernel.url.as_str(), new.files.kernel.url.as_str());
    let kernels = || async {
        let mut out = Vec::new();
        for x in XNAMES {
            out.push(service.boot_script(x).await.kernel.unwrap_or_default());
        }
        out
    };
    let priority = |x: &str| {
        service
            .configurations()
            .into_iter()
            .find(|r| r["metadata"]["name"] == format!("kiln-{x}"))
            .map(|r| r["spec"]["priority"].clone())
    };
    assert_eq!(kernels().await, ["", "", ""]);

    // The group boots the old image.
    env.kiln(a, &["boot", "publish", &img_old, "--group", "compute"])
        .await
        .ok();
    assert_eq!(kernels().await, [k_old; 3]);
    assert_eq!(priority(XNAMES[0]), Some(Value::from(40)));

    // Canaries outside the grant are refused, naming the field; nothing is
    // enqueued.
    let jobs = env.state.queue.row_counts().await.unwrap().jobs;
    for (token, args, field) in [
        (
            a,
            vec![
                "canary",
                "login/v1/x86_64",
                "--group",
                "compute",
                "--count",
                "1",
            ],
            "image",
        ),
        (
            a,
            vec!["canary", &img_new, "--group", "storage", "--count", "1"],
            "group",
        ),
        (
            a,
            vec!["canary", &img_new, "--group", "compute", "--count", "0"],
            "canary.count",
        ),
        (
            b,
            vec!["canary", &img_new, "--group", "compute", "--count", "1"],
            "action",
        ),
        (b, vec!["promote", "--group", "compute"], "canary"),
    ] {
        let args = [&["boot"][..], &args[..]].concat();
        let err = env.kiln(token, &args).await.refused();
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(env.state.queue.row_counts().await.unwrap().jobs, jobs);

    // A canary of one node, at the canary priority.
    let canary = env
        .kiln(
            a,
            &[
                "boot", "canary", &img_new, "--group", "compute", "--count", "1", "--output",
                "json",
            ],
        )
        .await
        .json();
    assert_eq!(canary["plan"]["action"], "canary", "{canary}");
    assert_eq!(kernels().await, [k_new, k_old, k_old]);
    assert_eq!(priority(XNAMES[0]), Some(Value::from(70)));

    // Promote: the whole group to exactly the canary's files.
    let promoted = env
        .kiln(
            a,
            &["boot", "promote", "--group", "compute", "--output", "json"],
        )
        .await
        .json();
    assert_eq!(promoted["plan"]["action"], "promote", "{promoted}");
    assert_eq!(promoted["plan"]["canary"], canary["plan"]["id"]);
    assert_eq!(kernels().await, [k_new; 3]);
    assert!(XNAMES.iter().all(|x| priority(x) == Some(Value::from(40))));

    // A release tag for the new image; moving it needs --force.
    env.kiln(a, &["boot", "tag", "compute:2026.12", &img_new])
        .await
        .ok();
    let refused = env
        .kiln(a, &["boot", "tag", "compute:2026.12", &img_old])
        .await;
    assert!(!refused.out.status.success());
    assert!(
        String::from_utf8_lossy(&refused.out.stdout).contains("needs `force`"),
        "{}",
        String::from_utf8_lossy(&refused.out.stdout)
    );
    let err = env
        .kiln(a, &["boot", "tag", "compute:2026.12:x", &img_old])
        .await
        .refused();
    assert!(err.contains("tag"), "{err}");
    env.kiln(a, &["boot", "tag", "compute:2026.11", &img_old])
        .await
        .ok();
    // `show`: which node boots which tag, and which compose built it.
    let shown = env
        .kiln(a, &["boot", "show", "--group", "compute"])
        .await
        .ok();
    for x in XNAMES {
        assert!(
            shown.contains(&format!(
                "{x}  {img_new}  tags compute:2026.12  compose {}",
                new.compose_id
            )),
            "{shown}"
        );
    }

    // One rollback undoes the promotion, the next the canary.
    env.kiln(a, &["boot", "rollback", "--group", "compute"])
        .await
        .ok();
    assert_eq!(kernels().await, [k_new, k_old, k_old]);
    assert_eq!(priority(XNAMES[0]), Some(Value::from(70)));
    let back = env
        .kiln(
            a,
            &["boot", "rollback", "--group", "compute", "--output", "json"],
        )
        .await
        .json();
    assert_eq!(
        back["plan"]["changes"].as_array().unwrap().len(),
        1,
        "{back}"
    );
    assert_eq!(kernels().await, [k_old; 3]);
    let shown = env
        .kiln(a, &["boot", "show", "--group", "compute"])
        .await
        .ok();
    assert!(
        shown.contains(&format!("{}  {img_old}  tags compute:2026.11", XNAMES[1])),
        "{shown}"
    );

    // A promotion the service fails part way: the change's status and the
    // history say which nodes moved.
    env.kiln(
        a,
        &[
            "boot", "canary", &img_new, "--group", "compute", "--xname", XNAMES[1],
        ],
    )
    .await
    .ok();
    assert_eq!(kernels().await, [k_old, k_new, k_old]);
    service.fail_writes_after(Some(1));
    let failed = env
        .kiln(
            a,
            &["boot", "promote", "--group", "compute", "--output", "json"],
        )
        .await;
    service.fail_writes_after(None);
    assert!(!failed.out.status.success());
    let failed: Value = serde_json::from_slice(&failed.out.stdout).unwrap();
    assert_eq!(failed["status"], "failure", "{failed}");
    let outcomes: Vec<&str> = failed["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["applied", "failed", "not_attempted"], "{failed}");
    assert_eq!(kernels().await, [k_new, k_new, k_old]);
    let history = env
        .kiln(a, &["boot", "history", "--output", "json"])
        .await
        .json();
    let last = &history["items"][0];
    assert_eq!(last["action"], "promote");
    assert!(last["failed"].as_str().unwrap().contains("500"), "{last}");
    assert_eq!(last["changes"][0]["outcome"]["state"], "applied");
    assert_eq!(last["changes"][2]["outcome"]["state"], "not_attempted");
    let text = env.kiln(a, &["boot", "history", "--limit", "1"]).await.ok();
    assert!(
        text.contains("FAILED part way") && text.contains(": not attempted"),
        "{text}"
    );
    // A rollback puts back exactly the node that moved.
    env.kiln(a, &["boot", "rollback", "--group", "compute"])
        .await
        .ok();
    assert_eq!(kernels().await, [k_old, k_new, k_old]);

    // The whole trail, newest first, with who asked: tags are in it too.
    let history = env
        .kiln(a, &["boot", "history", "--output", "json"])
        .await
        .json();
    let actions: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rollback", "promote", "canary", "rollback", "rollback", "tag", "tag", "promote",
            "canary", "publish"
        ]
    );
    assert!(history["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["requested_by"]["subject"] == "alice-ci"));
    service.assert_no_violations();
    env.smd.assert_no_violations();
}
