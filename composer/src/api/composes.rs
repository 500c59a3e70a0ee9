//! Composes: submit, list, inspect, cancel, delete.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use kiln_api::compose::{ComposeId, ComposeRequest};
use kiln_api::error::{Error, ErrorKind};
use kiln_api::jobs::{Build, Depsolve, JobKind, Manifest};
use kiln_api::request_id::RequestId;
use kiln_api::sbom::{ComposeSboms, ImageSbom};
use kiln_api::status::{
    ComposeDeleteStatus, ComposeJobs, ComposeList, ComposeLogs, ComposeManifests, ComposeMetadata,
    ComposeStatus, ImageBuildLog, JobLog, PackageMetadata, StoredJobLog,
};
use kiln_queue::{ComposeRecord, DeleteOutcome, Job, JobLogText, JobState};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, Compose, ComposePath, JsonBody, Need, Paging, ReqId};
use super::with_status;
use crate::jobs;
use crate::plan;
use crate::status::{self, compose_href, image_of, job_info};
use crate::AppState;

/// The compose, if it exists in the caller's channel.
pub async fn load<N: Need>(
    state: &AppState,
    caller: &Caller<N>,
    ComposePath(id): ComposePath,
) -> Result<(ComposeRecord, Vec<Job>), ApiError> {
    let compose = state
        .queue
        .compose(id)
        .await?
        .filter(|c| c.channel == caller.channel)
        .ok_or_else(|| ApiError::new(ErrorKind::ComposeNotFound, format!("no compose {id}")))?;
    let jobs = state.queue.compose_jobs(id).await?;
    Ok((compose, jobs))
}

/// Create a compose.
///
/// Validates the request against the distribution catalog, then stores the
/// compose and its job graph in one transaction. A rejected request writes nothing.
#[utoipa::path(post, path = "/compose", tag = "compose", operation_id = "postCompose",
    request_body = ComposeRequest,
    params(("X-Kiln-Channel" = Option<String>, Header, description = "Another tenant to act in (kiln:admin only); default: the token's tenant")),
    responses(
        (status = 201, description = "Compose accepted", body = ComposeId),
        (status = 400, description = "Invalid request; details.field names the field", body = Error),
        (status = 413, description = "Body too large", body = Error),
        (status = 415, description = "Not JSON", body = Error),
    ))]
pub async fn post_compose(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    ReqId(request_id): ReqId,
    JsonBody(req): JsonBody<ComposeRequest>,
) -> Result<Response, ApiError> {
    submit(&state, caller, &request_id, req).await
}

/// Validates a compose request and stores it with its job graph, each job
/// carrying the id of the request that made it.
pub async fn submit(
    state: &AppState,
    caller: Caller<Compose>,
    request_id: &RequestId,
    req: ComposeRequest,
) -> Result<Response, ApiError> {
    let jobs: Vec<_> = plan::plan(
        &req,
        &state.catalog,
        &state.config.auth.boot_grants,
        &caller.requester(),
    )?
    .into_iter()
    .map(|j| j.with_request_id(Some(request_id.to_string())))
    .collect();
    plan::check_repositories(&req, state.repos.policy()).await?;
    let compose = ComposeRecord {
        id: Uuid::new_v4(),
        channel: caller.channel,
        request: serde_json::to_value(&req).map_err(ApiError::internal)?,
        created_at: Utc::now(),
    };
    state.queue.create_compose(&compose, &jobs).await?;
    tracing::info!(compose = %compose.id, distribution = %req.distribution, images = jobs.len() / 3, "compose accepted");
    Ok(with_status(
        StatusCode::CREATED,
        ComposeId {
            id: compose.id,
            kind: "ComposeId".into(),
            href: compose_href(compose.id),
        },
    ))
}

/// List composes of the caller's channel, newest first.
#[utoipa::path(get, path = "/composes/", tag = "compose", operation_id = "getComposeList",
    params(("page" = Option<String>, Query, description = "Page index, from 0"),
           ("size" = Option<String>, Query, description = "Items per page (at most 1000)")),
    responses((status = 200, body = ComposeList), (status = 400, body = Error)))]
