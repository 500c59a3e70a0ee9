//! The compose request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::customizations::{Blueprint, Customizations};

/// A request for one or more images of one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeRequest {
    /// Distribution name, as listed by `GET /distributions` (e.g. `debian-12`).
    pub distribution: String,
    /// A single image; `image_requests` asks for several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_request: Option<ImageRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_requests: Option<Vec<ImageRequest>>,
    /// Customizations in the Cloud API shape. Not together with `blueprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customizations: Option<Customizations>,
    /// Customizations as a blueprint. Not together with `customizations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<Repository>>,
    /// Where the image goes; each target is uploaded to separately.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upload_targets: Vec<UploadTarget>,
    /// Options for one target of the image type's default kind (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub upload_options: Option<Value>,
    /// Image size in bytes; 0 means the image type's minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A package repository. Debian repositories add `suite` and `components`
/// (a kiln extension) to the reference's fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrorlist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metalink: Option<String>,
    /// Signing key (ASCII-armoured) for this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpgkey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_gpg: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_repo_gpg: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_ssl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhsm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_hotfixes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_sets: Option<Vec<String>>,
    /// Debian suite (e.g. `bookworm`). kiln extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Debian components (e.g. `["main"]`). kiln extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}

/// Upload target kinds kiln knows.
pub const UPLOAD_TYPES: &[&str] = &["local", "aws.s3", "gcp", "azure", "boot"];

/// One destination of an image. Credentials and endpoints live in the
/// worker's configuration, never here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadTarget {
    /// One of `local`, `aws.s3`, `gcp`, `azure`.
    #[serde(rename = "type")]
    pub target_type: String,
    #[schema(value_type = Object)]
    pub upload_options: Value,
}

/// Options of the `local` target: none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalUploadOptions {}

/// Options of the `aws.s3` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsS3UploadOptions {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

/// Options of the `gcp` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcpUploadOptions {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_with_accounts: Option<Vec<String>>,
}

/// Options of the `azure` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureUploadOptions {
    pub tenant_id: String,
    pub subscription_id: String,
    pub resource_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyper_v_generation: Option<String>,
}

/// Options of the `boot` target (kiln extension, `pxe` images only): the
/// kernel, initrd and squashfs go to the cluster's boot image store, and
/// the selected nodes' boot parameters in OpenCHAMI BSS point at them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootUploadOptions {
    /// The image's name in the store (one key segment: letters, digits, `._+-`).
    pub image_name: String,
    pub nodes: BootNodes,
    /// Appended to the image's kernel command line (e.g. `ip=dhcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_params: Option<String>,
    /// Upload nothing and change nothing: the status shows what would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// Which nodes boot the image: exactly one of the four.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootNodes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xnames: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nids: Option<Vec<u32>>,
    /// An SMD group label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The id of a new compose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeId {
    pub id: uuid::Uuid,
    pub kind: String,
    pub href: String,
}
