//! What the compose API tells about distributions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

/// A repository of a distribution, as `GET /distributions` lists it.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlueprintRepository {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseurls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpgkeys: Vec<String>,
    pub name: Option<String>,
    pub gpgcheck: Option<bool>,
    pub repo_gpgcheck: Option<bool>,
    /// Debian suite. kiln extension.
    pub suite: Option<String>,
    /// Debian components. kiln extension.
    pub components: Option<Vec<String>>,
}

/// `GET /distributions`: distribution → architecture → repositories.
pub type DistributionList = BTreeMap<String, BTreeMap<String, Vec<BlueprintRepository>>>;

/// `GET /distributions/{distro}`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DistributionDetails {
    pub id: String,
    pub kind: String,
    pub href: String,
    pub name: String,
    pub codename: Option<String>,
    pub releasever: Option<String>,
    pub os_version: Option<String>,
    pub product: Option<String>,
    pub architectures: BTreeMap<String, ArchitectureInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArchitectureInfo {
    pub name: String,
    pub image_types: BTreeMap<String, ImageTypeInfo>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageTypeInfo {
    pub name: String,
    pub filename: Option<String>,
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_package_sets: Vec<String>,
}
