//! The compose request.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::customizations::{Blueprint, Customizations};
use crate::error::{ErrorKind, FieldError};
use crate::nodes::{NodeSelection, EXACTLY_ONE};
use crate::status::BOOT_TARGET;

/// A request for one or more images of one distribution.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeRequest {
    /// Distribution name, as listed by `GET /distributions` (e.g. `debian-12`).
    pub distribution: String,
    /// A single image; `image_requests` asks for several.
    pub image_request: Option<ImageRequest>,
    pub image_requests: Option<Vec<ImageRequest>>,
    /// Customizations in the Cloud API shape. Not together with `blueprint`.
    pub customizations: Option<Customizations>,
    /// Customizations as a blueprint. Not together with `customizations`.
    pub blueprint: Option<Blueprint>,
}

impl ImageRequest {
    /// The repositories asked for; empty: the distribution's own.
    pub fn repositories(&self) -> &[Repository] {
        self.repositories.as_deref().unwrap_or_default()
    }
}

impl ComposeRequest {
    /// Every image request with the JSON path it came from.
    pub fn images(&self) -> Vec<(String, &ImageRequest)> {
        let mut out = Vec::new();
        if let Some(r) = &self.image_request {
            out.push(("image_request".to_string(), r));
        }
        for (i, r) in self.image_requests.iter().flatten().enumerate() {
            out.push((format!("image_requests[{i}]"), r));
        }
        out
    }
}

/// One image: its architecture, type, repositories and destinations.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// `x86_64` or `aarch64`, as the distribution lists.
    pub architecture: String,
    /// An image type of the distribution for this architecture: `tar`, `pxe`, `disk`, `oci`.
    pub image_type: String,
    /// Repositories to build from. Empty or absent: the distribution's own.
    /// Kept as submitted (absent, empty or listed), so that the compose's
    /// metadata echoes the request; the reference requires the field.
    pub repositories: Option<Vec<Repository>>,
    /// Where the image goes; each target is uploaded to separately.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upload_targets: Vec<UploadTarget>,
    /// Options for one target of the image type's default kind (`local`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "local_shorthand"
    )]
    pub upload_options: Option<LocalUploadOptions>,
    /// Image size in bytes; 0 means the image type's minimum.
    pub size: Option<u64>,
}

/// A package repository. Debian repositories add `suite` and `components`
/// (a kiln extension) to the reference's fields.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub baseurl: Option<String>,
    pub mirrorlist: Option<String>,
    pub metalink: Option<String>,
    /// Signing key (ASCII-armoured) for this repository.
    pub gpgkey: Option<String>,
    pub check_gpg: Option<bool>,
    pub check_repo_gpg: Option<bool>,
    pub ignore_ssl: Option<bool>,
    pub rhsm: Option<bool>,
    pub module_hotfixes: Option<bool>,
    pub package_sets: Option<Vec<String>>,
    /// Debian suite (e.g. `bookworm`). kiln extension.
    pub suite: Option<String>,
    /// Debian components (e.g. `["main"]`). kiln extension.
    pub components: Option<Vec<String>>,
}

/// Upload target kinds kiln knows.
pub const UPLOAD_TYPES: &[&str] = &["local", "aws.s3", "gcp", "azure", "boot"];

/// One destination of an image, tagged by its `type` with that type's
/// `upload_options`. Credentials and endpoints live in the worker's
/// configuration, never here.
///
/// Read once, where a request is read: an unknown type or options that do
/// not fit it are an [`ErrorKind::InvalidUploadTarget`] naming the field
/// (see [`UploadTarget::from_parts`]); every later reader matches on the
/// variant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", content = "upload_options")]
pub enum UploadTarget {
    #[serde(rename = "local")]
    Local(LocalUploadOptions),
    #[serde(rename = "aws.s3")]
    AwsS3(AwsS3UploadOptions),
    #[serde(rename = "gcp")]
    Gcp(GcpUploadOptions),
    #[serde(rename = "azure")]
    Azure(AzureUploadOptions),
    #[serde(rename = "boot")]
    Boot(BootUploadOptions),
}

