//! Boot delivery through the API (kiln extension): every change of what
//! nodes boot — a publish of an image in the boot store, a rollback, their
//! dry runs — and every read of it is a `boot` job, checked against the
//! tenant's boot grants before it is enqueued and run by a worker that
//! holds the boot service's credentials (the composer holds none). What
//! the jobs (and the `boot` targets of composes) changed is the history;
//! what they read or set is what nodes boot (`crate::boot_records`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

use kiln_api::boot::{
    Action, BootChangeId, BootChangeRequest, BootChangeState, BootChangeStatus, BootHistory,
    BootHistoryEntry, ImageRef, NodeBoot, NodeBootList, ReleaseTagList, ReleaseTagStatus,
};
use kiln_api::error::{Error, ErrorKind};
use kiln_api::jobs::{Boot, BootArgs, Build, JobArgs, JobKind, JobType, ANY_ARCH};
use kiln_api::status::UploadDetails;
use kiln_queue::{Job, JobState};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, Compose, ComposePath, HistoryQuery, JsonBody, ReqId};
use super::with_status;
use crate::AppState;

fn change_href(id: Uuid) -> String {
    format!("{}/boot/changes/{id}", kiln_api::API_PREFIX)
}

/// Ask for a boot change: publish, canary, promote, rollback (each with
/// `dry_run`), tag or show. Refused with 403 naming the field when the
/// tenant's boot grants do not cover the image or a node; nothing is
/// enqueued then.
#[utoipa::path(post, path = "/boot/changes", tag = "boot", operation_id = "postBootChange",
    request_body = BootChangeRequest,
    responses((status = 201, body = BootChangeId), (status = 400, body = Error), (status = 403, body = Error)))]
pub async fn post_change(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    ReqId(request_id): ReqId,
    JsonBody(request): JsonBody<BootChangeRequest>,
) -> Result<Response, ApiError> {
    let request = match request.compose_id() {
        Some(id) => {
            let image = published_by(&state, &caller, id).await?;
            request.with_image(&image)
        }
        None => request,
    };
    let request = match request.promotion() {
        Some((group, canary)) => {
            let (id, image) = canary_of(&state, &caller, group, canary).await?;
            request.with_canary(&id, &image)
        }
        None => request,
    };
    let change = request.check()?;
    crate::grants::check_change(&change, &state.config.auth.boot_grants, &caller.channel)?;
    let args = JobArgs::Boot(BootArgs {
        change,
        requested_by: caller.requester(),
    });
    let job = crate::jobs::new_job(&args, ANY_ARCH, &caller.channel)
        .map_err(ApiError::internal)?
        .with_request_id(Some(request_id.to_string()));
    let id = job.id;
    state.queue.enqueue(&[job]).await?;
    tracing::info!(change = %id, tenant = %caller.channel, subject = ?caller.subject, "boot change enqueued");
    Ok(with_status(
        StatusCode::CREATED,
        BootChangeId {
            id,
            kind: "BootChange".into(),
            href: change_href(id),
        },
    ))
}

/// The image the caller's compose `id` published through its `boot`
/// target (not a dry run): what "promote this compose" publishes.
async fn published_by(
    state: &AppState,
    caller: &Caller<Compose>,
    id: Uuid,
) -> Result<ImageRef, ApiError> {
    let bad = |m: String| ApiError::field(ErrorKind::InvalidField, "compose_id", m);
    let (_, jobs) = super::composes::load(state, caller, ComposePath(id))
        .await
        .map_err(|_| bad(format!("no compose {id}")))?;
    let mut images: Vec<ImageRef> = jobs
        .iter()
        .filter_map(|j| crate::jobs::result::<Build>(j)?.ok())
        .flat_map(|r| r.uploads)
        .filter_map(|u| match u.details() {
            Ok(UploadDetails::Boot(b)) if !b.dry_run => b.image,
            _ => None,
        })
        .collect();
    images.sort();
    images.dedup();
    match images.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(bad(format!(
            "compose {id} published no boot image (a pxe image with a boot target that is not a dry run)"
        ))),
        many => Err(bad(format!(
            "compose {id} published {} boot images: name one as image",
            many.len()
        ))),
    }
}

