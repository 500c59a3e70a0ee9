//! Where nodes' boot parameters live: OpenCHAMI BSS or its successor,
//! boot-service. The deployer reads and writes one node at a time through
//! [`BootService`], so each node's outcome is known when a change fails
//! part way.
//!
//! On boot-service kiln manages one BootConfiguration per node, named
//! `kiln-<xname>` and selecting the node by its exact xname (the service's
//! wildcards never match), so a node's entry is its own and a rollback can
//! put it back exactly; a node without one falls back to whatever else
//! matches it (a site's group configuration). Publishes carry the
//! configured `priority`, canaries `canary_priority`.

use std::collections::{BTreeMap, BTreeSet};

use crate::boot_service::{BootConfigurationSpec, BootServiceClient, Metadata};
use crate::bss::{BootParams, BssClient};
use crate::error::{BootError, Result};
use crate::history::{BootEntry, NodeChange, NodeOutcome};
use crate::node::Xname;

/// The name of kiln's BootConfiguration for a node.
pub fn resource_name(xname: &Xname) -> String {
    format!("kiln-{xname}")
}

/// Characters boot-service's iPXE template (Go html/template) would
/// escape, which would break a URL or a command line on the node.
const ESCAPED: [char; 6] = ['&', '+', '\'', '"', '<', '>'];

#[derive(Debug, Clone)]
pub enum BootService {
    Bss(BssClient),
    BootService {
        client: BootServiceClient,
        priority: u8,
        canary_priority: u8,
    },
}

impl From<BssClient> for BootService {
    fn from(c: BssClient) -> BootService {
        BootService::Bss(c)
    }
}

impl BootService {
    /// The priority a publish (or a canary) sets; BSS has none.
    pub fn priority(&self, canary: bool) -> Option<u8> {
        match self {
            BootService::Bss(_) => None,
            BootService::BootService {
                priority,
                canary_priority,
                ..
            } => Some(if canary { *canary_priority } else { *priority }),
        }
    }

    /// Whether the service can carry `entry` as it is: boot-service needs a
    /// kernel and renders the script HTML-escaped, so `&+'"<>` would reach
    /// the node changed. `params_field` names where the command line came
    /// from, for the error.
    pub fn check_entry(&self, entry: &BootEntry, params_field: &str) -> Result<()> {
        let BootService::BootService { .. } = self else {
            return Ok(());
        };
        let fields = [
            ("boot_store.base_url", entry.kernel.as_deref()),
            ("boot_store.base_url", entry.initrd.as_deref()),
            (params_field, entry.params.as_deref()),
        ];
        for (field, value) in fields {
            if let Some(c) = value.and_then(|v| v.chars().find(|c| ESCAPED.contains(c))) {
                return Err(BootError::InvalidField {
                    field: field.into(),
                    reason: format!(
                        "{c:?} would be HTML-escaped in boot-service's iPXE script; keep & + ' \" < > out of URLs and kernel parameters"
                    ),
                });
            }
        }
        if entry.kernel.is_none() {
            return Err(BootError::InvalidField {
                field: "kernel".into(),
                reason: "boot-service needs a kernel".into(),
            });
        }
        Ok(())
    }

