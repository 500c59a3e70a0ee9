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
    /// The boot-service resource's priority (0..100); BSS has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

/// What a deployment did, with what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Publish {
        image: ImageRef,
        compose_id: Uuid,
    },
    /// A publish to part of `group`, at the canary priority.
    Canary {
        image: ImageRef,
        compose_id: Uuid,
        group: String,
    },
    /// Every node of `group` to exactly what canary deployment `canary`
    /// set (same keys, same bytes), at the group's priority.
    Promote {
        image: ImageRef,
        compose_id: Uuid,
        group: String,
        canary: String,
    },
    Rollback,
    /// Release tag `tag` now names `image` (it named `previous` before:
    /// a move, which needs `force`). Changes no node.
    Tag {
        image: ImageRef,
        compose_id: Uuid,
        tag: ReleaseTag,
        previous: Option<ImageRef>,
    },
}

impl Action {
    /// The image a publish, canary or promotion points nodes at.
    pub fn published(&self) -> Option<(&ImageRef, Uuid)> {
        match self {
            Action::Publish { image, compose_id }
            | Action::Canary {
                image, compose_id, ..
            }
            | Action::Promote {
                image, compose_id, ..
            } => Some((image, *compose_id)),
            Action::Rollback | Action::Tag { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Publish { image, .. } => write!(f, "publish {image}"),
            Action::Canary { image, group, .. } => write!(f, "canary {image} in group {group}"),
            Action::Promote {
                image,
                group,
                canary,
                ..
            } => write!(f, "promote {image} (canary {canary}) to group {group}"),
            Action::Rollback => write!(f, "rollback"),
            Action::Tag {
                image,
                tag,
                previous,
                ..
            } => match previous {
                Some(p) => write!(f, "tag {tag} moved from {p} to {image}"),
                None => write!(f, "tag {image} as {tag}"),
            },
        }
    }
}

/// A release tag, `RELEASE:VERSION` (`compute:2026.12`): each part
/// letters, digits and `._-`, 1..64 bytes, not starting with `.`, `_` or
/// `-`. Tags live in kiln's database (the history) and in the boot store's
/// `_tags/RELEASE/VERSION/` records, each move a new record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseTag {
    release: String,
    version: String,
}

impl ReleaseTag {
    /// Errors name `field`.
    pub fn parse(field: &str, value: &str) -> Result<ReleaseTag, FieldError> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && !p.starts_with(['.', '_', '-'])
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        match value.split_once(':') {
            Some((r, v)) if part_ok(r) && part_ok(v) => Ok(ReleaseTag {
                release: r.to_owned(),
                version: v.to_owned(),
            }),
            _ => Err(FieldError::new(
                ErrorKind::InvalidField,
                field,
                format!(
                    "{value:?} is not a release tag: RELEASE:VERSION, each letters, digits and ._- (at most 64, not starting with . _ -)"
                ),
            )),
        }
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    pub fn version(&self) -> &str {
        &self.version
    }
}

impl fmt::Display for ReleaseTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.release, self.version)
    }
}

impl TryFrom<String> for ReleaseTag {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ReleaseTag::parse("tag", &s).map_err(|e| e.to_string())
    }
}

impl From<ReleaseTag> for String {
    fn from(t: ReleaseTag) -> String {
        t.to_string()
    }
}

/// What happened to one node's change when it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeOutcome {
    /// The boot service holds the change.
    Applied,
    /// The boot service refused it or could not be reached: the node is
    /// as it was (`reason` says why).
    Failed { reason: String },
    /// Not tried: an earlier node failed, and the change stopped there.
    NotAttempted,
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
    /// Once applied: whether the boot service took it. Changes are applied
    /// node by node, in order, and stop at the first failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<NodeOutcome>,
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
            Action::Rollback => writeln!(f, "roll back {}", self.selection)?,
            Action::Tag { .. } => writeln!(f, "{}", self.action)?,
            other => writeln!(f, "{other} to {}", self.selection)?,
        }
        for c in self.written() {
            writeln!(f, "{}:{}", c.xname, outcome_note(&c.outcome))?;
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
    let has_priority = [before, after]
        .iter()
        .any(|e| e.as_ref().is_some_and(|e| e.priority.is_some()));
    let names: &[&str] = if has_priority {
        &["kernel", "initrd", "params", "priority"]
    } else {
        &["kernel", "initrd", "params"]
    };
    for &name in names {
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
        "priority" => e.priority.map(|p| p.to_string()),
        _ => e.params.clone(),
    });
    value.unwrap_or_else(|| "(none)".into())
}

