//! What the compose API answers about composes: status, lists, logs,
//! manifests, metadata, and (kiln extension) job graphs. The events of a
//! compose are in [`crate::events`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
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

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageStatus {
    pub status: ImageStatusValue,
    pub progress: Option<Progress>,
    pub upload_status: Option<UploadStatus>,
    pub upload_statuses: Option<Vec<UploadStatus>>,
    pub error: Option<ComposeStatusError>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
    pub subprogress: Option<SubProgress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubProgress {
    pub done: i64,
    pub total: i64,
}

/// How one upload target of an image went. `options` is the reference's
/// per-target object; [`UploadStatus::details`] reads it as
/// [`UploadDetails`], and the constructors write it from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    pub status: UploadStatusValue,
    #[serde(rename = "type")]
    pub target_type: String,
    #[schema(value_type = Object)]
    pub options: Value,
}

/// The upload target kind that publishes boot images.
pub const BOOT_TARGET: &str = "boot";

impl UploadStatus {
    /// A successful upload to object storage (`local`, `aws.s3`, `gcp`, `azure`).
    pub fn stored(target_type: &str, upload: &StoredUpload) -> UploadStatus {
        UploadStatus {
            status: UploadStatusValue::Success,
            target_type: target_type.to_owned(),
            options: serde_json::json!(upload),
        }
    }

    /// A successful `boot` publication (or its dry run).
    pub fn booted(upload: &BootUpload) -> UploadStatus {
        UploadStatus {
            status: UploadStatusValue::Success,
            target_type: BOOT_TARGET.to_owned(),
            options: serde_json::json!(upload),
        }
    }

    /// A failed upload, with its reason and the files that made it.
    pub fn failed(target_type: &str, failure: &UploadFailure) -> UploadStatus {
        UploadStatus {
            status: UploadStatusValue::Failure,
            target_type: target_type.to_owned(),
            options: serde_json::json!(failure),
        }
    }

    /// The options as their type: by status, then by target kind.
    pub fn details(&self) -> Result<UploadDetails, serde_json::Error> {
        Ok(match self.status {
            UploadStatusValue::Failure => {
                UploadDetails::Failed(UploadFailure::deserialize(&self.options)?)
            }
            _ if self.target_type == BOOT_TARGET => {
                UploadDetails::Boot(Box::new(BootUpload::deserialize(&self.options)?))
            }
            _ => UploadDetails::Stored(StoredUpload::deserialize(&self.options)?),
        })
    }
}

/// What an upload status's options say.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadDetails {
    Stored(StoredUpload),
    Boot(Box<BootUpload>),
    Failed(UploadFailure),
}

/// Where an image's files went in object storage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredUpload {
    /// The first file's URL (the image itself).
    pub url: Option<String>,
    #[serde(default)]
    pub files: Vec<UploadedFile>,
}

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedFile {
    pub name: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

/// A boot image published (or planned, for a dry run): the plan (what
/// each node boots before and after), the image in the store and its files.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootUpload {
    pub dry_run: bool,
    pub plan: crate::boot::Plan,
    pub image: Option<crate::boot::ImageRef>,
    /// The root file system's URL.
    pub url: Option<String>,
    pub files: Option<crate::boot::BootFiles>,
    pub kernel_cmdline: Option<String>,
}

/// Why an upload failed; `files` lists what was uploaded before it did.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadFailure {
    pub reason: String,
    pub files: Option<Vec<UploadedFile>>,
}

#[skip_serializing_none]
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeStatusError {
    pub id: u32,
    pub reason: String,
    pub details: Option<ImageErrorDetails>,
}

/// The job an image's error comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageErrorDetails {
    pub job: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
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
    pub image_builds: Vec<ImageBuildLog>,
}

/// The jobs of one image, as `GET /composes/{id}/logs` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBuildLog {
    pub image: usize,
    pub jobs: Vec<JobLog>,
}

/// One job: how it ended, and its result as the job contract types it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLog {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: String,
    pub reason: Option<String>,
    pub result: Option<Value>,
    /// The lines its worker reported while it ran (a build: the executor's
    /// output), kept after it ended; absent when it reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<StoredJobLog>,
}

/// A job's log as the composer keeps it: bounded (the oldest lines go
/// first) and compressed once the job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJobLog {
    /// The lines, each ending in a newline.
    pub text: String,
    /// How many lines `text` holds.
    pub lines: i64,
    /// How many earlier lines were dropped to keep the log bounded.
    pub dropped: i64,
    /// False while the job may still add lines.
    pub complete: bool,
}

impl JobLog {
    /// The job's result, read by its kind; `None` when it has none.
    pub fn result(&self) -> Option<Result<crate::jobs::JobResult, crate::jobs::JobError>> {
        let result = self.result.as_ref()?;
        Some(
            crate::jobs::JobKind::parse(&self.job_type)
                .and_then(|k| crate::jobs::JobResult::decode(k, result)),
        )
    }
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

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeMetadata {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    /// The packages of the images, once depsolved.
    pub packages: Option<Vec<PackageMetadata>>,
    pub request: ComposeRequest,
}

impl From<crate::depsolve::DepsolvedPackage> for PackageMetadata {
    fn from(p: crate::depsolve::DepsolvedPackage) -> Self {
        PackageMetadata {
            package_type: p.package_type,
            name: p.name,
            version: p.version,
            release: p.release,
            epoch: p.epoch,
            arch: p.arch,
            sigmd5: p.sigmd5,
            checksum: Some(p.checksum),
        }
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageMetadata {
    #[serde(rename = "type")]
    pub package_type: String,
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<String>,
    pub arch: String,
    pub sigmd5: String,
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
#[skip_serializing_none]
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
    pub reason: Option<String>,
    pub retries: i32,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The request id (`X-Request-Id`) of the API call that made the job.
    #[schema(value_type = Option<String>)]
    pub request_id: Option<crate::request_id::RequestId>,
}
