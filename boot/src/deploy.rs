//! Publish, dry-run, rollback and show: the operations a worker or the CLI
//! calls. Each change is first computed as a [`Plan`]; a dry run returns the
//! plan, a real run appends it to the history and then applies it to BSS.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use crate::bss::{BootParams, BssClient};
use crate::cmdline::boot_params;
use crate::error::{BootError, Result};
use crate::history::{
    effective_publishes, new_deployment_id, Action, BootEntry, Deployment, NodeChange,
    DEPLOYMENT_KIND,
};
use crate::image::{version_for, BootFileKind, BootRecord, ImageRef, LocalBootImage, RECORD_KIND};
use crate::node::{NodeSelection, NodeSelector, Xname};
use crate::smd::SmdClient;
use crate::store::BootStore;

/// The image a publish deploys: a fresh build (uploaded first unless this
/// compose is already in the store) or an image already in the store.
#[derive(Debug, Clone)]
pub enum ImageSource {
    Local(LocalBootImage),
    Published(ImageRef),
}

#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub image: ImageSource,
    pub nodes: NodeSelector,
    /// Appended to the image's command line, e.g. `console=ttyS0,115200 ip=dhcp`.
    pub extra_params: String,
}

pub use kiln_api::boot::{NodeStatus, Plan};

/// Publishes images to nodes through BSS, with history in the boot store.
#[derive(Debug, Clone)]
pub struct Deployer {
    store: BootStore,
    bss: BssClient,
    smd: SmdClient,
}

impl Deployer {
    pub fn new(store: BootStore, bss: BssClient, smd: SmdClient) -> Deployer {
        Deployer { store, bss, smd }
    }

    pub fn store(&self) -> &BootStore {
        &self.store
    }

    /// The xnames a selection names, sorted and without duplicates.
    pub async fn resolve(&self, nodes: &NodeSelector) -> Result<Vec<Xname>> {
        let mut xnames = match nodes.selection() {
            NodeSelection::Xnames(x) => x.clone(),
            NodeSelection::Macs(m) => self.smd.xnames_for_macs(m).await?,
            NodeSelection::Nids(n) => self.smd.xnames_for_nids(n).await?,
            NodeSelection::Group(g) => self.smd.group_members(g).await?,
        };
        xnames.sort();
        xnames.dedup();
        if xnames.is_empty() {
            return Err(BootError::EmptySelection {
                field: nodes.selection().field().into(),
            });
        }
        Ok(xnames)
    }

    /// What BSS holds for each node now (`None` where it has nothing).
    async fn current(&self, xnames: &[Xname]) -> Result<BTreeMap<Xname, Option<BootEntry>>> {
        let mut out: BTreeMap<Xname, Option<BootEntry>> =
            xnames.iter().map(|x| (x.clone(), None)).collect();
        for bp in self.bss.get_for_hosts(xnames).await? {
            for h in &bp.hosts {
                let Ok(x) = Xname::parse("BSS host", h) else {
                    continue;
                };
                if let Some(slot) = out.get_mut(&x) {
                    *slot = Some(BootEntry::from(&bp));
                }
            }
        }
        Ok(out)
    }

    /// Uploads and deploys an image: the image goes to the store (unless it
    /// is there), the history is appended, then BSS is changed. Returns the
    /// applied plan.
    pub async fn publish(&self, request: &PublishRequest) -> Result<Plan> {
        let record = match &request.image {
            ImageSource::Local(local) => self.store.upload(local).await?,
            ImageSource::Published(r) => self.store.record(r).await?,
        };
        let plan = self
            .plan_publish(&record, &request.nodes, &request.extra_params)
            .await?;
        self.apply(&plan).await?;
        Ok(plan)
    }

    /// The plan of [`Deployer::publish`], writing nothing anywhere. For a
    /// local build not yet in the store, the URLs carry the version it would
    /// get now (the real run's timestamp may be a few seconds later).
    pub async fn dry_run(&self, request: &PublishRequest) -> Result<Plan> {
        let record = match &request.image {
            ImageSource::Published(r) => self.store.record(r).await?,
            ImageSource::Local(local) => self.would_upload(local).await?,
        };
        self.plan_publish(&record, &request.nodes, &request.extra_params)
            .await
    }

    async fn would_upload(&self, local: &LocalBootImage) -> Result<BootRecord> {
        local.validate()?;
        if let Some(existing) = self.store.find_compose(local).await? {
            return Ok(existing);
        }
        let created = Utc::now();
        let version = version_for(local.compose_id, created);
        let file = |kind: BootFileKind| {
            let key = self
                .store
                .key(&[&local.image_name, &version, &local.arch, kind.file_name()]);
            crate::image::BootFile {
                url: self.store.url(&key),
                key: key.to_string(),
                sha256: String::new(),
                size: 0,
            }
        };
        Ok(BootRecord {
            kind: RECORD_KIND.into(),
            compose_id: local.compose_id,
            image_name: local.image_name.clone(),
            version: version.clone(),
            arch: local.arch.clone(),
            created,
            files: crate::image::BootFiles {
                kernel: file(BootFileKind::Kernel),
                initrd: file(BootFileKind::Initrd),
                rootfs: file(BootFileKind::Rootfs),
            },
            packages: local.packages.clone(),
            kernel_cmdline: local.kernel_cmdline.clone(),
        })
    }