fn target_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::InvalidUploadTarget, field, message)
}

/// `options` as `T`; an error names `field`.
fn fit<T: DeserializeOwned>(field: &str, options: Value) -> Result<T, FieldError> {
    T::deserialize(options).map_err(|e| target_error(field, e.to_string()))
}

impl UploadTarget {
    /// The target's `type`, as the request names it.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadTarget::Local(_) => "local",
            UploadTarget::AwsS3(_) => "aws.s3",
            UploadTarget::Gcp(_) => "gcp",
            UploadTarget::Azure(_) => "azure",
            UploadTarget::Boot(_) => BOOT_TARGET,
        }
    }

    /// A target from its `type` and `upload_options`. Errors are
    /// [`ErrorKind::InvalidUploadTarget`], their field relative to the
    /// target (`type`, `upload_options`, `upload_options.nodes.xnames[1]`).
    pub fn from_parts(kind: &str, options: Value) -> Result<UploadTarget, FieldError> {
        const OPTIONS: &str = "upload_options";
        Ok(match kind {
            "local" => UploadTarget::Local(fit(OPTIONS, options)?),
            "aws.s3" => UploadTarget::AwsS3(fit(OPTIONS, options)?),
            "gcp" => UploadTarget::Gcp(fit(OPTIONS, options)?),
            "azure" => UploadTarget::Azure(fit(OPTIONS, options)?),
            "boot" => UploadTarget::Boot(BootUploadOptions::from_wire(fit(OPTIONS, options)?)?),
            other => {
                return Err(target_error(
                    "type",
                    format!(
                        "unknown upload target type {other:?}; known: {}",
                        UPLOAD_TYPES.join(", ")
                    ),
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for UploadTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The target as it is written; its shape's errors are serde's own.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename = "UploadTarget")]
        struct Wire {
            #[serde(rename = "type")]
            kind: String,
            upload_options: Value,
        }
        let w = Wire::deserialize(d)?;
        UploadTarget::from_parts(&w.kind, w.upload_options).map_err(FieldError::into_serde)
    }
}

/// `image_request.upload_options`: the options of one more `local` target.
fn local_shorthand<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<LocalUploadOptions>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        // The field itself is at fault: the path serde is at names it.
        Some(v) => fit("", v).map(Some).map_err(FieldError::into_serde),
    }
}

/// Options of the `local` target: none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalUploadOptions {}

/// Options of the `aws.s3` target.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsS3UploadOptions {
    pub region: String,
    pub public: Option<bool>,
}

/// Options of the `gcp` target.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcpUploadOptions {
    pub region: String,
    pub bucket: Option<String>,
    pub image_name: Option<String>,
    pub share_with_accounts: Option<Vec<String>>,
}

/// Options of the `azure` target.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureUploadOptions {
    pub tenant_id: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: Option<String>,
    pub image_name: Option<String>,
    pub hyper_v_generation: Option<String>,
}

/// Options of the `boot` target (kiln extension, `pxe` images only): the
/// kernel, initrd and squashfs go to the cluster's boot image store, and
/// the selected nodes' boot parameters in OpenCHAMI BSS point at them.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BootUploadOptions {
    /// The image's name in the store (one key segment: letters, digits, `._+-`).
    pub image_name: String,
    #[schema(value_type = BootNodes)]
    pub nodes: NodeSelection,
    /// Appended to the image's kernel command line (e.g. `ip=dhcp`).
    pub extra_params: Option<String>,
    /// Upload nothing and change nothing: the status shows what would change.
    pub dry_run: Option<bool>,
}

/// The `boot` options as they are written, before their names are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "BootUploadOptions")]
struct BootWire {
    image_name: String,
    nodes: BootNodes,
    #[serde(default)]
    extra_params: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
}

