//! A compose's status, derived from its request and the states of its jobs.
//! Nothing is stored twice: the queue is the one source of truth.

use kiln_api::compose::ComposeRequest;
use kiln_api::jobs::{Build, JobKind};
use kiln_api::status::{
    ComposeStatus, ComposeStatusError, ComposeStatusValue, ImageErrorDetails, ImageStatus,
    ImageStatusValue, JobInfo, UploadStatus,
};
use kiln_api::worker::BuildPhase;
use kiln_api::API_PREFIX;
use kiln_queue::{ComposeRecord, Job, JobState};

use crate::live::LiveJobs;

/// Error ids in `image_status.error.id`.
pub const IMAGE_ERROR_CANCELED: u32 = 100;
pub const IMAGE_ERROR_JOB_FAILED: u32 = 101;

pub fn compose_href(id: uuid::Uuid) -> String {
    format!("{API_PREFIX}/composes/{id}")
}

/// Which image (in request order) a job works for.
pub fn image_of(job: &Job) -> usize {
    crate::jobs::image(job)
}

pub fn job_info(job: &Job) -> JobInfo {
    JobInfo {
        id: job.id,
        job_type: job.job_type.clone(),
        arch: job.arch.clone(),
        state: job.state.as_str().into(),
        image: image_of(job),
        dependencies: job.dependencies.clone(),
        reason: job.reason.clone(),
        retries: job.retries,
        worker: job.worker.clone(),
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        request_id: job
            .request_id
            .as_deref()
            .and_then(kiln_api::request_id::RequestId::parse),
    }
}

/// Upload statuses as the build reported them. Before a build reports, there
/// are none: the reference's upload status needs the target's result (a URL,
/// a path), which only exists once the upload ran.
fn upload_statuses(build: Option<&Job>) -> Vec<UploadStatus> {
    build
        .and_then(crate::jobs::result::<Build>)
        .and_then(Result::ok)
        .map(|r| r.uploads)
        .unwrap_or_default()
}

fn image_status(jobs: &[&Job], live: &LiveJobs) -> ImageStatus {
    let build = jobs
        .iter()
        .copied()
        .find(|j| crate::jobs::is(j, JobKind::Build));
    let canceled = jobs.iter().find(|j| j.state == JobState::Canceled);
    let failed = jobs.iter().find(|j| j.state == JobState::Failed);
    let (status, error) = if let Some(j) = canceled {
        (
            ImageStatusValue::Failure,
            Some(ComposeStatusError {
                id: IMAGE_ERROR_CANCELED,
                reason: j.reason.clone().unwrap_or_else(|| "canceled".into()),
                details: Some(ImageErrorDetails {
                    job: j.id,
                    job_type: j.job_type.clone(),
                }),
            }),
        )
    } else if let Some(j) = failed {
        (
            ImageStatusValue::Failure,
            Some(ComposeStatusError {
                id: IMAGE_ERROR_JOB_FAILED,
                reason: format!(
                    "{} job failed: {}",
                    j.job_type,
                    j.reason.clone().unwrap_or_default()
                ),
                details: Some(ImageErrorDetails {
                    job: j.id,
                    job_type: j.job_type.clone(),
                }),
            }),
        )
    } else if !jobs.is_empty() && jobs.iter().all(|j| j.state == JobState::Success) {
        (ImageStatusValue::Success, None)
    } else if let Some(b) = build.filter(|b| b.state == JobState::Running) {
        // What the worker last said: building, or uploading the result.
        match live.get(&b.id).and_then(|l| l.phase) {
            Some(BuildPhase::Uploading) => (ImageStatusValue::Uploading, None),
            _ => (ImageStatusValue::Building, None),
        }
    } else {
        (ImageStatusValue::Pending, None)
    };
    let uploads = upload_statuses(build);
    let progress = build
        .filter(|b| b.state == JobState::Running)
        .and_then(|b| live.get(&b.id))
        .and_then(|l| l.progress.clone());
    ImageStatus {
        status,
        progress,
        upload_status: uploads.first().cloned(),
        upload_statuses: if uploads.is_empty() {
            None
        } else {
            Some(uploads)
        },
        error,
    }
}

/// A compose's status now: its jobs, and what the workers of its running
/// builds reported to any composer.
pub async fn current(
    queue: &dyn kiln_queue::JobQueue,
    compose: &ComposeRecord,
    jobs: &[Job],
) -> Result<ComposeStatus, kiln_queue::QueueError> {
    let live = crate::live::of_jobs(queue, jobs).await?;
    Ok(compose_status(compose, jobs, &live))
}

/// The status of a compose from its record, its jobs, and what the workers
/// of its running builds report.
pub fn compose_status(compose: &ComposeRecord, jobs: &[Job], live: &LiveJobs) -> ComposeStatus {
    let request: Option<ComposeRequest> = serde_json::from_value(compose.request.clone()).ok();
    let images: Vec<_> = request.as_ref().map(|r| r.images()).unwrap_or_default();
    let count = images
        .len()
        .max(jobs.iter().map(|j| image_of(j) + 1).max().unwrap_or(0))
        .max(1);
    let image_statuses: Vec<ImageStatus> = (0..count)
        .map(|i| {
            let mine: Vec<&Job> = jobs.iter().filter(|j| image_of(j) == i).collect();
            image_status(&mine, live)
        })
        .collect();
    let status = if image_statuses
        .iter()
        .any(|s| s.status == ImageStatusValue::Failure)
    {
        ComposeStatusValue::Failure
    } else if image_statuses
        .iter()
        .all(|s| s.status == ImageStatusValue::Success)
    {
        ComposeStatusValue::Success
    } else {
        ComposeStatusValue::Pending
    };
    ComposeStatus {
        id: compose.id,
        kind: "ComposeStatus".into(),
        href: compose_href(compose.id),
        status,
        image_status: image_statuses[0].clone(),
        image_statuses,
        canceled: jobs.iter().any(|j| j.state == JobState::Canceled),
    }
}

/// A compose is over once every job of it has finished.
pub fn is_finished(jobs: &[Job]) -> bool {
    jobs.iter().all(|j| j.state.is_finished())
}