    /// Every selected node to boot `record`.
    pub async fn plan_publish(
        &self,
        record: &BootRecord,
        nodes: &NodeSelector,
        extra_params: &str,
    ) -> Result<Plan> {
        let target = BootEntry {
            kernel: Some(record.files.kernel.url.clone()),
            initrd: Some(record.files.initrd.url.clone()),
            params: Some(boot_params(
                &record.kernel_cmdline,
                &record.files.rootfs.url,
                extra_params,
            )?),
        };
        let xnames = self.resolve(nodes).await?;
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for (xname, before) in self.current(&xnames).await? {
            if before.as_ref() == Some(&target) {
                unchanged.push(xname);
            } else {
                changes.push(NodeChange {
                    xname,
                    before,
                    after: Some(target.clone()),
                    undoes: None,
                });
            }
        }
        Ok(Plan {
            id: new_deployment_id(Utc::now()),
            action: Action::Publish {
                image: record.image_ref(),
                compose_id: record.compose_id,
            },
            selection: nodes.describe(),
            changes,
            unchanged,
        })
    }

    /// Every selected node back to what it booted before its latest kiln
    /// publish still in effect. A node whose BSS entry was changed outside
    /// kiln since is refused (naming it) unless `force`.
    pub async fn plan_rollback(&self, nodes: &NodeSelector, force: bool) -> Result<Plan> {
        let xnames = self.resolve(nodes).await?;
        let current = self.current(&xnames).await?;
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for (xname, now) in current {
            let history = self.store.node_history(&xname).await?;
            let Some(last) = effective_publishes(&history).pop() else {
                return Err(BootError::NothingToRollBack {
                    xname: xname.to_string(),
                });
            };
            // BSS still at `before` means the publish never reached BSS; the
            // rollback then only records that it is undone.
            let in_place = now == last.after || now == last.before;
            if !in_place && !force {
                return Err(BootError::Drift {
                    xname: xname.to_string(),
                    deployment: last.deployment.clone(),
                    expected: last.after.as_ref().and_then(|e| e.kernel.clone()),
                    found: now.as_ref().and_then(|e| e.kernel.clone()),
                });
            }
            if now == last.before {
                unchanged.push(xname.clone());
            }
            changes.push(NodeChange {
                xname,
                before: now,
                after: last.before.clone(),
                undoes: Some(last.deployment.clone()),
            });
        }
        Ok(Plan {
            id: new_deployment_id(Utc::now()),
            action: Action::Rollback,
            selection: nodes.describe(),
            changes,
            unchanged,
        })
    }

    /// Plans and applies a rollback; returns the applied plan.
    pub async fn rollback(&self, nodes: &NodeSelector, force: bool) -> Result<Plan> {
        let plan = self.plan_rollback(nodes, force).await?;
        self.apply(&plan).await?;
        Ok(plan)
    }

    /// Records `plan` in the history, then makes BSS match it: one PUT per
    /// distinct target, one DELETE for nodes that had no boot parameters.
    pub async fn apply(&self, plan: &Plan) -> Result<()> {
        if plan.changes.is_empty() {
            tracing::info!(selection = %plan.selection, "nothing to change");
            return Ok(());
        }
        self.store
            .append_deployment(&Deployment {
                kind: DEPLOYMENT_KIND.into(),
                id: plan.id.clone(),
                created: Utc::now(),
                action: plan.action.clone(),
                selection: plan.selection.clone(),
                changes: plan.changes.clone(),
            })
            .await?;
        let mut puts: BTreeMap<BootEntry, Vec<String>> = BTreeMap::new();
        let mut deletes = Vec::new();
        let skip: BTreeSet<&Xname> = plan.unchanged.iter().collect();
        for c in plan.changes.iter().filter(|c| !skip.contains(&c.xname)) {
            match &c.after {
                Some(e) => puts.entry(e.clone()).or_default().push(c.xname.to_string()),
                None => deletes.push(c.xname.to_string()),
            }
        }
        for (entry, hosts) in puts {
            tracing::info!(deployment = %plan.id, nodes = hosts.len(), kernel = ?entry.kernel, "setting boot parameters");
            self.bss
                .put(&BootParams {
                    hosts,
                    kernel: entry.kernel,
                    initrd: entry.initrd,
                    params: entry.params,
                    ..Default::default()
                })
                .await?;
        }
        if !deletes.is_empty() {
            tracing::info!(deployment = %plan.id, nodes = deletes.len(), "removing boot parameters");
            self.bss
                .delete(&BootParams {
                    hosts: deletes,
                    ..Default::default()
                })
                .await?;
        }
        Ok(())
    }

    /// What each selected node boots now, and which kiln image that is.
    pub async fn show(&self, nodes: &NodeSelector) -> Result<Vec<NodeStatus>> {
        let xnames = self.resolve(nodes).await?;
        let mut out = Vec::new();
        for (xname, current) in self.current(&xnames).await? {
            let mut image = current
                .as_ref()
                .and_then(|c| c.kernel.as_deref())
                .and_then(|k| self.store.image_for_url(k));
            let mut compose_id = None;
            if let Some(r) = &image {
                match self.store.record(r).await {
                    Ok(rec) => compose_id = Some(rec.compose_id),
                    Err(BootError::UnknownImage { .. }) => image = None,
                    Err(e) => return Err(e),
                }
            }
            let last_deployment = self
                .store
                .node_history(&xname)
                .await?
                .pop()
                .map(|e| e.deployment);
            out.push(NodeStatus {
                xname,
                current,
                image,
                compose_id,
                last_deployment,
            });
        }
        Ok(out)
    }
}
