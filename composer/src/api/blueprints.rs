//! Stored blueprints (kiln extension, like image-builder's): push a
//! blueprint once, list and show its versions, compose from it by name.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use kiln_api::compose::{ComposeRequest, ImageRequest};
use kiln_api::customizations::Blueprint;
use kiln_api::error::ErrorKind;
use kiln_api::validate::validate_blueprint;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::composes::{channel, submit};
use super::error::{parse_json, ApiError};
use super::with_status;
use crate::AppState;

/// A stored version of a blueprint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredBlueprint {
    pub name: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub blueprint: serde_json::Value,
}

/// The latest version of each stored blueprint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlueprintList {
    pub blueprints: Vec<BlueprintSummary>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlueprintSummary {
    pub name: String,
    pub version: i64,
    pub distro: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /blueprints/{name}/compose`: the images to build from a stored blueprint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintComposeRequest {
    /// A stored version; the latest without it.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub image_request: Option<ImageRequest>,
    #[serde(default)]
    pub image_requests: Option<Vec<ImageRequest>>,
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let channel = channel(&state, &headers)?;
    let bp: Blueprint = parse_json(&headers, body)?;
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
    let stored = state
        .queue
        .put_blueprint(&channel, &bp.name, &value)
        .await?;
    Ok(with_status(
        StatusCode::CREATED,
        StoredBlueprint {
            name: stored.name,
            version: stored.version,
            created_at: stored.created_at,
            blueprint: stored.blueprint,
        },
    ))
}

/// The latest version of every stored blueprint.
#[utoipa::path(get, path = "/blueprints", tag = "blueprint", operation_id = "listBlueprints",
    responses((status = 200, body = BlueprintList)))]
pub async fn list_blueprints(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<BlueprintList>, ApiError> {
    let channel = channel(&state, &headers)?;
    let blueprints = state
        .queue
        .blueprints(&channel)
        .await?
        .into_iter()
        .map(|b| BlueprintSummary {
            distro: b
                .blueprint
                .get("distro")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            description: b
                .blueprint
                .get("description")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            name: b.name,
            version: b.version,
            created_at: b.created_at,
        })
        .collect();
    Ok(Json(BlueprintList { blueprints }))
}

fn version_query(q: Option<&str>) -> Result<Option<i64>, ApiError> {
    let mut version = None;
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some(("version", v)) = pair.split_once('=') else {
            return Err(ApiError::field(
                ErrorKind::InvalidQuery,
                pair,
                "unknown query parameter (only version)",
            ));
        };
        version = Some(v.parse::<i64>().map_err(|_| {
            ApiError::field(
                ErrorKind::InvalidQuery,
                "version",
                format!("{v:?} is not a version number"),
            )
        })?);
    }
    Ok(version)
}

/// One version of a stored blueprint (`?version=N`; the latest without it).
#[utoipa::path(get, path = "/blueprints/{name}", tag = "blueprint", operation_id = "getBlueprint",
    params(("name" = String, Path, description = "Blueprint name"), ("version" = Option<i64>, Query, description = "Version")),
    responses((status = 200, body = StoredBlueprint), (status = 404, body = kiln_api::error::Error)))]
pub async fn get_blueprint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<StoredBlueprint>, ApiError> {
    let channel = channel(&state, &headers)?;
    let version = version_query(q.as_deref())?;
    let b = state
        .queue
        .blueprint(&channel, &name, version)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(StoredBlueprint {
        name: b.name,
        version: b.version,
        created_at: b.created_at,
        blueprint: b.blueprint,
    }))
}

/// Deletes every version of a blueprint (composes made from it stay).
#[utoipa::path(delete, path = "/blueprints/{name}", tag = "blueprint", operation_id = "deleteBlueprint",
    params(("name" = String, Path, description = "Blueprint name")),
    responses((status = 200, body = Object, description = "{name, deleted: true}"), (status = 404, body = kiln_api::error::Error)))]
pub async fn delete_blueprint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let channel = channel(&state, &headers)?;
    if state.queue.delete_blueprint(&channel, &name).await? {
        Ok(Json(serde_json::json!({"name": name, "deleted": true})))
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
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let channel = channel(&state, &headers)?;
    let req: BlueprintComposeRequest = parse_json(&headers, body)?;
    let stored = state
        .queue
        .blueprint(&channel, &name, req.version)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let blueprint: Blueprint =
        serde_json::from_value(stored.blueprint).map_err(ApiError::internal)?;
    let compose = ComposeRequest {
        distribution: blueprint.distro.clone().unwrap_or_default(),
        image_request: req.image_request,
        image_requests: req.image_requests,
        customizations: None,
        blueprint: Some(blueprint),
    };
    submit(&state, channel, compose).await
}
