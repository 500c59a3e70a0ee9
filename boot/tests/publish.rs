//! Publish to an SMD group, publish a second build, roll back, show: against
//! the BSS and SMD test doubles and a boot store on the local file system.

mod common;

use common::*;
use kiln_boot::{BootError, ImageSource, NodeSelector, PublishRequest};
use kiln_testsupport::openchami::BssEntry;

fn request(image: ImageSource) -> PublishRequest {
    PublishRequest {
        image,
        nodes: NodeSelector::group(GROUP).unwrap(),
        extra_params: EXTRA.into(),
    }
}

#[tokio::test]
async fn publish_rollback_and_show_for_an_smd_group() {
    let c = Cluster::start().await;
    // One member booted something else before kiln; the others had nothing.
    let foreign = BssEntry {
        kernel: Some("http://old/vmlinuz".into()),
        initrd: Some("http://old/initrd".into()),
        params: Some("root=nfs:10.0.0.1:/old".into()),
        cloud_init: None,
    };
    c.bss.set_entry("x1000c0s0b0n1", foreign.clone());

    // First build.
    let first = c.build("rocky9-compute", 4096);
    let plan = c
        .deployer
        .publish(&request(ImageSource::Local(first.clone())))
        .await
        .unwrap();
    assert_eq!(plan.changes.len(), 3);
    let rec1 = c
        .deployer
        .store()
        .find_compose(&first)
        .await
        .unwrap()
        .unwrap();
    let root1 = c.store_root();
    let dir1 = format!("{PREFIX}/rocky9-compute/{}/x86_64", rec1.version);
    assert_eq!(rec1.files.kernel.url, format!("{BASE_URL}/{dir1}/vmlinuz"));
    assert_eq!(
        rec1.files.rootfs.url,
        format!("{BASE_URL}/{dir1}/rootfs.squashfs")
    );
    for (file, local) in [
        ("vmlinuz", &first.kernel),
        ("initrd.img", &first.initrd),
        ("rootfs.squashfs", &first.rootfs),
    ] {
        let stored = std::fs::read(root1.join(&dir1).join(file)).unwrap();
        assert_eq!(stored, std::fs::read(local).unwrap(), "{file}");
    }
    // The record on disk says what the files are.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root1.join(&dir1).join("boot.json")).unwrap())
            .unwrap();
    assert_eq!(record["compose_id"], first.compose_id.to_string());
    assert_eq!(record["image_name"], "rocky9-compute");
    assert_eq!(record["arch"], "x86_64");
    assert_eq!(record["kernel_cmdline"], CMDLINE);
    assert_eq!(record["packages"][1]["name"], "dracut-live");
    assert_eq!(record["files"]["rootfs"]["size"], 4096);
    assert_eq!(
        record["files"]["rootfs"]["sha256"],
        sha256_hex(&std::fs::read(&first.rootfs).unwrap())
    );

    // BSS: every member boots the first build, with root= replaced, not duplicated.
    let expected_params = format!(
        "root=live:{} rd.live.overlay.overlayfs=1 console=ttyS0,115200 {EXTRA}",
        rec1.files.rootfs.url
    );
    let first_entry = BssEntry {
        kernel: Some(rec1.files.kernel.url.clone()),
        initrd: Some(rec1.files.initrd.url.clone()),
        params: Some(expected_params.clone()),
        cloud_init: None,
    };
    for x in group_members() {
        assert_eq!(c.bss.entry(x).as_ref(), Some(&first_entry), "{x}");
    }
    assert_eq!(expected_params.matches("root=").count(), 1);
    assert_eq!(
        c.bss.entry("x3000c0s19b1n0"),
        None,
        "a node outside the group"
    );

    // Publishing the same compose again uploads nothing and changes nothing.
    let files_before = files_under(&root1);
    let again = c
        .deployer
        .publish(&request(ImageSource::Local(first.clone())))
        .await
        .unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.unchanged.len(), 3);
    assert_eq!(files_under(&root1), files_before);

    // Second build of the same image: a new version beside the first.
    let second = c.build("rocky9-compute", 5000);
    c.deployer
        .publish(&request(ImageSource::Local(second.clone())))
        .await
        .unwrap();
    let rec2 = c
        .deployer
        .store()
        .find_compose(&second)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rec1.version, rec2.version);
    assert_eq!(
        c.deployer.store().versions("rocky9-compute").await.unwrap(),
        {
            let mut v = vec![rec1.version.clone(), rec2.version.clone()];
            v.sort();
            v
        }
    );
    let dir2 = format!("{PREFIX}/rocky9-compute/{}/x86_64", rec2.version);
    for file in ["vmlinuz", "initrd.img", "rootfs.squashfs", "boot.json"] {
        assert!(
            root1.join(&dir1).join(file).is_file(),
            "first build's {file}"
        );
        assert!(
            root1.join(&dir2).join(file).is_file(),
            "second build's {file}"
        );
    }
    // Nothing of the first build was overwritten.
    assert_eq!(
        std::fs::read(root1.join(&dir1).join("rootfs.squashfs")).unwrap(),
        std::fs::read(&first.rootfs).unwrap()
    );
    assert_eq!(
        c.deployer.store().record(&rec1.image_ref()).await.unwrap(),
        rec1
    );
    for x in group_members() {
        assert_eq!(
            c.bss.entry(x).unwrap().kernel.as_ref(),
            Some(&rec2.files.kernel.url)
        );
    }

    // show: each member boots the second build, and kiln knows which it is.
    let shown = c
        .deployer
        .show(&NodeSelector::group(GROUP).unwrap())
        .await
        .unwrap();
    assert_eq!(shown.len(), 3);
    for s in &shown {
        assert_eq!(s.image.as_ref(), Some(&rec2.image_ref()), "{}", s.xname);
        assert_eq!(s.compose_id, Some(second.compose_id));
        assert!(s.last_deployment.is_some());
    }

    // Roll the group back: the first build again, on every member.
    let back = c
        .deployer
        .rollback(&NodeSelector::group(GROUP).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(back.changes.len(), 3);
    for x in group_members() {
        assert_eq!(c.bss.entry(x).as_ref(), Some(&first_entry), "{x}");
    }

    // Once more: what they booted before kiln (the foreign entry, or nothing).
    c.deployer
        .rollback(&NodeSelector::group(GROUP).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(c.bss.entry("x1000c0s0b0n1"), Some(foreign.clone()));
    assert_eq!(c.bss.entry("x1000c0s0b0n0"), None);
    assert_eq!(c.bss.entry("x1000c0s1b0n0"), None);
    let e = c
        .deployer
        .rollback(&NodeSelector::group(GROUP).unwrap(), false)
        .await
        .unwrap_err();
    assert!(matches!(e, BootError::NothingToRollBack { .. }), "{e}");

    // The history: four deployments, four entries per member, none rewritten.
    let store = c.deployer.store();
    let ids = store.deployment_ids().await.unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    let d = store.deployment(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.selection, "group compute");
    let n1 = d
        .changes
        .iter()
        .find(|c| c.xname.as_str() == "x1000c0s0b0n1")
        .unwrap();
    assert_eq!(
        n1.before.as_ref().and_then(|b| b.kernel.as_deref()),
        Some("http://old/vmlinuz")
    );
    for x in group_members() {
        let h = store
            .node_history(&kiln_boot::Xname::parse("x", x).unwrap())
            .await
            .unwrap();
        assert_eq!(h.len(), 4, "{x}");
    }
    c.bss.assert_no_violations();
    c.smd.assert_no_violations();
}

#[tokio::test]
async fn rollback_refuses_nodes_changed_outside_kiln_unless_forced() {
    let c = Cluster::start().await;
    let nodes = NodeSelector::xnames(&["x1000c0s0b0n0", "x1000c0s1b0n0"]).unwrap();
    let build = c.build("sles15-login", 100);
    c.deployer
        .publish(&PublishRequest {
            image: ImageSource::Local(build),
            nodes: nodes.clone(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    let hand_made = BssEntry {
        kernel: Some("http://elsewhere/vmlinuz".into()),
        ..Default::default()
    };
    c.bss.set_entry("x1000c0s1b0n0", hand_made.clone());

    let e = c.deployer.rollback(&nodes, false).await.unwrap_err();
    assert!(matches!(e, BootError::Drift { .. }), "{e}");
    assert!(e.to_string().contains("x1000c0s1b0n0"), "{e}");
    assert!(e.to_string().contains("http://elsewhere/vmlinuz"), "{e}");
    // Refused as a whole: the other node was not rolled back either.
    assert!(c.bss.entry("x1000c0s0b0n0").is_some());
    assert_eq!(c.bss.entry("x1000c0s1b0n0"), Some(hand_made));

    c.deployer.rollback(&nodes, true).await.unwrap();
    assert_eq!(c.bss.entry("x1000c0s0b0n0"), None);
    assert_eq!(c.bss.entry("x1000c0s1b0n0"), None);
}

#[tokio::test]
async fn nodes_named_by_mac_or_nid_are_resolved_through_smd() {
    let c = Cluster::start().await;
    let build = c.build("rocky9-compute", 10);
    c.deployer
        .publish(&PublishRequest {
            image: ImageSource::Local(build.clone()),
            nodes: NodeSelector::macs(&["02-00-00-00-00-09", "020000000001"]).unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    let rec = c
        .deployer
        .store()
        .find_compose(&build)
        .await
        .unwrap()
        .unwrap();
    let kernel = Some(rec.files.kernel.url.clone());
    assert_eq!(c.bss.entry("x3000c0s19b1n0").unwrap().kernel, kernel);
    assert_eq!(c.bss.entry("x1000c0s0b0n0").unwrap().kernel, kernel);
    assert_eq!(c.bss.entries().len(), 2);

    c.deployer
        .publish(&PublishRequest {
            image: ImageSource::Published(rec.image_ref()),
            nodes: NodeSelector::nids(&[2]).unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(c.bss.entry("x1000c0s0b0n1").unwrap().kernel, kernel);

    let e = c
        .deployer
        .publish(&PublishRequest {
            image: ImageSource::Published(rec.image_ref()),
            nodes: NodeSelector::nids(&[2, 77]).unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("nodes.nids") && e.to_string().contains("77"),
        "{e}"
    );
    let e = c
        .deployer
        .show(&NodeSelector::macs(&["02:00:00:00:00:aa"]).unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("nodes.macs") && e.to_string().contains("02:00:00:00:00:aa"),
        "{e}"
    );
    let e = c
        .deployer
        .show(&NodeSelector::group("no-such-group").unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no-such-group"), "{e}");
    c.bss.assert_no_violations();
    c.smd.assert_no_violations();
}

#[tokio::test]
async fn large_groups_are_read_from_bss_in_batches() {
    let c = Cluster::start().await;
    let members: Vec<String> = (0..250)
        .map(|i| format!("x2000c0s{}b0n{}", i / 8, i % 8))
        .collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    c.smd.set_group("big", &refs);
    let build = c.build("rocky9-compute", 10);
    let plan = c
        .deployer
        .publish(&PublishRequest {
            image: ImageSource::Local(build),
            nodes: NodeSelector::group("big").unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(plan.changes.len(), 250);
    assert_eq!(c.bss.entries().len(), 250);
    let gets: Vec<String> = c
        .bss
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /boot/v1/bootparameters?name="))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    let shown = c
        .deployer
        .show(&NodeSelector::group("big").unwrap())
        .await
        .unwrap();
    assert!(shown.iter().all(|s| s.image.is_some()));
}
