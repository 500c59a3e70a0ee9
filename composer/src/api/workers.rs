//! `GET /workers` (kiln extension): the fleet's workers, from the
//! database, so every composer answers alike.

use axum::extract::State;
use axum::Json;
use kiln_api::fleet::{WorkerInfo, WorkerJobInfo, WorkerList};

use super::error::ApiError;
use super::extract::Caller;
use crate::AppState;

/// The workers that may build for the caller's tenant, heard from by any
/// composer within the heartbeat timeout or holding a running job, with
/// the caller's jobs each runs (other tenants' jobs only counted).
#[utoipa::path(get, path = "/workers", tag = "fleet", operation_id = "getWorkerList",
    responses((status = 200, body = WorkerList), (status = 401, body = kiln_api::error::Error)))]
pub async fn list_workers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WorkerList>, ApiError> {
    let workers = state.queue.workers(state.presence.window()).await?;
    let items = workers
        .into_iter()
        .filter(|w| w.channels.is_empty() || w.channels.contains(&caller.channel))
        .map(|w| {
            let (mine, others): (Vec<_>, Vec<_>) = w
                .jobs
                .into_iter()
                .partition(|j| j.channel == caller.channel);
            WorkerInfo {
                name: w.name,
                arch: w.arch,
                // Other tenants' names are not the caller's to read.
                channels: w
                    .channels
                    .into_iter()
                    .filter(|c| *c == caller.channel)
                    .collect(),
                first_seen: w.first_seen,
                last_seen: w.last_seen,
                jobs: mine
                    .into_iter()
                    .map(|j| WorkerJobInfo {
                        id: j.id,
                        compose_id: j.compose_id,
                        job_type: j.job_type,
                        started_at: j.started_at,
                    })
                    .collect(),
                other_jobs: others.len() as u32,
            }
        })
        .collect();
    Ok(Json(WorkerList {
        kind: "WorkerList".into(),
        items,
    }))
}