/// The tenant's history, newest first, entry by entry until `visit`
/// breaks.
async fn each_history_entry(
    state: &AppState,
    channel: &str,
    mut visit: impl FnMut(BootHistoryEntry) -> ControlFlow<()>,
) -> Result<(), ApiError> {
    const PAGE: i64 = 200;
    let mut offset = 0;
    loop {
        let (rows, total) = state
            .queue
            .boot_changes(channel, None, offset, PAGE)
            .await?;
        for row in rows.iter() {
            let entry: BootHistoryEntry =
                serde_json::from_value(row.record.clone()).map_err(ApiError::internal)?;
            if visit(entry).is_break() {
                return Ok(());
            }
        }
        offset += PAGE;
        if rows.is_empty() || offset >= total {
            return Ok(());
        }
    }
}

/// The canary a promotion names (or, by default, the tenant's latest canary
/// of `group` that was applied), from the tenant's own history: its
/// deployment id and image, which the grants are then checked against. The
/// worker checks it is still in effect in the boot store.
async fn canary_of(
    state: &AppState,
    caller: &Caller<Compose>,
    group: &str,
    named: Option<&str>,
) -> Result<(String, ImageRef), ApiError> {
    let mut found = None;
    each_history_entry(state, &caller.channel, |entry| match &entry.action {
        Action::Canary {
            image, group: of, ..
        } if of == group && entry.failed.is_none() && named.is_none_or(|n| n == entry.id) => {
            found = Some((entry.id.clone(), image.clone()));
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .await?;
    found.ok_or_else(|| {
        ApiError::field(
            ErrorKind::InvalidField,
            "canary",
            match named {
                Some(id) => format!("no canary {id} of group {group:?} in this tenant's history"),
                None => format!("no canary of group {group:?} in this tenant's history to promote"),
            },
        )
    })
}

/// The caller's release tags, each as its latest tag change in the
/// tenant's history set it (the boot store keeps every setting under
/// `_tags/`).
#[utoipa::path(get, path = "/boot/tags", tag = "boot", operation_id = "getBootTags",
    responses((status = 200, body = ReleaseTagList)))]
pub async fn get_tags(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ReleaseTagList>, ApiError> {
    let mut latest: BTreeMap<String, ReleaseTagStatus> = BTreeMap::new();
    each_history_entry(&state, &caller.channel, |entry| {
        if let Action::Tag {
            image,
            compose_id,
            tag,
            previous,
        } = &entry.action
        {
            latest
                .entry(tag.to_string())
                .or_insert_with(|| ReleaseTagStatus {
                    tag: tag.clone(),
                    image: image.clone(),
                    compose_id: *compose_id,
                    previous: previous.clone(),
                    set_at: entry.created_at,
                    set_by: entry.requested_by.clone(),
                    job_id: entry.job_id,
                });
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok(Json(ReleaseTagList {
        items: latest.into_values().collect(),
    }))
}

/// The caller's boot change `id`; another tenant's is not found.
async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Job, ApiError> {
    match state.queue.job(id).await? {
        Some(job) if job.job_type == JobKind::Boot.as_str() && job.channel == caller.channel => {
            Ok(job)
        }
        _ => Err(ApiError::new(
            ErrorKind::BootChangeNotFound,
            format!("no boot change {id}"),
        )),
    }
}

/// How a boot change stands, with its plan and what the nodes boot.
#[utoipa::path(get, path = "/boot/changes/{id}", tag = "boot", operation_id = "getBootChange",
    params(("id" = String, Path, description = "Boot change id")),
    responses((status = 200, body = BootChangeStatus), (status = 404, body = Error)))]
pub async fn get_change(
    State(state): State<AppState>,
    caller: Caller,
    ComposePath(id): ComposePath,
) -> Result<Json<BootChangeStatus>, ApiError> {
    let job = load(&state, &caller, id).await?;
    let args = Boot::decode_args(&job.args).map_err(ApiError::internal)?;
    let result = match &job.result {
        Some(r) if job.state == JobState::Success => {
            Some(Boot::decode_result(r).map_err(ApiError::internal)?)
        }
        // A change that failed part way carries its plan, each node's
        // outcome saying whether it moved.
        Some(r) if job.state == JobState::Failed => Boot::decode_result(r).ok(),
        _ => None,
    };
    let (plan, nodes) = result.map(|r| (r.plan, r.nodes)).unwrap_or_default();
    Ok(Json(BootChangeStatus {
        id: job.id,
        status: match job.state {
            JobState::Waiting | JobState::Queued => BootChangeState::Pending,
            JobState::Running => BootChangeState::Running,
            JobState::Success => BootChangeState::Success,
            JobState::Failed => BootChangeState::Failure,
            JobState::Canceled => BootChangeState::Canceled,
        },
        change: args.change,
        requested_by: args.requested_by,
        created_at: job.created_at,
        finished_at: job.finished_at,
        plan,
        nodes,
        reason: job.reason.filter(|_| job.state != JobState::Success),
    }))
}

/// Cancel a boot change that no worker has started (one running finishes:
/// the boot service has no transactions to stop a change half made).
#[utoipa::path(post, path = "/boot/changes/{id}/cancel", tag = "boot", operation_id = "cancelBootChange",
    params(("id" = String, Path, description = "Boot change id")),
    responses((status = 200, body = BootChangeStatus), (status = 404, body = Error), (status = 409, body = Error)))]
pub async fn cancel_change(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    id: ComposePath,
) -> Result<Json<BootChangeStatus>, ApiError> {
    let job = load(&state, &caller.reader(), id.0).await?;
    if !matches!(job.state, JobState::Waiting | JobState::Queued)
        || !state.queue.cancel_job(job.id).await?
    {
        return Err(ApiError::new(
            ErrorKind::BootChangeStarted,
            format!(
                "boot change {} is {}: only a pending change can be canceled",
                job.id,
                job.state.as_str()
            ),
        ));
    }
    get_change(State(state), caller.reader(), id).await
}

/// Every change of what nodes boot made for the caller's tenant, newest
/// first: who, which compose and image, which nodes, old and new
/// parameters, when. `?node=<xname>` for one node's.
#[utoipa::path(get, path = "/boot/history", tag = "boot", operation_id = "getBootHistory",
    params(("node" = Option<String>, Query, description = "Only changes of this xname"),
           ("page" = Option<i64>, Query), ("size" = Option<i64>, Query)),
    responses((status = 200, body = BootHistory), (status = 400, body = Error)))]
