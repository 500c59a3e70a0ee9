//! Dry runs show the exact changes and write nothing: no object in the boot
//! store, no write request to BSS.

mod common;

use common::*;
use kiln_boot::{Action, ImageSource, NodeSelector, PublishRequest};
use kiln_testsupport::openchami::BssEntry;

#[tokio::test]
async fn dry_run_writes_nothing_and_shows_each_change() {
    let c = Cluster::start().await;
    let old = BssEntry {
        kernel: Some("http://old/vmlinuz".into()),
        initrd: Some("http://old/initrd".into()),
        params: Some("quiet".into()),
        cloud_init: None,
    };
    c.bss.set_entry("x1000c0s0b0n0", old.clone());
    let build = c.build("rocky9-compute", 2048);
    let request = PublishRequest {
        image: ImageSource::Local(build.clone()),
        nodes: NodeSelector::group(GROUP).unwrap(),
        extra_params: EXTRA.into(),
    };

    let plan = c.deployer.dry_run(&request).await.unwrap();
    assert!(
        files_under(&c.store_root()).is_empty(),
        "{:?}",
        files_under(&c.store_root())
    );
    assert!(
        c.bss.requests().iter().all(|r| r.starts_with("GET ")),
        "{:?}",
        c.bss.requests()
    );
    assert_eq!(c.bss.entries().len(), 1);
    assert_eq!(c.bss.entry("x1000c0s0b0n0"), Some(old));

    let Action::Publish { image, compose_id } = &plan.action else {
        panic!("{plan:?}")
    };
    assert_eq!(*compose_id, build.compose_id);
    let base = format!(
        "{BASE_URL}/{PREFIX}/rocky9-compute/{}/x86_64",
        image.version
    );
    assert_eq!(plan.changes.len(), 3);
    for change in &plan.changes {
        let after = change.after.as_ref().unwrap();
        assert_eq!(
            after.kernel.as_deref(),
            Some(format!("{base}/vmlinuz").as_str())
        );
        assert_eq!(
            after.initrd.as_deref(),
            Some(format!("{base}/initrd.img").as_str())
        );
        assert_eq!(
            after.params.as_deref(),
            Some(
                format!(
                    "root=live:{base}/rootfs.squashfs rd.live.overlay.overlayfs=1 console=ttyS0,115200 {EXTRA}"
                )
                .as_str()
            )
        );
    }
    let first = plan
        .changes
        .iter()
        .find(|c| c.xname.as_str() == "x1000c0s0b0n0")
        .unwrap();
    assert_eq!(
        first.before.as_ref().and_then(|b| b.kernel.as_deref()),
        Some("http://old/vmlinuz")
    );
    let text = plan.to_string();
    assert!(text.contains("x1000c0s0b0n0:"), "{text}");
    assert!(text.contains("kernel: http://old/vmlinuz"), "{text}");
    assert!(text.contains(&format!("-> {base}/vmlinuz")), "{text}");
    assert!(text.contains("kernel: (none)"), "{text}");
    // And as JSON for scripts.
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["action"], "publish");
    assert_eq!(json["changes"].as_array().unwrap().len(), 3);

    // A dry run of a rollback writes nothing either.
    c.deployer.publish(&request).await.unwrap();
    let stored = files_under(&c.store_root());
    let entries = c.bss.entries();
    let writes = c.bss.requests().len();
    let plan = c
        .deployer
        .plan_rollback(&NodeSelector::group(GROUP).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(plan.changes.len(), 3);
    assert_eq!(files_under(&c.store_root()), stored);
    assert_eq!(c.bss.entries(), entries);
    assert!(c.bss.requests()[writes..]
        .iter()
        .all(|r| r.starts_with("GET ")));
    c.bss.assert_no_violations();
    c.smd.assert_no_violations();
}
