//! kiln-boot against OpenCHAMI boot-service (its test double enforcing the
//! reference's rules): publish to a group, a canary at a higher priority,
//! its promotion to the rest of the group without rebuilding, rollbacks of
//! each in one call, a change that fails part way, release tags; at every
//! step the node → image answer of `/bootscript` is asserted.

mod common;

use common::*;
use kiln_boot::{
    BootError, BootService, BootServiceClient, BootStore, Canaries, Deployer, ImageSource,
    NodeOutcome, NodeSelector, PublishRequest, ReleaseTag, ServiceConfig, SmdClient,
};
use kiln_testsupport::openchami::{BootServiceNode, BootServiceTestDouble, SmdTestDouble};
use serde_json::json;

const SITE_KERNEL: &str = "http://site.cluster.test/images/site-default/vmlinuz";

struct BootServiceCluster {
    service: BootServiceTestDouble,
    smd: SmdTestDouble,
    dir: tempfile::TempDir,
    deployer: Deployer,
}

impl BootServiceCluster {
    async fn start() -> BootServiceCluster {
        let groups = group_members();
        let service = BootServiceTestDouble::start(&BootServiceNode::all(&nodes(), |node| {
            if groups.contains(&node.xname.as_str()) {
                vec![GROUP.to_owned()]
            } else {
                vec![]
            }
        }))
        .await
        .unwrap();
        // What the site booted the group with before kiln: a group
        // configuration of its own, which kiln never touches.
        service.insert(
            "site-compute",
            json!({"groups": [GROUP], "kernel": SITE_KERNEL, "priority": 10}),
        );
        let smd = SmdTestDouble::start(&nodes(), &[(GROUP, &groups)], Some(SMD_TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let deployer = Deployer::new(
            store_at(&dir.path().join("store")),
            BootService::BootService {
                client: BootServiceClient::new(&ServiceConfig::new(service.url())).unwrap(),
                priority: 50,
                canary_priority: 60,
            },
            SmdClient::new(&ServiceConfig::new(smd.url()).with_token(SMD_TOKEN)).unwrap(),
        );
        BootServiceCluster {
            service,
            smd,
            dir,
            deployer,
        }
    }

    fn store(&self) -> BootStore {
        store_at(&self.dir.path().join("store"))
    }

    /// The kernel each node of `xnames` would boot now, from `/bootscript`.
    async fn kernels(&self, xnames: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for x in xnames {
            let s = self.service.boot_script(x).await;
            out.push(
                s.kernel
                    .unwrap_or_else(|| format!("(no kernel: {})", s.text)),
            );
        }
        out
    }

    async fn publish_to_group(&self, record: &kiln_boot::BootRecord) -> kiln_boot::Plan {
        self.deployer
            .publish(&PublishRequest {
                image: ImageSource::Published(record.image_ref()),
                nodes: NodeSelector::group(GROUP).unwrap(),
                extra_params: EXTRA.into(),
            })
            .await
            .unwrap()
    }

    async fn roll_back_group(&self) -> kiln_boot::Plan {
        self.deployer
            .rollback(&NodeSelector::group(GROUP).unwrap(), false)
            .await
            .unwrap()
    }

    /// kiln's resource for `xname`: (hosts, priority).
    fn resource(&self, xname: &str) -> Option<(serde_json::Value, serde_json::Value)> {
        self.service
            .configurations()
            .into_iter()
            .find(|r| r["metadata"]["name"] == format!("kiln-{xname}"))
            .map(|r| (r["spec"]["hosts"].clone(), r["spec"]["priority"].clone()))
    }
}

#[tokio::test]
async fn publish_canary_promote_and_roll_back_on_boot_service() {
    let c = BootServiceCluster::start().await;
    let helper = Cluster::start().await;
    let group = group_members();
    let outsider = "x3000c0s19b1n0";
    assert_eq!(c.kernels(&group).await, [SITE_KERNEL; 3]);

    // Two builds in the store: A (the group's image) and B (the next one).
    let store = c.store();
    let a = store.upload(&helper.build("compute", 1000)).await.unwrap();
    let b = store.upload(&helper.build("compute", 2000)).await.unwrap();
    let (ka, kb) = (a.files.kernel.url.as_str(), b.files.kernel.url.as_str());

    // Publish A to the group: one resource per node, the exact xname, the
    // publish priority; the node outside the group boots nothing of kiln's.
    let plan = c.publish_to_group(&a).await;
    assert!(plan
        .changes
        .iter()
        .all(|ch| ch.outcome == Some(NodeOutcome::Applied)));
    assert_eq!(c.kernels(&group).await, [ka; 3]);
    for x in &group {
        assert_eq!(c.resource(x), Some((json!([x]), json!(50))), "{x}");
    }
    let script = c.service.boot_script(group[0]).await;
    let params = script.params.as_deref().unwrap();
    assert!(
        params.starts_with(&format!("root=live:{} ", a.files.rootfs.url))
            && params.ends_with(&format!("{EXTRA} BOOTIF=01-02-00-00-00-00-01")),
        "{}",
        script.text
    );
    assert!(c.service.boot_script(outsider).await.kernel.is_none());

    // A canary of one node (the first in xname order) boots B, at the
    // canary priority; the rest of the group stays on A.
    let mut canary = c
        .deployer
        .plan_canary(&b, GROUP, &Canaries::Count(1), EXTRA)
        .await
        .unwrap();
    c.deployer.apply(&mut canary).await.unwrap();
    assert_eq!(c.kernels(&group).await, [kb, ka, ka]);
    assert_eq!(c.resource(group[0]).unwrap().1, json!(60));
    // Named canaries must be members; a canary of the whole group is not one.
    for (canaries, field) in [
        (
            Canaries::Xnames(vec![outsider.parse_xname()]),
            "canary.xnames[0]",
        ),
        (Canaries::Count(3), "canary"),
    ] {
        let e = c
            .deployer
            .plan_canary(&b, GROUP, &canaries, EXTRA)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with(field), "{e}");
    }

    // Promote: every node of the group to exactly the canary's entry (the
    // same keys), at the publish priority; nothing uploaded.
    let stored = files_under(&c.dir.path().join("store"));
    let mut promote = c.deployer.plan_promote(GROUP, &canary.id).await.unwrap();
    c.deployer.apply(&mut promote).await.unwrap();
    assert_eq!(c.kernels(&group).await, [kb; 3]);
    for x in &group {
        assert_eq!(c.resource(x).unwrap().1, json!(50), "{x}");
    }
    let added: Vec<String> = files_under(&c.dir.path().join("store"))
        .into_iter()
        .filter(|f| !stored.contains(f))
        .collect();
    assert!(
        added
            .iter()
            .all(|f| f.contains("/_deployments/") || f.contains("/_nodes/")),
        "a promotion wrote {added:?}"
    );
    // A promotion names a canary of its group, still in effect.
    let e = c
        .deployer
        .plan_promote(GROUP, &promote.id)
        .await
        .unwrap_err();
    assert!(matches!(e, BootError::Canary { .. }), "{e}");

    // One rollback undoes the promotion: the canary is back where it was.
    let back = c.roll_back_group().await;
    assert_eq!(back.changes.len(), 3);
    assert_eq!(c.kernels(&group).await, [kb, ka, ka]);
    assert_eq!(c.resource(group[0]).unwrap().1, json!(60));
    // The next undoes the canary, on its node only.
    let back = c.roll_back_group().await;
    assert_eq!(back.changes.len(), 1, "{back}");
    assert_eq!(c.kernels(&group).await, [ka; 3]);
    // And the next undoes the publish: the site's own configuration again,
    // kiln's resources gone.
    c.roll_back_group().await;
    assert_eq!(c.kernels(&group).await, [SITE_KERNEL; 3]);
    assert!(group.iter().all(|x| c.resource(x).is_none()));
    assert_eq!(
        c.service.configurations().len(),
        1,
        "only the site's is left"
    );

    // A promotion the service fails part way: each node's outcome says
    // which moved, and a rollback puts back exactly those.
    c.publish_to_group(&a).await;
    let mut canary = c
        .deployer
        .plan_canary(
            &b,
            GROUP,
            &Canaries::Xnames(vec![group[1].parse_xname()]),
            EXTRA,
        )
        .await
        .unwrap();
    c.deployer.apply(&mut canary).await.unwrap();
    assert_eq!(c.kernels(&group).await, [ka, kb, ka]);
    let mut promote = c.deployer.plan_promote(GROUP, &canary.id).await.unwrap();
    c.service.fail_writes_after(Some(1));
    let e = c.deployer.apply(&mut promote).await.unwrap_err();
    c.service.fail_writes_after(None);
    assert!(e.to_string().contains("500"), "{e}");
    let outcomes: Vec<(&str, &NodeOutcome)> = promote
        .changes
        .iter()
        .filter_map(|ch| Some((ch.xname.as_str(), ch.outcome.as_ref()?)))
        .collect();
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                (_, NodeOutcome::Applied),
                (_, NodeOutcome::Failed { .. }),
                (_, NodeOutcome::NotAttempted)
            ]
        ),
        "{outcomes:?}"
    );
    // The first node moved to B; the canary (second) keeps its canary
    // entry; the third never moved.
    assert_eq!(c.kernels(&group).await, [kb, kb, ka]);
    assert_eq!(c.resource(group[1]).unwrap().1, json!(60));
    let back = c.roll_back_group().await;
    assert_eq!(back.changes.len(), 3);
    assert_eq!(back.unchanged.len(), 2, "{back}");
    assert_eq!(c.kernels(&group).await, [ka, kb, ka]);

    // What boot-service would render changed is refused before anything
    // is written.
    let writes = c.service.requests().len();
    let e = c
        .deployer
        .plan_canary(&b, GROUP, &Canaries::Count(1), "ip=dhcp&x=1")
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("extra_params: "), "{e}");
    assert!(c.service.requests()[writes..]
        .iter()
        .all(|r| r.starts_with("GET ")));
    c.service.assert_no_violations();
    c.smd.assert_no_violations();
}

