//! The deployment history, kept in the boot store beside the images and only
//! ever appended to:
//!
//! - `_deployments/<id>.json`: one [`Deployment`] per publish or rollback,
//!   with every node's boot parameters before and after;
//! - `_nodes/<xname>/<id>.json`: one [`NodeHistoryEntry`] per node and
//!   deployment, so a node's history is one listing.
//!
//! Ids start with the UTC time to the millisecond, so listing order is time
//! order. Both objects are written before BSS is changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use kiln_api::boot::{Action, BootEntry, NodeChange, NodeOutcome};

use crate::bss::BootParams;
use crate::error::Result;
use crate::node::Xname;
use crate::store::BootStore;

pub const DEPLOYMENTS_DIR: &str = "_deployments";
pub const NODES_DIR: &str = "_nodes";
pub const DEPLOYMENT_KIND: &str = "kiln.boot-deployment.v1";

impl From<&BootParams> for BootEntry {
    fn from(p: &BootParams) -> Self {
        BootEntry {
            kernel: p.kernel.clone(),
            initrd: p.initrd.clone(),
            params: p.params.clone(),
            priority: None,
        }
    }
}

/// `_deployments/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub kind: String,
    pub id: String,
    pub created: DateTime<Utc>,
    #[serde(flatten)]
    pub action: Action,
    /// The node selection as the caller gave it, e.g. `group compute`.
    pub selection: String,
    pub changes: Vec<NodeChange>,
}

/// `_nodes/<xname>/<id>.json`: the node's part of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHistoryEntry {
    pub deployment: String,
    pub created: DateTime<Utc>,
    #[serde(flatten)]
    pub action: Action,
    pub before: Option<BootEntry>,
    pub after: Option<BootEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
}

/// A new deployment id: `20260122T072633.123Z-1a2b3c4d`.
pub fn new_deployment_id(at: DateTime<Utc>) -> String {
    let short = &Uuid::new_v4().simple().to_string()[..8];
    format!("{}-{short}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

impl BootStore {
    /// Appends a deployment: its record, then one entry per node. Fails if
    /// any of these objects exists already.
    pub async fn append_deployment(&self, d: &Deployment) -> Result<()> {
        let file = format!("{}.json", d.id);
        self.put_new_json(&self.key(&[DEPLOYMENTS_DIR, &file]), d)
            .await?;
        for c in &d.changes {
            let entry = NodeHistoryEntry {
                deployment: d.id.clone(),
                created: d.created,
                action: d.action.clone(),
                before: c.before.clone(),
                after: c.after.clone(),
                undoes: c.undoes.clone(),
            };
            self.put_new_json(&self.key(&[NODES_DIR, c.xname.as_str(), &file]), &entry)
                .await?;
        }
        Ok(())
    }

    pub async fn deployment(&self, id: &str) -> Result<Option<Deployment>> {
        let file = format!("{id}.json");
        self.get_json(&self.key(&[DEPLOYMENTS_DIR, &file]), "deployment record")
            .await
    }

    /// Deployment ids, oldest first.
    pub async fn deployment_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .list(&[DEPLOYMENTS_DIR])
            .await?
            .iter()
            .filter_map(|k| k.filename()?.strip_suffix(".json").map(str::to_owned))
            .collect())
    }

    /// A node's history, oldest first.
    pub async fn node_history(&self, xname: &Xname) -> Result<Vec<NodeHistoryEntry>> {
        let mut out = Vec::new();
        for key in self.list(&[NODES_DIR, xname.as_str()]).await? {
            if let Some(e) = self.get_json(&key, "node history entry").await? {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// The publishes still in effect for a node, oldest first: each rollback
/// cancels the publish it undid, so rolling back twice walks two images back.
pub fn effective_publishes(history: &[NodeHistoryEntry]) -> Vec<&NodeHistoryEntry> {
    let mut stack: Vec<&NodeHistoryEntry> = Vec::new();
    for e in history {
        match (&e.action, &e.undoes) {
            (Action::Publish { .. } | Action::Canary { .. } | Action::Promote { .. }, _) => {
                stack.push(e)
            }
            (Action::Rollback, Some(undone)) => stack.retain(|p| &p.deployment != undone),
            (Action::Rollback, None) | (Action::Tag { .. }, _) => {}
        }
    }
    stack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageRef;

    fn entry(id: &str, action: Action, undoes: Option<&str>) -> NodeHistoryEntry {
        NodeHistoryEntry {
            deployment: id.into(),
            created: Utc::now(),
            action,
            before: None,
            after: None,
            undoes: undoes.map(str::to_owned),
        }
    }

    #[test]
    fn rollbacks_cancel_the_publish_they_undo() {
        let publish = || Action::Publish {
            image: ImageRef {
                image_name: "i".into(),
                version: "v".into(),
                arch: "x86_64".into(),
            },
            compose_id: Uuid::nil(),
        };
        let h = vec![
            entry("1", publish(), None),
            entry("2", publish(), None),
            entry("3", publish(), None),
            entry("4", Action::Rollback, Some("3")),
            entry("5", Action::Rollback, Some("2")),
        ];
        let ids: Vec<&str> = effective_publishes(&h)
            .iter()
            .map(|e| e.deployment.as_str())
            .collect();
        assert_eq!(ids, ["1"]);
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_deployment_id(Utc::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_deployment_id(Utc::now());
        assert!(a < b, "{a} {b}");
        crate::image::check_segment("id", &a).unwrap();
    }
}
