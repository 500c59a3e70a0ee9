//! Boot delivery's types: what a boot change asks ([`BootChange`], read from
//! the API's [`BootChangeRequest`]), what it did ([`Plan`], per node
//! [`NodeChange`]s of [`BootEntry`]s) and what nodes boot ([`NodeStatus`]).
//! kiln-boot computes and applies them; the composer stores and shows them;
//! the worker runs a change as a `boot` job; the CLI prints them. They live
//! here so that none of those reads another's JSON by hand.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::compose::BootNodes;
use crate::error::{ErrorKind, FieldError};
use crate::nodes::{NodeSelection, Xname};

/// Which published image: name, version and architecture locate it in the
/// boot image store (`<name>/<version>/<arch>/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub struct ImageRef {
    pub image_name: String,
    pub version: String,
    pub arch: String,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.image_name, self.version, self.arch)
    }
}

impl ImageRef {
    /// `NAME/VERSION/ARCH`, as [`ImageRef`]'s `Display` writes it; each part
    /// one key segment ([`check_segment`]). Errors name `field`.
    pub fn parse(field: &str, value: &str) -> Result<ImageRef, FieldError> {
        let bad = |reason: String| FieldError::new(ErrorKind::InvalidField, field, reason);
        let parts: Vec<&str> = value.split('/').collect();
        let [name, version, arch] = parts.as_slice() else {
            return Err(bad(format!(
                "{value:?}: name the image as NAME/VERSION/ARCH, as the boot store lists it"
            )));
        };
        for part in [name, version, arch] {
            check_segment(part).map_err(&bad)?;
        }
        Ok(ImageRef {
            image_name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
        })
    }
}

/// Whether `value` is safe as one key segment of the boot store: letters,
/// digits, `.-_+`, at most 128 bytes, not starting with `_` or `.` (`_`
/// names kiln's own directories). The error is the reason.
pub fn check_segment(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with(['_', '.'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} cannot be a key segment (letters, digits and ._-+, not starting with _ or .)"
        ))
    }
}

/// What the boot service holds for one node, as far as kiln manages it.
/// Cloud-init data is neither read nor written by kiln.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub struct BootEntry {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub params: Option<String>,
}

/// Publish or rollback, with what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Publish { image: ImageRef, compose_id: Uuid },
    Rollback,
}

/// One node's change. `None` means "no boot parameters in BSS".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    pub xname: Xname,
    pub before: Option<BootEntry>,
    pub after: Option<BootEntry>,
    /// For a rollback: the deployment whose change this undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
}

/// What a publish or rollback changes (or, for a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The deployment id this plan is recorded under when applied.
    pub id: String,
    #[serde(flatten)]
    pub action: Action,
    /// The node selection as the caller gave it, e.g. `group compute`.
    pub selection: String,
    pub changes: Vec<NodeChange>,
    /// Selected nodes whose BSS entry is not written because it already is
    /// what the plan sets. A rollback still lists them in `changes` (the
    /// history records that their publish is undone).
    pub unchanged: Vec<Xname>,
}

impl Plan {
    /// The changes BSS is told about (the unchanged nodes left out).
    pub fn written(&self) -> impl Iterator<Item = &NodeChange> {
        self.changes
            .iter()
            .filter(|c| !self.unchanged.contains(&c.xname))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Action::Publish { image, .. } => writeln!(f, "publish {image} to {}", self.selection)?,
            Action::Rollback => writeln!(f, "roll back {}", self.selection)?,
        }
        for c in self.written() {
            writeln!(f, "{}:", c.xname)?;
            write_entries(f, &c.before, &c.after)?;
        }
        for x in &self.unchanged {
            writeln!(f, "{x}: unchanged")?;
        }
        Ok(())
    }
}

