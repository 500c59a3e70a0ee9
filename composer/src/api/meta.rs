//! The API's description of itself: its OpenAPI document and error catalog.

use axum::extract::Path;
use axum::Json;
use kiln_api::error::{Error, ErrorKind, ErrorList};
use utoipa::OpenApi;

use super::error::ApiError;
use super::extract::Paging;
use super::ApiDoc;

/// The OpenAPI document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi", tag = "compose", operation_id = "getOpenapi",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every error the API can return.
#[utoipa::path(get, path = "/errors", tag = "compose", operation_id = "getErrorList",
    params(("page" = Option<String>, Query, description = "Page index, from 0"),
           ("size" = Option<String>, Query, description = "Items per page")),
    responses((status = 200, body = ErrorList), (status = 400, body = Error)))]
pub async fn list_errors(Paging { page, size }: Paging) -> Result<Json<ErrorList>, ApiError> {
    let all: Vec<Error> = ErrorKind::ALL.iter().map(|k| Error::catalog(*k)).collect();
    let items: Vec<Error> = all
        .iter()
        .skip((page * size) as usize)
        .take(size as usize)
        .cloned()
        .collect();
    Ok(Json(ErrorList {
        kind: "ErrorList".into(),
        page,
        size: items.len() as i64,
        total: all.len() as i64,
        items,
    }))
}

/// One error of the catalog.
#[utoipa::path(get, path = "/errors/{id}", tag = "compose", operation_id = "getError",
    params(("id" = String, Path, description = "Error id")),
    responses((status = 200, body = Error), (status = 404, body = Error)))]
pub async fn get_error(Path(id): Path<String>) -> Result<Json<Error>, ApiError> {
    id.parse::<u32>()
        .ok()
        .and_then(ErrorKind::from_id)
        .map(|k| Json(Error::catalog(k)))
        .ok_or_else(|| ApiError::new(ErrorKind::ErrorNotFound, format!("no error with id {id:?}")))
}