/// ` applied`, ` FAILED: reason`, ` not attempted`, or nothing before
/// the change was applied.
fn outcome_note(o: &Option<NodeOutcome>) -> String {
    match o {
        None => String::new(),
        Some(NodeOutcome::Applied) => " applied".into(),
        Some(NodeOutcome::Failed { reason }) => format!(" FAILED: {reason}"),
        Some(NodeOutcome::NotAttempted) => " not attempted".into(),
    }
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
    /// The release tags that name `image` now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<ReleaseTag>,
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
    /// Publish an image to part of an SMD group first, at the canary
    /// priority: named members of the group, or the first `count` of its
    /// members in xname order.
    Canary {
        /// `NAME/VERSION/ARCH`; or
        #[serde(default)]
        image: Option<String>,
        /// the compose whose `boot` target published the image.
        #[serde(default)]
        compose_id: Option<Uuid>,
        group: String,
        canary: CanaryNodes,
        #[serde(default)]
        extra_params: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Every node of the group to exactly what its canary boots (the same
    /// store keys, nothing rebuilt), at the group's priority.
    Promote {
        group: String,
        /// The canary deployment to promote; by default the tenant's latest
        /// canary of the group.
        #[serde(default)]
        canary: Option<String>,
        #[serde(default)]
        dry_run: bool,
        /// The canary's image, found by the composer in the tenant's history.
        #[serde(skip)]
        #[schema(ignore)]
        image: Option<ImageRef>,
    },
    /// Name a published image with a release tag (`compute:2026.12`). A tag
    /// that names another image moves only with `force`.
    Tag {
        #[serde(default)]
        image: Option<String>,
        #[serde(default)]
        compose_id: Option<Uuid>,
        tag: String,
        #[serde(default)]
        force: bool,
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
    /// The compose a publish, canary or tag names instead of an image, if
    /// it does.
    pub fn compose_id(&self) -> Option<Uuid> {
        match self {
            BootChangeRequest::Publish {
                image: None,
                compose_id,
                ..
            }
            | BootChangeRequest::Canary {
                image: None,
                compose_id,
                ..
            }
            | BootChangeRequest::Tag {
                image: None,
                compose_id,
                ..
            } => *compose_id,
            _ => None,
        }
    }

    /// The same change naming `image` (what its compose published) instead.
    pub fn with_image(mut self, found: &ImageRef) -> BootChangeRequest {
        if let BootChangeRequest::Publish {
            image, compose_id, ..
        }
        | BootChangeRequest::Canary {
            image, compose_id, ..
        }
        | BootChangeRequest::Tag {
            image, compose_id, ..
        } = &mut self
        {
            *image = Some(found.to_string());
            *compose_id = None;
        }
        self
    }

    /// The group and canary a promotion names (`None`: the latest).
    pub fn promotion(&self) -> Option<(&str, Option<&str>)> {
        match self {
            BootChangeRequest::Promote { group, canary, .. } => {
                Some((group.as_str(), canary.as_deref()))
            }
            _ => None,
        }
    }

    /// A promotion of canary deployment `id`, which runs `found`.
    pub fn with_canary(mut self, id: &str, found: &ImageRef) -> BootChangeRequest {
        if let BootChangeRequest::Promote { canary, image, .. } = &mut self {
            *canary = Some(id.to_owned());
            *image = Some(found.clone());
        }
        self
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
            } => BootChange::Publish {
                image: one_image(image, compose_id)?,
                nodes: nodes(&n)?,
                extra_params: checked_params(extra_params)?,
                dry_run,
            },
            BootChangeRequest::Canary {
                image,
                compose_id,
                group,
                canary,
                extra_params,
                dry_run,
            } => BootChange::Canary {
                image: one_image(image, compose_id)?,
                nodes: group_of(&group)?,
                canary: canary.check()?,
                extra_params: checked_params(extra_params)?,
                dry_run,
            },
            BootChangeRequest::Promote {
                group,
                canary,
                dry_run,
                image,
            } => {
                let nodes = group_of(&group)?;
                let (Some(canary), Some(image)) = (canary, image) else {
                    return Err(FieldError::new(
                        ErrorKind::InvalidField,
                        "canary",
                        format!("no canary of group {group:?} to promote"),
                    ));
                };
                // A deployment id becomes a key of the boot store.
                check_segment(&canary)
                    .map_err(|r| FieldError::new(ErrorKind::InvalidField, "canary", r))?;
                BootChange::Promote {
                    image,
                    nodes,
                    canary,
                    dry_run,
                }
            }
            BootChangeRequest::Tag {
                image,
                compose_id,
                tag,
                force,
            } => BootChange::Tag {
                image: one_image(image, compose_id)?,
                tag: ReleaseTag::parse("tag", &tag)?,
                force,
            },
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

/// The image a change names: exactly one of `image` and `compose_id`,
/// the compose already replaced by its image ([`BootChangeRequest::with_image`]).
fn one_image(image: Option<String>, compose_id: Option<Uuid>) -> Result<ImageRef, FieldError> {
    match (image, compose_id) {
        (Some(image), None) => ImageRef::parse("image", &image),
        _ => Err(FieldError::new(
            ErrorKind::InvalidField,
            "image",
            "name the image (NAME/VERSION/ARCH) or the compose that published it (compose_id), not both",
        )),
    }
}

fn checked_params(extra_params: String) -> Result<String, FieldError> {
    if extra_params.len() > 4096 || extra_params.contains(['\n', '\r', '\0']) {
        return Err(FieldError::new(
            ErrorKind::InvalidField,
            "extra_params",
            "one line of at most 4096 bytes",
        ));
    }
    Ok(extra_params)
}

fn group_of(group: &str) -> Result<NodeSelection, FieldError> {
    NodeSelection::group(group).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.strip_prefix("nodes.group: ").unwrap_or(&reason);
        FieldError::new(ErrorKind::InvalidField, "group", reason)
    })
}

/// Which members of the group a canary takes, as a caller writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryNodes {
    /// These members of the group; or
    #[serde(default)]
    pub xnames: Option<Vec<String>>,
    /// the first `count` members in xname order (fewer than the group).
    #[serde(default)]
    pub count: Option<u32>,
}

impl CanaryNodes {
    fn check(self) -> Result<Canaries, FieldError> {
        match (self.xnames, self.count) {
            (Some(xs), None) if !xs.is_empty() => {
                let mut out = Vec::with_capacity(xs.len());
                for (i, x) in xs.iter().enumerate() {
                    out.push(
                        Xname::parse(&format!("canary.xnames[{i}]"), x).map_err(|e| {
                            FieldError::new(ErrorKind::InvalidField, e.field(), e.to_string())
                        })?,
                    );
                }
                Ok(Canaries::Xnames(out))
            }
            (None, Some(n)) if (1..=10_000).contains(&n) => Ok(Canaries::Count(n)),
            (None, Some(_)) => Err(FieldError::new(
                ErrorKind::InvalidField,
                "canary.count",
                "a count of 1 to 10000 nodes",
            )),
            _ => Err(FieldError::new(
                ErrorKind::InvalidField,
                "canary",
                "name the canary nodes (xnames) or how many (count), exactly one",
            )),
        }
    }
}

/// A canary's nodes, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canaries {
    Xnames(Vec<Xname>),
    Count(u32),
}

