//! Stored blueprints (kiln extension): what `/blueprints` answers and takes,
//! written by the composer and read by the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::compose::ImageRequest;
use crate::customizations::Blueprint;

/// A stored version of a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredBlueprint {
    pub name: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub blueprint: Blueprint,
}

/// The latest version of each stored blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlueprintList {
    pub blueprints: Vec<BlueprintSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlueprintSummary {
    pub name: String,
    pub version: i64,
    pub distro: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /blueprints/{name}/compose`: the images to build from a stored blueprint.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintComposeRequest {
    /// A stored version; the latest without it.
    pub version: Option<i64>,
    pub image_request: Option<ImageRequest>,
    pub image_requests: Option<Vec<ImageRequest>>,
}

/// `DELETE /blueprints/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlueprintDeleted {
    pub name: String,
    /// Always true: a blueprint that did not exist is a 404.
    pub deleted: bool,
}