#[tokio::test]
async fn release_tags_move_only_with_force_and_show_says_which_nodes_boot_them() {
    let c = BootServiceCluster::start().await;
    let helper = Cluster::start().await;
    let store = c.store();
    let a = store.upload(&helper.build("compute", 100)).await.unwrap();
    let b = store.upload(&helper.build("compute", 200)).await.unwrap();
    let tag = ReleaseTag::parse("tag", "compute:2026.12").unwrap();

    let plan = c.deployer.tag(&a.image_ref(), &tag, false).await.unwrap();
    assert_eq!(
        plan.action.to_string(),
        format!("tag {} as compute:2026.12", a.image_ref())
    );
    // Tagging the same image again changes nothing.
    c.deployer.tag(&a.image_ref(), &tag, false).await.unwrap();
    let first = files_under(&c.dir.path().join("store"));
    let records: Vec<&String> = first.iter().filter(|f| f.contains("/_tags/")).collect();
    assert_eq!(records.len(), 1, "{first:?}");
    let record_bytes = std::fs::read(c.dir.path().join("store").join(records[0])).unwrap();

    // Moving it needs force, and adds a record: the first is untouched.
    let e = c
        .deployer
        .tag(&b.image_ref(), &tag, false)
        .await
        .unwrap_err();
    assert!(matches!(e, BootError::TagExists { .. }), "{e}");
    let moved = c.deployer.tag(&b.image_ref(), &tag, true).await.unwrap();
    assert_eq!(
        moved.action.to_string(),
        format!(
            "tag compute:2026.12 moved from {} to {}",
            a.image_ref(),
            b.image_ref()
        )
    );
    assert_eq!(
        std::fs::read(c.dir.path().join("store").join(records[0])).unwrap(),
        record_bytes
    );
    assert_eq!(store.tag(&tag).await.unwrap().unwrap().image, b.image_ref());

    // `show`: which nodes boot which tag, and the compose that built it.
    c.deployer
        .publish(&PublishRequest {
            image: ImageSource::Published(b.image_ref()),
            nodes: NodeSelector::xnames(&[group_members()[0]]).unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    let shown = c
        .deployer
        .show(&NodeSelector::group(GROUP).unwrap())
        .await
        .unwrap();
    assert_eq!(shown[0].tags, [tag]);
    assert_eq!(shown[0].compose_id, Some(b.compose_id));
    assert!(shown[1].tags.is_empty() && shown[1].image.is_none());
}

trait ParseXname {
    fn parse_xname(&self) -> kiln_boot::Xname;
}

impl ParseXname for str {
    fn parse_xname(&self) -> kiln_boot::Xname {
        kiln_boot::Xname::parse("test", self).unwrap()
    }
}