pub async fn list_composes(
    State(state): State<AppState>,
    // The query is judged before the channel, as it always was.
    Paging { page, size }: Paging,
    caller: Caller,
) -> Result<Json<ComposeList>, ApiError> {
    let (composes, total) = state
        .queue
        .list_composes(Some(&caller.channel), page.saturating_mul(size), size)
        .await?;
    let mut items = Vec::with_capacity(composes.len());
    for c in &composes {
        let jobs = state.queue.compose_jobs(c.id).await?;
        items.push(status::current(state.queue.as_ref(), c, &jobs).await?);
    }
    Ok(Json(ComposeList {
        kind: "ComposeList".into(),
        page,
        size: items.len() as i64,
        total,
        items,
    }))
}

/// The status of a compose and of each of its images.
#[utoipa::path(get, path = "/composes/{id}", tag = "compose", operation_id = "getComposeStatus",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeStatus), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_compose(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeStatus>, ApiError> {
    if let Some((channel, status)) = state.statuses.get(id.0) {
        if channel == caller.channel {
            return Ok(Json(status));
        }
    }
    let epoch = state.statuses.epoch();
    let (compose, jobs) = load(&state, &caller, id).await?;
    let status = status::current(state.queue.as_ref(), &compose, &jobs).await?;
    if !jobs.iter().any(|j| j.state == JobState::Running) {
        state
            .statuses
            .keep(epoch, compose.id, &compose.channel, &status);
    }
    Ok(Json(status))
}

/// Delete a finished compose and its jobs. An unfinished compose must be canceled first.
#[utoipa::path(delete, path = "/composes/{id}", tag = "compose", operation_id = "deleteCompose",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeDeleteStatus), (status = 400, body = Error),
              (status = 404, body = Error), (status = 409, description = "Not finished", body = Error)))]
pub async fn delete_compose(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    id: ComposePath,
) -> Result<Json<ComposeDeleteStatus>, ApiError> {
    let (compose, _) = load(&state, &caller, id).await?;
    let deleted = state.queue.delete_compose(compose.id).await?;
    state.statuses.forget(compose.id);
    match deleted {
        DeleteOutcome::Deleted => Ok(Json(ComposeDeleteStatus {
            id: compose.id,
            kind: "ComposeDeleteStatus".into(),
            href: compose_href(compose.id),
        })),
        DeleteOutcome::NotFound => Err(ApiError::new(
            ErrorKind::ComposeNotFound,
            format!("no compose {}", compose.id),
        )),
        DeleteOutcome::Unfinished => Err(ApiError::new(
            ErrorKind::ComposeUnfinished,
            format!("compose {} has not finished; cancel it first", compose.id),
        )),
    }
}

/// Cancel a compose in any phase: queued and running jobs stop, and the
/// compose ends as a failure marked `canceled`. Canceling a finished compose changes nothing.
#[utoipa::path(post, path = "/composes/{id}/cancel", tag = "compose", operation_id = "cancelCompose",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, description = "Status after the cancel", body = ComposeStatus),
              (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn cancel_compose(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    id: ComposePath,
) -> Result<Json<ComposeStatus>, ApiError> {
    let (compose, _) = load(&state, &caller, id).await?;
    let n = state.queue.cancel_compose(compose.id).await?;
    // Read your own writes: not only once the announcement came back.
    state.statuses.forget(compose.id);
    tracing::info!(compose = %compose.id, jobs = n.unwrap_or(0), "compose canceled");
    let jobs = state.queue.compose_jobs(compose.id).await?;
    Ok(Json(
        status::current(state.queue.as_ref(), &compose, &jobs).await?,
    ))
}

fn job_summary(j: &Job, log: Option<JobLogText>) -> JobLog {
    JobLog {
        id: j.id,
        job_type: j.job_type.clone(),
        state: j.state.as_str().into(),
        reason: j.reason.clone(),
        result: j.result.clone(),
        log: log.map(|l| StoredJobLog {
            text: l.text,
            lines: l.lines,
            dropped: l.dropped,
            complete: l.sealed,
        }),
    }
}

/// The logs of a compose: per image, each job's state, reason and result,
/// and the lines its worker reported (kept after the build).
#[utoipa::path(get, path = "/composes/{id}/logs", tag = "compose", operation_id = "getComposeLogs",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeLogs), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_logs(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeLogs>, ApiError> {
    let (compose, jobs) = load(&state, &caller, id).await?;
    let mut logs = HashMap::new();
    for j in &jobs {
        if let Some(l) = state.queue.job_log(j.id).await? {
            logs.insert(j.id, l);
        }
    }
    let images = jobs.iter().map(|j| image_of(j) + 1).max().unwrap_or(0);
    let image_builds = (0..images)
        .map(|image| ImageBuildLog {
            image,
            jobs: jobs
                .iter()
                .filter(|j| image_of(j) == image)
                .map(|j| job_summary(j, logs.remove(&j.id)))
                .collect(),
        })
        .collect();
    Ok(Json(ComposeLogs {
        id: compose.id,
        kind: "ComposeLogs".into(),
        href: format!("{}/logs", compose_href(compose.id)),
        image_builds,
    }))
}

