//! Stored blueprints (kiln extension, like image-builder's): push a
//! blueprint once, list and show its versions, compose from it by name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use kiln_api::blueprints::{
    BlueprintComposeRequest, BlueprintDeleted, BlueprintList, BlueprintSummary, StoredBlueprint,
};
use kiln_api::compose::ComposeRequest;
use kiln_api::customizations::Blueprint;
use kiln_api::error::ErrorKind;
use kiln_api::validate::validate_blueprint;
use kiln_queue::BlueprintRecord;

use super::composes::submit;
use super::error::ApiError;
use super::extract::{BlueprintVersion, Caller, Compose, JsonBody, ReqId, WriteBlueprints};
use super::with_status;
use crate::AppState;

/// A stored version, as the queue keeps it: a blueprint written by
/// [`push_blueprint`], so it reads back.
fn stored(b: BlueprintRecord) -> Result<StoredBlueprint, ApiError> {
    Ok(StoredBlueprint {
        blueprint: serde_json::from_value(b.blueprint).map_err(ApiError::internal)?,
        name: b.name,
        version: b.version,
        created_at: b.created_at,
    })
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            ErrorKind::InvalidField,
            "name",
            format!("{name:?}: 1 to 100 letters, digits, '.', '_' or '-'"),
        ))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!("no blueprint named {name:?} (in this channel)"),
    )
}

/// Stores a blueprint as the next version of its name.
#[utoipa::path(post, path = "/blueprints", tag = "blueprint", operation_id = "pushBlueprint",
    request_body = kiln_api::customizations::Blueprint,
    responses((status = 201, body = StoredBlueprint), (status = 400, body = kiln_api::error::Error)))]
pub async fn push_blueprint(
    State(state): State<AppState>,
    caller: Caller<WriteBlueprints>,
    JsonBody(bp): JsonBody<Blueprint>,
) -> Result<Response, ApiError> {
    valid_name(&bp.name)?;
    let distro_name = bp
        .distro
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                ErrorKind::InvalidField,
                "distro",
                "a stored blueprint names its distribution",
            )
        })?;
    let distro = state.catalog.get(distro_name).ok_or_else(|| {
        ApiError::field(
            ErrorKind::UnknownDistribution,
            "distro",
            format!(
                "unknown distribution {distro_name:?}; known: {}",
                state.catalog.names().join(", ")
            ),
        )
    })?;
    validate_blueprint(&bp, "blueprint", distro.family)?;
    let value = serde_json::to_value(&bp).map_err(ApiError::internal)?;
    let record = state
        .queue
        .put_blueprint(&caller.channel, &bp.name, &value)
        .await?;
    Ok(with_status(StatusCode::CREATED, stored(record)?))
}

/// The latest version of every stored blueprint.
#[utoipa::path(get, path = "/blueprints", tag = "blueprint", operation_id = "listBlueprints",
    responses((status = 200, body = BlueprintList)))]
pub async fn list_blueprints(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<BlueprintList>, ApiError> {
    let blueprints = state
        .queue
        .blueprints(&caller.channel)
        .await?
        .into_iter()
        .map(|b| {
            let s = stored(b)?;
            Ok(BlueprintSummary {
                name: s.name,
                version: s.version,
                distro: s.blueprint.distro,
                description: s.blueprint.description,
                created_at: s.created_at,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(BlueprintList { blueprints }))
}

/// One version of a stored blueprint (`?version=N`; the latest without it).
#[utoipa::path(get, path = "/blueprints/{name}", tag = "blueprint", operation_id = "getBlueprint",
    params(("name" = String, Path, description = "Blueprint name"), ("version" = Option<i64>, Query, description = "Version")),
    responses((status = 200, body = StoredBlueprint), (status = 404, body = kiln_api::error::Error)))]
pub async fn get_blueprint(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    BlueprintVersion(version): BlueprintVersion,
) -> Result<Json<StoredBlueprint>, ApiError> {
    let b = state
        .queue
        .blueprint(&caller.channel, &name, version)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(stored(b)?))
}

/// Deletes every version of a blueprint (composes made from it stay).
#[utoipa::path(delete, path = "/blueprints/{name}", tag = "blueprint", operation_id = "deleteBlueprint",
    params(("name" = String, Path, description = "Blueprint name")),
    responses((status = 200, body = BlueprintDeleted), (status = 404, body = kiln_api::error::Error)))]
pub async fn delete_blueprint(
    State(state): State<AppState>,
    caller: Caller<WriteBlueprints>,
    Path(name): Path<String>,
) -> Result<Json<BlueprintDeleted>, ApiError> {
    if state.queue.delete_blueprint(&caller.channel, &name).await? {
        Ok(Json(BlueprintDeleted {
            name,
            deleted: true,
        }))
    } else {
        Err(not_found(&name))
    }
}

/// Composes images from a stored blueprint: the compose request is the
/// blueprint's distribution, these image requests, and the blueprint.
#[utoipa::path(post, path = "/blueprints/{name}/compose", tag = "blueprint", operation_id = "composeBlueprint",
    params(("name" = String, Path, description = "Blueprint name")),
    request_body = BlueprintComposeRequest,
    responses((status = 201, body = kiln_api::compose::ComposeId), (status = 400, body = kiln_api::error::Error), (status = 404, body = kiln_api::error::Error)))]
pub async fn compose_blueprint(
    State(state): State<AppState>,
    caller: Caller<Compose>,
    Path(name): Path<String>,
    ReqId(request_id): ReqId,
    JsonBody(req): JsonBody<BlueprintComposeRequest>,
) -> Result<Response, ApiError> {
    let record = state
        .queue
        .blueprint(&caller.channel, &name, req.version)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let blueprint = stored(record)?.blueprint;
    let compose = ComposeRequest {
        distribution: blueprint.distro.clone().unwrap_or_default(),
        image_request: req.image_request,
        image_requests: req.image_requests,
        customizations: None,
        blueprint: Some(blueprint),
    };
    submit(&state, caller, &request_id, compose).await
}
