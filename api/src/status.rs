//! What the compose API answers about composes: status, lists, logs,
//! manifests, metadata, and (kiln extension) job graphs. The events of a
//! compose are in [`crate::events`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::compose::ComposeRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComposeStatusValue {
    Success,
    Failure,
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatusValue {
    Success,
    Failure,
    Pending,
    Building,
    Uploading,
    Registering,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatusValue {
    Success,
    Failure,
    Pending,
    Running,
}

/// The status of a compose and of each of its images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeStatus {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    pub status: ComposeStatusValue,
    /// The first image's status (the reference's single-image field).
    pub image_status: ImageStatus,
    pub image_statuses: Vec<ImageStatus>,
    /// True when the compose was canceled. kiln extension.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canceled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageStatus {
    pub status: ImageStatusValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_status: Option<UploadStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_statuses: Option<Vec<UploadStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ComposeStatusError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subprogress: Option<SubProgress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubProgress {
    pub done: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    pub status: UploadStatusValue,
    #[serde(rename = "type")]
    pub target_type: String,
    #[schema(value_type = Object)]
    pub options: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeStatusError {
    pub id: u32,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeList {
    pub kind: String,
    pub page: i64,
    pub size: i64,
    pub total: i64,
    pub items: Vec<ComposeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeLogs {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    /// One entry per image: the results and log lines of its jobs.
    #[schema(value_type = Vec<Object>)]
    pub image_builds: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeManifests {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    /// One osbuild v2 manifest per image whose manifest is ready.
    #[schema(value_type = Vec<Object>)]
    pub manifests: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeMetadata {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    /// The packages of the images, once depsolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<PackageMetadata>>,
    pub request: ComposeRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageMetadata {
    #[serde(rename = "type")]
    pub package_type: String,
    pub name: String,
    pub version: String,
    pub release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    pub arch: String,
    pub sigmd5: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// `DELETE /composes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeDeleteStatus {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
}

/// The job graph of a compose. kiln extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeJobs {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    pub jobs: Vec<JobInfo>,
}

/// One job of a compose's graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub arch: String,
    /// `waiting`, `queued`, `running`, `success`, `failed` or `canceled`.
    pub state: String,
    /// Index of the image (in request order) the job works for.
    pub image: usize,
    pub dependencies: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub retries: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}