/// `  kernel: old` / `        -> new`, for each of the three fields.
fn write_entries(
    f: &mut fmt::Formatter<'_>,
    before: &Option<BootEntry>,
    after: &Option<BootEntry>,
) -> fmt::Result {
    for name in ["kernel", "initrd", "params"] {
        writeln!(f, "  {name}: {}", entry_field(before, name))?;
        writeln!(
            f,
            "  {:width$}-> {}",
            "",
            entry_field(after, name),
            width = name.len()
        )?;
    }
    Ok(())
}

fn entry_field(e: &Option<BootEntry>, name: &str) -> String {
    let value = e.as_ref().and_then(|e| match name {
        "kernel" => e.kernel.clone(),
        "initrd" => e.initrd.clone(),
        _ => e.params.clone(),
    });
    value.unwrap_or_else(|| "(none)".into())
}

/// What one node boots now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub xname: Xname,
    /// `None`: BSS has no boot parameters for the node.
    pub current: Option<BootEntry>,
    /// The kiln image the kernel URL belongs to, if it is one in the store.
    pub image: Option<ImageRef>,
    pub compose_id: Option<Uuid>,
    /// The latest kiln deployment that touched the node.
    pub last_deployment: Option<String>,
}

/// What a published image's record says about one of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFile {
    /// The object key, relative to the store's root.
    pub key: String,
    /// Where nodes fetch it (base URL + key).
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

/// The three files of a PXE image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFiles {
    pub kernel: BootFile,
    pub initrd: BootFile,
    pub rootfs: BootFile,
}

/// A boot change as a caller writes it (`POST /boot/changes`): publish an
/// image already in the store, roll nodes back, or read what they boot.
/// Read into a [`BootChange`] by [`BootChangeRequest::check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootChangeRequest {
    /// Point the nodes at a published image.
    Publish {
        /// `NAME/VERSION/ARCH`, as `kiln boot show` and a compose's boot
        /// status print it; or
        #[serde(default)]
        image: Option<String>,
        /// the compose whose `boot` target published the image (one of the two).
        #[serde(default)]
        compose_id: Option<Uuid>,
        nodes: BootNodes,
        /// Appended to the image's kernel command line.
        #[serde(default)]
        extra_params: String,
        /// Compute the change and make none.
        #[serde(default)]
        dry_run: bool,
    },
    /// Put the nodes back on what they booted before kiln's last publish
    /// still in effect.
    Rollback {
        nodes: BootNodes,
        /// Also when a node's entry was changed outside kiln meanwhile.
        #[serde(default)]
        force: bool,
        #[serde(default)]
        dry_run: bool,
    },
    /// Read what the nodes boot and keep it (`GET /boot/nodes`).
    Show { nodes: BootNodes },
}

impl BootChangeRequest {
    /// The compose a publish names instead of an image, if it does.
    pub fn compose_id(&self) -> Option<Uuid> {
        match self {
            BootChangeRequest::Publish {
                image: None,
                compose_id,
                ..
            } => *compose_id,
            _ => None,
        }
    }

    /// A publish naming `image` (what its compose published) instead.
    pub fn with_image(self, found: &ImageRef) -> BootChangeRequest {
        match self {
            BootChangeRequest::Publish {
                nodes,
                extra_params,
                dry_run,
                ..
            } => BootChangeRequest::Publish {
                image: Some(found.to_string()),
                compose_id: None,
                nodes,
                extra_params,
                dry_run,
            },
            other => other,
        }
    }

