//! Publish, canary, promote, rollback, tag and show: the operations a worker
//! calls. Each change is first computed as a [`Plan`]; a dry run returns the
//! plan, a real run appends it to the history and then applies it to the
//! boot service (BSS or boot-service), node by node.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use crate::cmdline::boot_params;
use crate::error::{BootError, Result};
use crate::history::{
    effective_publishes, new_deployment_id, Action, BootEntry, Deployment, NodeChange,
    DEPLOYMENT_KIND,
};
use crate::image::{version_for, BootFileKind, BootRecord, ImageRef, LocalBootImage, RECORD_KIND};
use crate::node::{NodeSelection, NodeSelector, Xname};
use crate::service::BootService;
use crate::smd::SmdClient;
use crate::store::BootStore;
use crate::tags::ReleaseTag;

pub use kiln_api::boot::Canaries;

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

/// Publishes images to nodes through the boot service, with history in the
/// boot store.
#[derive(Debug, Clone)]
pub struct Deployer {
    store: BootStore,
    service: BootService,
    smd: SmdClient,
}

impl Deployer {
    /// `service` is a [`BootService`] or a `BssClient`.
    pub fn new(store: BootStore, service: impl Into<BootService>, smd: SmdClient) -> Deployer {
        Deployer {
            store,
            service: service.into(),
            smd,
        }
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

    /// What the boot service holds for each node now (`None` where it has
    /// nothing of kiln's).
    async fn current(&self, xnames: &[Xname]) -> Result<BTreeMap<Xname, Option<BootEntry>>> {
        self.service.current(xnames).await
    }

    /// Uploads and deploys an image: the image goes to the store (unless it
    /// is there), the history is appended, then BSS is changed. Returns the
    /// applied plan.
    pub async fn publish(&self, request: &PublishRequest) -> Result<Plan> {
        let record = match &request.image {
            ImageSource::Local(local) => self.store.upload(local).await?,
            ImageSource::Published(r) => self.store.record(r).await?,
        };
        let mut plan = self
            .plan_publish(&record, &request.nodes, &request.extra_params)
            .await?;
        self.apply(&mut plan).await?;
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
            // The plan names no SBOM: it changes nothing nodes boot.
            sbom: None,
        })
    }

    /// What a node booting `record` gets: its files, its command line
    /// with `extra_params`, and the publish (or canary) priority.
    fn target(&self, record: &BootRecord, extra_params: &str, canary: bool) -> Result<BootEntry> {
        let target = BootEntry {
            kernel: Some(record.files.kernel.url.clone()),
            initrd: Some(record.files.initrd.url.clone()),
            params: Some(boot_params(
                &record.kernel_cmdline,
                &record.files.rootfs.url,
                extra_params,
            )?),
            priority: self.service.priority(canary),
        };
        self.service.check_entry(&target, "extra_params")?;
        Ok(target)
    }

    /// Each of `xnames` to `target`: a change per node that is not there
    /// yet; the ones that are go to `unchanged` (and, with
    /// `record_unchanged`, to the changes too, so their history says the
    /// deployment covered them).
    async fn changes_to(
        &self,
        xnames: &[Xname],
        target: &BootEntry,
        record_unchanged: bool,
    ) -> Result<(Vec<NodeChange>, Vec<Xname>)> {
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for (xname, before) in self.current(xnames).await? {
            let same = before.as_ref() == Some(target);
            if same {
                unchanged.push(xname.clone());
            }
            if !same || record_unchanged {
                changes.push(NodeChange {
                    xname,
                    before,
                    after: Some(target.clone()),
                    undoes: None,
                    outcome: None,
                });
            }
        }
        Ok((changes, unchanged))
    }

    /// Every selected node to boot `record`.
    pub async fn plan_publish(
        &self,
        record: &BootRecord,
        nodes: &NodeSelector,
        extra_params: &str,
    ) -> Result<Plan> {
        let target = self.target(record, extra_params, false)?;
        let xnames = self.resolve(nodes).await?;
        let (changes, unchanged) = self.changes_to(&xnames, &target, false).await?;
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

    /// Part of SMD group `group` to boot `record` first, at the canary
    /// priority: the named members, or the first `count` in xname order.
    /// A canary is fewer nodes than the group (else it is a publish).
    pub async fn plan_canary(
        &self,
        record: &BootRecord,
        group: &str,
        canaries: &Canaries,
        extra_params: &str,
    ) -> Result<Plan> {
        let members = self.resolve(&NodeSelector::group(group)?).await?;
        let mut chosen: Vec<Xname> = match canaries {
            Canaries::Xnames(xs) => {
                if let Some((i, x)) = xs.iter().enumerate().find(|(_, x)| !members.contains(x)) {
                    return Err(BootError::InvalidField {
                        field: format!("canary.xnames[{i}]"),
                        reason: format!("{x} is not a member of group {group}"),
                    });
                }
                xs.clone()
            }
            Canaries::Count(n) => members.iter().take(*n as usize).cloned().collect(),
        };
        chosen.sort();
        chosen.dedup();
        if chosen.len() >= members.len() {
            return Err(BootError::InvalidField {
                field: "canary".into(),
                reason: format!(
                    "a canary of {} of group {group}'s {} nodes is the whole group: publish to the group instead",
                    chosen.len(),
                    members.len()
                ),
            });
        }
        let target = self.target(record, extra_params, true)?;
        let (changes, unchanged) = self.changes_to(&chosen, &target, false).await?;
        let names: Vec<&str> = chosen.iter().map(Xname::as_str).collect();
        Ok(Plan {
            id: new_deployment_id(Utc::now()),
            action: Action::Canary {
                image: record.image_ref(),
                compose_id: record.compose_id,
                group: group.to_owned(),
            },
            selection: format!("canary {} of group {group}", names.join(",")),
            changes,
            unchanged,
        })
    }

    /// Every member of `group` to exactly what canary deployment `canary`
    /// set (the same keys: nothing rebuilt or uploaded), at the publish
    /// priority. The canary must still be in effect on each of its nodes.
    pub async fn plan_promote(&self, group: &str, canary: &str) -> Result<Plan> {
        let refuse = |reason: String| BootError::Canary {
            canary: canary.to_owned(),
            reason,
        };
        let d = self
            .store
            .deployment(canary)
            .await?
            .ok_or_else(|| refuse("no such deployment in the boot store".into()))?;
        let Action::Canary {
            image,
            compose_id,
            group: of,
        } = &d.action
        else {
            return Err(refuse(format!("is not a canary but a {}", d.action)));
        };
        if of != group {
            return Err(refuse(format!("is a canary of group {of}, not {group}")));
        }
        let Some(set) = d.changes.first().and_then(|c| c.after.clone()) else {
            return Err(refuse("changed no node".into()));
        };
        for c in &d.changes {
            let history = self.store.node_history(&c.xname).await?;
            let last = effective_publishes(&history)
                .pop()
                .map(|e| e.deployment.clone());
            if last.as_deref() != Some(canary) {
                return Err(refuse(format!(
                    "is no longer in effect on {} (rolled back or replaced since)",
                    c.xname
                )));
            }
        }
        // The image must still be in the store (its record is read, its
        // files are the canary's keys).
        self.store.record(image).await?;
        let target = BootEntry {
            priority: self.service.priority(false),
            ..set
        };
        let members = self.resolve(&NodeSelector::group(group)?).await?;
        let (changes, unchanged) = self.changes_to(&members, &target, true).await?;
        Ok(Plan {
            id: new_deployment_id(Utc::now()),
            action: Action::Promote {
                image: image.clone(),
                compose_id: *compose_id,
                group: group.to_owned(),
                canary: canary.to_owned(),
            },
            selection: format!("group {group}"),
            changes,
            unchanged,
        })
    }

    /// Points release tag `tag` at `image` in the store (a tag that names
    /// another image moves only with `force`). Changes no node; the plan
    /// says what the tag named before.
    pub async fn tag(&self, image: &ImageRef, tag: &ReleaseTag, force: bool) -> Result<Plan> {
        let record = self.store.record(image).await?;
        let before = self.store.tag(tag).await?.map(|t| t.image);
        let after = self.store.set_tag(tag, &record, force).await?;
        let previous = before.filter(|b| *b != after.image);
        Ok(Plan {
            id: new_deployment_id(Utc::now()),
            action: Action::Tag {
                image: after.image,
                compose_id: after.compose_id,
                tag: tag.clone(),
                previous,
            },
            selection: String::new(),
            changes: Vec::new(),
            unchanged: Vec::new(),
        })
    }

    /// Undoes the newest kiln deployment (publish, canary or promotion)
    /// still in effect on any selected node, on the nodes where it is the
    /// latest: one call undoes a canary (its nodes only, the rest of the
    /// group is left alone) or a promotion (the group back to where the
    /// canary left it); the next call undoes the one before. A node whose
    /// entry was changed outside kiln since is refused (naming it) unless
    /// `force`.
    pub async fn plan_rollback(&self, nodes: &NodeSelector, force: bool) -> Result<Plan> {
        let xnames = self.resolve(nodes).await?;
        let current = self.current(&xnames).await?;
        let mut lasts = Vec::new();
        for (xname, now) in current {
            let history = self.store.node_history(&xname).await?;
            let last = effective_publishes(&history).pop().cloned();
            lasts.push((xname, now, last));
        }
        let Some(newest) = lasts
            .iter()
            .filter_map(|(_, _, l)| l.as_ref().map(|l| l.deployment.clone()))
            .max()
        else {
            return Err(BootError::NothingToRollBack {
                xname: xnames.first().map(ToString::to_string).unwrap_or_default(),
            });
        };
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for (xname, now, last) in lasts {
            let Some(last) = last.filter(|l| l.deployment == newest) else {
                continue;
            };
            // The service still at `before` means the change never reached
            // it; the rollback then only records that it is undone.
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
                outcome: None,
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
        let mut plan = self.plan_rollback(nodes, force).await?;
        self.apply(&mut plan).await?;
        Ok(plan)
    }

    /// Records `plan` in the history, then makes the boot service match
    /// it node by node, in order (the unchanged nodes left out). Each
    /// written change gets its outcome; the first failure stops the rest
    /// and is returned, `plan` then saying which nodes moved.
    pub async fn apply(&self, plan: &mut Plan) -> Result<()> {
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
        let skip: BTreeSet<Xname> = plan.unchanged.iter().cloned().collect();
        tracing::info!(deployment = %plan.id, nodes = plan.changes.len() - skip.len(), "setting boot parameters");
        self.service.apply(&mut plan.changes, &skip).await
    }

    /// What each selected node boots now, and which kiln image that is.
    pub async fn show(&self, nodes: &NodeSelector) -> Result<Vec<NodeStatus>> {
        let xnames = self.resolve(nodes).await?;
        let mut tags: BTreeMap<ImageRef, Vec<ReleaseTag>> = BTreeMap::new();
        for t in self.store.tags().await? {
            tags.entry(t.image).or_default().push(t.tag);
        }
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
            let tags = image
                .as_ref()
                .and_then(|i| tags.get(i))
                .cloned()
                .unwrap_or_default();
            out.push(NodeStatus {
                xname,
                current,
                image,
                compose_id,
                last_deployment,
                tags,
            });
        }
        Ok(out)
    }
}
