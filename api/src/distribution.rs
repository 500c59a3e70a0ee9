//! What the compose API tells about distributions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A repository of a distribution, as `GET /distributions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlueprintRepository {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseurls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpgkeys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpgcheck: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_gpgcheck: Option<bool>,
    /// Debian suite. kiln extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Debian components. kiln extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}

/// `GET /distributions`: distribution → architecture → repositories.
pub type DistributionList = BTreeMap<String, BTreeMap<String, Vec<BlueprintRepository>>>;

/// `GET /distributions/{distro}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DistributionDetails {
    pub id: String,
    pub kind: String,
    pub href: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releasever: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    pub architectures: BTreeMap<String, ArchitectureInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArchitectureInfo {
    pub name: String,
    pub image_types: BTreeMap<String, ImageTypeInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageTypeInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_package_sets: Vec<String>,
}