    /// The checked change; errors name the request's field. A publish
    /// naming a compose is first given its image ([`Self::with_image`]).
    pub fn check(self) -> Result<BootChange, FieldError> {
        let nodes = |n: &BootNodes| {
            NodeSelection::from_request(n)
                .map_err(|e| FieldError::new(ErrorKind::InvalidField, e.field(), e.to_string()))
        };
        Ok(match self {
            BootChangeRequest::Publish {
                image,
                compose_id,
                nodes: n,
                extra_params,
                dry_run,
            } => {
                let image = match (image, compose_id) {
                    (Some(image), None) => image,
                    _ => {
                        return Err(FieldError::new(
                            ErrorKind::InvalidField,
                            "image",
                            "name the image (NAME/VERSION/ARCH) or the compose that published it (compose_id), not both",
                        ))
                    }
                };
                if extra_params.len() > 4096 || extra_params.contains(['\n', '\r', '\0']) {
                    return Err(FieldError::new(
                        ErrorKind::InvalidField,
                        "extra_params",
                        "one line of at most 4096 bytes",
                    ));
                }
                BootChange::Publish {
                    image: ImageRef::parse("image", &image)?,
                    nodes: nodes(&n)?,
                    extra_params,
                    dry_run,
                }
            }
            BootChangeRequest::Rollback {
                nodes: n,
                force,
                dry_run,
            } => BootChange::Rollback {
                nodes: nodes(&n)?,
                force,
                dry_run,
            },
            BootChangeRequest::Show { nodes: n } => BootChange::Show { nodes: nodes(&n)? },
        })
    }
}

/// A checked boot change: what a `boot` job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BootChange {
    Publish {
        image: ImageRef,
        nodes: NodeSelection,
        extra_params: String,
        dry_run: bool,
    },
    Rollback {
        nodes: NodeSelection,
        force: bool,
        dry_run: bool,
    },
    Show {
        nodes: NodeSelection,
    },
}

impl BootChange {
    pub fn nodes(&self) -> &NodeSelection {
        match self {
            BootChange::Publish { nodes, .. }
            | BootChange::Rollback { nodes, .. }
            | BootChange::Show { nodes } => nodes,
        }
    }

    /// Whether the change writes to the boot service when it runs.
    pub fn writes(&self) -> bool {
        match self {
            BootChange::Publish { dry_run, .. } | BootChange::Rollback { dry_run, .. } => !dry_run,
            BootChange::Show { .. } => false,
        }
    }
}

/// Who asked for a boot change, for the history.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Requester {
    pub tenant: String,
    /// The token's subject; none on a composer without `[auth]`.
    pub subject: Option<String>,
}

/// The answer to `POST /boot/changes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootChangeId {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
}

/// How far a boot change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootChangeState {
    /// Waiting for a worker that holds the boot service's credentials.
    Pending,
    Running,
    Success,
    Failure,
    Canceled,
}

/// `GET /boot/changes/{id}`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootChangeStatus {
    pub id: Uuid,
    pub status: BootChangeState,
    #[schema(value_type = BootChangeRequest)]
    pub change: BootChange,
    pub requested_by: Requester,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the change did (or, for a dry run, would do).
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Plan>,
    /// What the selected nodes boot once the change is done.
    #[schema(value_type = Vec<Object>)]
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// One change of what nodes boot, as the history keeps it: who, which
/// compose and image, which nodes with their old and new parameters, when.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootHistoryEntry {
    /// The deployment id (also in the boot store's `_deployments/`).
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub requested_by: Requester,
    /// The `boot` job or the compose's `build` job that made the change.
    pub job_id: Uuid,
    /// `action` (`publish` or `rollback`); a publish names its `image` and
    /// the `compose_id` that built it.
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub action: Action,
    pub selection: String,
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<NodeChange>,
    #[schema(value_type = Vec<String>)]
    #[serde(default)]
    pub unchanged: Vec<Xname>,
    /// Why applying the change failed part way: the boot service may hold
    /// some of the `changes` (a rollback puts them back).
    pub failed: Option<String>,
}

impl BootHistoryEntry {
    /// The record of an applied plan.
    pub fn of(plan: &Plan, requested_by: Requester, job_id: Uuid, at: DateTime<Utc>) -> Self {
        BootHistoryEntry {
            id: plan.id.clone(),
            created_at: at,
            requested_by,
            job_id,
            action: plan.action.clone(),
            selection: plan.selection.clone(),
            changes: plan.changes.clone(),
            unchanged: plan.unchanged.clone(),
            failed: None,
        }
    }
}