impl fmt::Display for Canaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Canaries::Xnames(xs) => {
                let names: Vec<&str> = xs.iter().map(Xname::as_str).collect();
                write!(f, "{}", names.join(","))
            }
            Canaries::Count(n) => write!(f, "{n} node(s)"),
        }
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
    /// `nodes` is the group.
    Canary {
        image: ImageRef,
        nodes: NodeSelection,
        canary: Canaries,
        extra_params: String,
        dry_run: bool,
    },
    /// `nodes` is the group; `canary` the deployment, which runs `image`.
    Promote {
        image: ImageRef,
        nodes: NodeSelection,
        canary: String,
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
    Tag {
        image: ImageRef,
        tag: ReleaseTag,
        force: bool,
    },
}

impl BootChange {
    /// The nodes the change selects (a canary's and a promotion's: the
    /// group); a tag selects none.
    pub fn nodes(&self) -> Option<&NodeSelection> {
        match self {
            BootChange::Publish { nodes, .. }
            | BootChange::Canary { nodes, .. }
            | BootChange::Promote { nodes, .. }
            | BootChange::Rollback { nodes, .. }
            | BootChange::Show { nodes } => Some(nodes),
            BootChange::Tag { .. } => None,
        }
    }

    /// The image the change points nodes at or tags.
    pub fn image(&self) -> Option<&ImageRef> {
        match self {
            BootChange::Publish { image, .. }
            | BootChange::Canary { image, .. }
            | BootChange::Promote { image, .. }
            | BootChange::Tag { image, .. } => Some(image),
            BootChange::Rollback { .. } | BootChange::Show { .. } => None,
        }
    }