impl BootUploadOptions {
    fn from_wire(w: BootWire) -> Result<BootUploadOptions, FieldError> {
        let name = &w.image_name;
        if name.is_empty()
            || name.starts_with(['_', '.'])
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return Err(target_error(
                "upload_options.image_name",
                format!(
                    "{name:?}: one key segment of letters, digits and ._+- not starting with _ or ."
                ),
            ));
        }
        let nodes = NodeSelection::from_request(&w.nodes).map_err(|e| match e.field() {
            // The rule names the object; a bad value names itself.
            "nodes" => target_error("upload_options.nodes", EXACTLY_ONE),
            field => target_error(&format!("upload_options.{field}"), e.to_string()),
        })?;
        Ok(BootUploadOptions {
            image_name: w.image_name,
            nodes,
            extra_params: w.extra_params,
            dry_run: w.dry_run,
        })
    }
}

/// Which nodes boot the image: exactly one of the four (as written; read
/// into a [`NodeSelection`]).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootNodes {
    pub xnames: Option<Vec<String>>,
    pub macs: Option<Vec<String>>,
    pub nids: Option<Vec<u32>>,
    /// An SMD group label.
    pub group: Option<String>,
}

/// The id of a new compose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeId {
    pub id: uuid::Uuid,
    pub kind: String,
    pub href: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<UploadTarget, FieldError> {
        let e = match serde_json::from_value::<UploadTarget>(v) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        Err(FieldError::from_serde(&e.to_string()).unwrap_or_else(|| panic!("{e}")))
    }

    #[test]
    fn targets_keep_their_wire_shape() {
        for wire in [
            json!({"type": "local", "upload_options": {}}),
            json!({"type": "aws.s3", "upload_options": {"region": "eu-west-1", "public": true}}),
            json!({"type": "gcp", "upload_options": {"region": "eu", "bucket": "b"}}),
            json!({"type": "azure", "upload_options": {"tenant_id": "t", "subscription_id": "s", "resource_group": "g"}}),
            json!({"type": "boot", "upload_options": {"image_name": "compute", "nodes": {"xnames": ["x1000c0s0b0n0"]}, "dry_run": true}}),
        ] {
            let t = read(wire.clone()).unwrap();
            assert_eq!(t.kind(), wire["type"]);
            assert_eq!(serde_json::to_value(&t).unwrap(), wire);
        }
        let t = read(json!({"type": "boot", "upload_options": {"image_name": "c", "nodes": {"group": "compute"}}})).unwrap();
        let UploadTarget::Boot(o) = t else {
            panic!("{t:?}")
        };
        assert_eq!(o.nodes, NodeSelection::Group("compute".into()));
    }

    #[test]
    fn hostile_targets_name_their_field() {
        for (wire, field, message) in [
            (
                json!({"type": "dropbox", "upload_options": {}}),
                "type",
                "unknown upload target type \"dropbox\"; known: local, aws.s3, gcp, azure, boot",
            ),
            (
                json!({"type": "aws.s3", "upload_options": {}}),
                "upload_options",
                "missing field `region`",
            ),
            (
                json!({"type": "local", "upload_options": {"secret_key": "x"}}),
                "upload_options",
                "unknown field `secret_key`, there are no fields",
            ),
            (
                json!({"type": "boot", "upload_options": {"image_name": "../etc", "nodes": {"group": "g"}}}),
                "upload_options.image_name",
                "\"../etc\": one key segment of letters, digits and ._+- not starting with _ or .",
            ),
            (
                json!({"type": "boot", "upload_options": {"image_name": "c", "nodes": {"group": "g", "nids": [1]}}}),
                "upload_options.nodes",
                EXACTLY_ONE,
            ),
        ] {
            let e = read(wire.clone()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidUploadTarget, "{wire}");
            assert_eq!((e.field.as_str(), e.message.as_str()), (field, message));
        }
        let e = read(json!({"type": "boot", "upload_options": {"image_name": "c", "nodes": {"xnames": ["x1c0s0b0n0", "nope"]}}})).unwrap_err();
        assert_eq!(e.field, "upload_options.nodes.xnames[1]");
        assert!(e.message.starts_with("nodes.xnames[1]: \"nope\""), "{e}");
        // The target's own shape is serde's to report.
        let e = serde_json::from_value::<UploadTarget>(json!({"type": "local"})).unwrap_err();
        assert_eq!(e.to_string(), "missing field `upload_options`");
    }
}