/// The osbuild manifests of a compose, one per image whose manifest is ready.
#[utoipa::path(get, path = "/composes/{id}/manifests", tag = "compose", operation_id = "getComposeManifests",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeManifests), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_manifests(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeManifests>, ApiError> {
    let (compose, jobs) = load(&state, &caller, id).await?;
    let manifests = jobs
        .iter()
        .filter(|j| j.state == JobState::Success)
        .filter_map(|j| jobs::result::<Manifest>(j)?.ok())
        .map(|r| r.manifest)
        .collect();
    Ok(Json(ComposeManifests {
        id: compose.id,
        kind: "ComposeManifests".into(),
        href: format!("{}/manifests", compose_href(compose.id)),
        manifests,
    }))
}

/// The SBOMs of a compose's images: per image (request order), the SPDX
/// documents of its build, as the worker made them from the tree's package
/// database; an empty list for an image whose build has not succeeded.
#[utoipa::path(get, path = "/composes/{id}/sboms", tag = "compose", operation_id = "getComposeSBOMs",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeSboms), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_sboms(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeSboms>, ApiError> {
    let (compose, jobs) = load(&state, &caller, id).await?;
    let builds: Vec<&Job> = jobs
        .iter()
        .filter(|j| jobs::is(j, JobKind::Build))
        .collect();
    let images = builds.iter().map(|j| image_of(j) + 1).max().unwrap_or(0);
    let mut items: Vec<Vec<ImageSbom>> = vec![Vec::new(); images];
    for j in builds.iter().filter(|j| j.state == JobState::Success) {
        if let Some(r) = jobs::result::<Build>(j) {
            let r = r.map_err(ApiError::internal)?;
            items[image_of(j)].extend(r.sboms);
        }
    }
    Ok(Json(ComposeSboms {
        id: compose.id,
        kind: "ComposeSBOMs".into(),
        href: format!("{}/sboms", compose_href(compose.id)),
        items,
    }))
}

/// The request of a compose and, once depsolved, its package list.
#[utoipa::path(get, path = "/composes/{id}/metadata", tag = "compose", operation_id = "getComposeMetadata",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeMetadata), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_metadata(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeMetadata>, ApiError> {
    let (compose, jobs) = load(&state, &caller, id).await?;
    let request: ComposeRequest =
        serde_json::from_value(compose.request.clone()).map_err(ApiError::internal)?;
    let solved: Vec<&Job> = jobs
        .iter()
        .filter(|j| jobs::is(j, JobKind::Depsolve) && j.state == JobState::Success)
        .collect();
    let packages = if solved.is_empty() {
        None
    } else {
        let mut all = Vec::new();
        for j in solved {
            if let Some(r) = jobs::result::<Depsolve>(j) {
                let r = r.map_err(ApiError::internal)?;
                all.extend(r.packages.into_iter().map(PackageMetadata::from));
            }
        }
        Some(all)
    };
    Ok(Json(ComposeMetadata {
        id: compose.id,
        kind: "ComposeMetadata".into(),
        href: format!("{}/metadata", compose_href(compose.id)),
        packages,
        request,
    }))
}

/// The job graph of a compose. kiln extension.
#[utoipa::path(get, path = "/composes/{id}/jobs", tag = "compose", operation_id = "getComposeJobs",
    params(("id" = String, Path, description = "Compose id")),
    responses((status = 200, body = ComposeJobs), (status = 400, body = Error), (status = 404, body = Error)))]
pub async fn get_jobs(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Json<ComposeJobs>, ApiError> {
    let (compose, jobs) = load(&state, &caller, id).await?;
    Ok(Json(ComposeJobs {
        id: compose.id,
        kind: "ComposeJobs".into(),
        href: format!("{}/jobs", compose_href(compose.id)),
        jobs: jobs.iter().map(job_info).collect(),
    }))
}