    /// Whether the change writes to the boot service or store when it runs.
    pub fn writes(&self) -> bool {
        match self {
            BootChange::Publish { dry_run, .. }
            | BootChange::Canary { dry_run, .. }
            | BootChange::Promote { dry_run, .. }
            | BootChange::Rollback { dry_run, .. } => !dry_run,
            BootChange::Tag { .. } => true,
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
            Action::Tag { .. } => self.action.to_string(),
            other => format!("{other} to {}", self.selection),
        };
        writeln!(
            f,
            "{}  {}  {what}  by {who} (tenant {})",
            self.created_at.format("%Y-%m-%d %H:%M:%S"),
            self.id,
            self.requested_by.tenant
        )?;
        if let Some(reason) = &self.failed {
            writeln!(
                f,
                "FAILED part way, the boot service may hold some of it: {reason}"
            )?;
        }
        for c in self
            .changes
            .iter()
            .filter(|c| !self.unchanged.contains(&c.xname))
        {
            writeln!(f, "{}:{}", c.xname, outcome_note(&c.outcome))?;
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
        assert_eq!(ok.nodes().unwrap().describe(), "xnames x1000c0s0b0n0");
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
            (
                json!({"action": "canary", "image": "a/b/c", "group": "Compute!", "canary": {"count": 1}}),
                "group",
            ),
            (
                json!({"action": "canary", "image": "a/b/c", "group": "g", "canary": {"count": 0}}),
                "canary.count",
            ),
            (
                json!({"action": "canary", "image": "a/b/c", "group": "g", "canary": {"xnames": ["x1c0s0b0n0", "n1"]}}),
                "canary.xnames[1]",
            ),
            (
                json!({"action": "canary", "image": "a/b/c", "group": "g", "canary": {"xnames": ["x1c0s0b0n0"], "count": 1}}),
                "canary",
            ),
            (
                json!({"action": "canary", "image": "a/b/c", "group": "g", "canary": {"count": 1}, "extra_params": "a\rb"}),
                "extra_params",
            ),
            // A promotion's canary is found by the composer; unresolved, it
            // is refused.
            (json!({"action": "promote", "group": "g"}), "canary"),
            (
                json!({"action": "tag", "image": "a/b/c", "tag": "compute"}),
                "tag",
            ),
            (
                json!({"action": "tag", "image": "a/b/c", "tag": "compute:.x"}),
                "tag",
            ),
            (json!({"action": "tag", "tag": "compute:1"}), "image"),
        ] {
            let e = read(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.field, field, "{v}: {e}");
        }
        let promote = serde_json::from_value::<BootChangeRequest>(
            json!({"action": "promote", "group": "compute"}),
        )
        .unwrap()
        .with_canary(
            "20261207T120000.000Z-1a2b3c4d",
            &ImageRef::parse("i", "compute/v1/x86_64").unwrap(),
        )
        .check()
        .unwrap();
        assert_eq!(promote.image().unwrap().to_string(), "compute/v1/x86_64");
        let e = serde_json::from_value::<BootChangeRequest>(
            json!({"action": "promote", "group": "compute"}),
        )
        .unwrap()
        .with_canary(
            "../_tags/x",
            &ImageRef::parse("i", "compute/v1/x86_64").unwrap(),
        )
        .check()
        .unwrap_err();
        assert_eq!(e.field, "canary");
        assert!(promote.writes());
        let tag =
            read(json!({"action": "tag", "image": "compute/v1/x86_64", "tag": "compute:2026.12"}))
                .unwrap();
        assert!(tag.nodes().is_none() && tag.writes());
        assert!(
            serde_json::from_value::<BootChangeRequest>(
                json!({"action": "promote", "group": "g", "image": "a/b/c"})
            )
            .is_err(),
            "a promotion's image is not the caller's to name"
        );
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