pub async fn get_history(
    State(state): State<AppState>,
    caller: Caller,
    query: HistoryQuery,
) -> Result<Json<BootHistory>, ApiError> {
    let HistoryQuery { paging, node } = query;
    let (rows, total) = state
        .queue
        .boot_changes(
            &caller.channel,
            node.as_ref().map(|x| x.as_str()),
            paging.page * paging.size,
            paging.size,
        )
        .await?;
    let items = rows
        .into_iter()
        .map(|r| serde_json::from_value::<BootHistoryEntry>(r.record))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(BootHistory {
        page: paging.page,
        size: paging.size,
        total,
        items,
    }))
}

/// What the nodes the caller's tenant has changed or read boot, as the
/// latest boot job (of any tenant) saw it; `show` reads them again.
#[utoipa::path(get, path = "/boot/nodes", tag = "boot", operation_id = "getBootNodes",
    responses((status = 200, body = NodeBootList)))]
pub async fn get_nodes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<NodeBootList>, ApiError> {
    let items = state
        .queue
        .node_boots(&caller.channel)
        .await?
        .into_iter()
        .map(|n| {
            Ok(NodeBoot {
                status: serde_json::from_value(n.record)?,
                observed_at: n.observed_at,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(ApiError::internal)?;
    Ok(Json(NodeBootList { items }))
}