impl fmt::Display for BootHistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self
            .requested_by
            .subject
            .as_deref()
            .unwrap_or("(anonymous)");
        let what = match &self.action {
            Action::Publish { image, .. } => format!("publish {image}"),
            Action::Rollback => "rollback".to_owned(),
        };
        writeln!(
            f,
            "{}  {}  {what} to {}  by {who} (tenant {})",
            self.created_at.format("%Y-%m-%d %H:%M:%S"),
            self.id,
            self.selection,
            self.requested_by.tenant
        )?;
        if let Some(reason) = &self.failed {
            writeln!(f, "FAILED part way, BSS may hold some of it: {reason}")?;
        }
        for c in self
            .changes
            .iter()
            .filter(|c| !self.unchanged.contains(&c.xname))
        {
            writeln!(f, "{}:", c.xname)?;
            write_entries(f, &c.before, &c.after)?;
        }
        Ok(())
    }
}

/// `GET /boot/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootHistory {
    pub page: i64,
    pub size: i64,
    pub total: i64,
    pub items: Vec<BootHistoryEntry>,
}

/// What one node boots, as a boot job last read or set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeBoot {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub status: NodeStatus,
    pub observed_at: DateTime<Utc>,
}

/// `GET /boot/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeBootList {
    pub items: Vec<NodeBoot>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: serde_json::Value) -> Result<BootChange, FieldError> {
        serde_json::from_value::<BootChangeRequest>(v)
            .expect("request shape")
            .check()
    }

    #[test]
    fn requests_are_checked_naming_the_field() {
        let ok = read(
            json!({"action": "publish", "image": "compute/20260122T072633Z-1a2b3c4d/x86_64",
            "nodes": {"xnames": ["x1000c0s0b0n0"]}}),
        )
        .unwrap();
        assert!(ok.writes());
        assert_eq!(ok.nodes().describe(), "xnames x1000c0s0b0n0");
        for (v, field) in [
            (
                json!({"action": "publish", "image": "compute/v1", "nodes": {"group": "compute"}}),
                "image",
            ),
            (
                json!({"action": "publish", "image": "_deployments/a/b", "nodes": {"group": "compute"}}),
                "image",
            ),
            (
                json!({"action": "publish", "image": "a/b/c", "nodes": {"xnames": ["x1", "nope"]}}),
                "nodes.xnames[0]",
            ),
            (
                json!({"action": "rollback", "nodes": {"group": "compute", "nids": [1]}}),
                "nodes",
            ),
            (
                json!({"action": "publish", "image": "a/b/c", "nodes": {"group": "g"}, "extra_params": "a\nb"}),
                "extra_params",
            ),
            (
                json!({"action": "publish", "nodes": {"group": "g"}}),
                "image",
            ),
            (
                json!({"action": "publish", "image": "a/b/c", "compose_id": Uuid::nil(), "nodes": {"group": "g"}}),
                "image",
            ),
        ] {
            let e = read(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.field, field, "{v}: {e}");
        }
        let dry =
            read(json!({"action": "rollback", "nodes": {"group": "compute"}, "dry_run": true}))
                .unwrap();
        assert!(!dry.writes());
        assert!(
            serde_json::from_value::<BootChangeRequest>(
                json!({"action": "show", "nodes": {"group": "g"}, "x": 1})
            )
            .is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn image_refs_print_as_they_parse() {
        let r = ImageRef::parse("image", "compute/v1/x86_64").unwrap();
        assert_eq!(r.to_string(), "compute/v1/x86_64");
        for bad in ["", "a/b", "a/b/c/d", "a/../c", "a/.b/c", "a/b c/d"] {
            assert!(ImageRef::parse("image", bad).is_err(), "{bad}");
        }
    }
}