    /// What the service holds for each node (`None` where kiln manages
    /// nothing for it).
    pub async fn current(&self, xnames: &[Xname]) -> Result<BTreeMap<Xname, Option<BootEntry>>> {
        let mut out: BTreeMap<Xname, Option<BootEntry>> =
            xnames.iter().map(|x| (x.clone(), None)).collect();
        match self {
            BootService::Bss(bss) => {
                for bp in bss.get_for_hosts(xnames).await? {
                    for h in &bp.hosts {
                        let Ok(x) = Xname::parse("BSS host", h) else {
                            continue;
                        };
                        if let Some(slot) = out.get_mut(&x) {
                            *slot = Some(BootEntry::from(&bp));
                        }
                    }
                }
            }
            BootService::BootService { client, .. } => {
                let mut by_name: BTreeMap<String, BootConfigurationSpec> = BTreeMap::new();
                for c in client.list().await? {
                    by_name.entry(c.metadata.name).or_insert(c.spec);
                }
                for (x, slot) in out.iter_mut() {
                    if let Some(spec) = by_name.get(&resource_name(x)) {
                        *slot = Some(entry_of(spec));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes the service hold each change's `after`, node by node in order,
    /// skipping the nodes in `skip` (already there). Each change gets its
    /// outcome; the first failure stops the rest (not attempted) and is
    /// returned.
    pub async fn apply(&self, changes: &mut [NodeChange], skip: &BTreeSet<Xname>) -> Result<()> {
        let uids = match self {
            BootService::Bss(_) => BTreeMap::new(),
            BootService::BootService { client, .. } => {
                let mut uids: BTreeMap<String, String> = BTreeMap::new();
                for c in client.list().await? {
                    uids.entry(c.metadata.name).or_insert(c.metadata.uid);
                }
                uids
            }
        };
        let mut failed: Option<BootError> = None;
        for c in changes.iter_mut() {
            if skip.contains(&c.xname) {
                continue;
            }
            if failed.is_some() {
                c.outcome = Some(NodeOutcome::NotAttempted);
                continue;
            }
            match self.set(&uids, &c.xname, c.after.as_ref()).await {
                Ok(()) => c.outcome = Some(NodeOutcome::Applied),
                Err(e) => {
                    c.outcome = Some(NodeOutcome::Failed {
                        reason: e.to_string(),
                    });
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn set(
        &self,
        uids: &BTreeMap<String, String>,
        xname: &Xname,
        entry: Option<&BootEntry>,
    ) -> Result<()> {
        match self {
            BootService::Bss(bss) => {
                let hosts = vec![xname.to_string()];
                match entry {
                    Some(e) => {
                        bss.put(&BootParams {
                            hosts,
                            kernel: e.kernel.clone(),
                            initrd: e.initrd.clone(),
                            params: e.params.clone(),
                            ..Default::default()
                        })
                        .await
                    }
                    None => {
                        bss.delete(&BootParams {
                            hosts,
                            ..Default::default()
                        })
                        .await
                    }
                }
            }
            BootService::BootService { client, .. } => {
                let name = resource_name(xname);
                let uid = uids.get(&name);
                match (entry, uid) {
                    (Some(e), uid) => {
                        let metadata = Metadata {
                            name,
                            uid: String::new(),
                            labels: BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "kiln".to_owned(),
                            )]),
                        };
                        let spec = BootConfigurationSpec {
                            hosts: vec![xname.to_string()],
                            kernel: e.kernel.clone().unwrap_or_default(),
                            initrd: e.initrd.clone(),
                            params: e.params.clone(),
                            priority: e.priority.map(i64::from),
                            ..Default::default()
                        };
                        match uid {
                            Some(uid) => client.replace(uid, &metadata, &spec).await,
                            None => client.create(&metadata, &spec).await.map(drop),
                        }
                    }
                    (None, Some(uid)) => client.delete(uid).await,
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

/// A resource's spec as kiln's view of a node's entry. A priority outside
/// 0..=100 (which the service refuses) reads as none.
fn entry_of(spec: &BootConfigurationSpec) -> BootEntry {
    BootEntry {
        kernel: (!spec.kernel.is_empty()).then(|| spec.kernel.clone()),
        initrd: spec.initrd.clone(),
        params: spec.params.clone(),
        priority: spec.priority.and_then(|p| u8::try_from(p).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ServiceConfig;

    #[test]
    fn boot_service_entries_keep_escaped_characters_out() {
        let svc = BootService::BootService {
            client: BootServiceClient::new(&ServiceConfig::new("http://127.0.0.1:1")).unwrap(),
            priority: 50,
            canary_priority: 60,
        };
        let ok = BootEntry {
            kernel: Some("http://s/kiln/c/v/x86_64/vmlinuz".into()),
            initrd: Some("http://s/kiln/c/v/x86_64/initrd.img".into()),
            params: Some("root=live:http://s/r console=ttyS0,115200 ip=dhcp".into()),
            priority: Some(50),
        };
        svc.check_entry(&ok, "extra_params").unwrap();
        for (bad, field) in [
            (
                BootEntry {
                    params: Some("a=1&b".into()),
                    ..ok.clone()
                },
                "extra_params",
            ),
            (
                BootEntry {
                    kernel: Some("http://s/c++/vmlinuz".into()),
                    ..ok.clone()
                },
                "boot_store.base_url",
            ),
            (
                BootEntry {
                    params: Some("x=\"<y>\"".into()),
                    ..ok.clone()
                },
                "extra_params",
            ),
            (
                BootEntry {
                    kernel: None,
                    ..ok.clone()
                },
                "kernel",
            ),
        ] {
            let e = svc.check_entry(&bad, "extra_params").unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        }
        let bss =
            BootService::Bss(BssClient::new(&ServiceConfig::new("http://127.0.0.1:1")).unwrap());
        bss.check_entry(
            &BootEntry {
                params: Some("a=1&b".into()),
                ..ok
            },
            "extra_params",
        )
        .unwrap();
        assert_eq!(bss.priority(true), None);
        assert_eq!(svc.priority(true), Some(60));
    }
}
