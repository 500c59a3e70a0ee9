//! The compose API under `/api/image-builder-composer/v2`, and its OpenAPI
//! document, generated from these handlers and the kiln-api types.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{extract::DefaultBodyLimit, Json, Router};
use kiln_api::error::ErrorKind;
use kiln_api::API_PREFIX;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::AppState;

pub mod blueprints;
pub mod boot;
pub mod composes;
pub mod depsolve;
pub mod distributions;
pub mod error;
pub mod events;
pub mod extract;
pub mod meta;
pub mod request_id;
pub mod workers;

use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln compose API",
        description = "Image builds as a service. The shape of osbuild-composer's Cloud API v2, \
            with kiln's extensions: Debian repositories, several upload targets per image, \
            cancel, job graphs and a live event stream.",
        license(name = "Apache-2.0")
    ),
    servers((url = "/api/image-builder-composer/v2", description = "current domain")),
    paths(
        composes::post_compose,
        composes::list_composes,
        composes::get_compose,
        composes::delete_compose,
        composes::cancel_compose,
        composes::get_logs,
        composes::get_manifests,
        composes::get_metadata,
        composes::get_sboms,
        composes::get_jobs,
        events::get_events,
        blueprints::push_blueprint,
        blueprints::list_blueprints,
        blueprints::get_blueprint,
        blueprints::delete_blueprint,
        blueprints::compose_blueprint,
        boot::post_change,
        boot::get_change,
        boot::cancel_change,
        boot::get_history,
        boot::get_nodes,
        boot::get_tags,
        depsolve::post_depsolve,
        depsolve::post_search,
        distributions::list_distributions,
        distributions::get_distribution,
        workers::list_workers,
        meta::get_openapi,
        meta::list_errors,
        meta::get_error,
    ),
    components(schemas(
        kiln_api::compose::ComposeRequest,
        kiln_api::compose::ImageRequest,
        kiln_api::compose::Repository,
        kiln_api::compose::UploadTarget,
        kiln_api::compose::LocalUploadOptions,
        kiln_api::compose::AwsS3UploadOptions,
        kiln_api::compose::GcpUploadOptions,
        kiln_api::compose::AzureUploadOptions,
        kiln_api::compose::BootUploadOptions,
        kiln_api::compose::BootNodes,
        kiln_api::customizations::Blueprint,
        kiln_api::blueprints::StoredBlueprint,
        kiln_api::blueprints::BlueprintList,
        kiln_api::blueprints::BlueprintSummary,
        kiln_api::blueprints::BlueprintComposeRequest,
        kiln_api::blueprints::BlueprintDeleted,
        kiln_api::compose::ComposeId,
        kiln_api::boot::BootChangeRequest,
        kiln_api::boot::BootChangeId,
        kiln_api::boot::BootChangeState,
        kiln_api::boot::BootChangeStatus,
        kiln_api::boot::Requester,
        kiln_api::boot::BootHistory,
        kiln_api::boot::BootHistoryEntry,
        kiln_api::boot::NodeBootList,
        kiln_api::boot::NodeBoot,
        kiln_api::boot::ReleaseTagList,
        kiln_api::boot::ReleaseTagStatus,
        kiln_api::boot::ImageRef,
        kiln_api::status::ComposeStatus,
        kiln_api::status::ComposeList,
        kiln_api::fleet::WorkerList,
        kiln_api::fleet::WorkerInfo,
        kiln_api::fleet::WorkerJobInfo,
        kiln_api::sbom::ComposeSboms,
        kiln_api::sbom::ImageSbom,
        kiln_api::sbom::SbomType,
        kiln_api::sbom::PipelinePurpose,
        kiln_api::events::JobEventData,
        kiln_api::events::LogEventData,
        kiln_api::error::Error,
        kiln_api::error::ErrorList,
        kiln_api::depsolve::DepsolveRequest,
        kiln_api::depsolve::DepsolveResponse,
        kiln_api::depsolve::SearchPackagesRequest,
        kiln_api::depsolve::SearchPackagesResponse,
    )),
    tags((name = "compose", description = "Image requests and their status"),
         (name = "blueprint", description = "Stored blueprints (kiln extension)"),
         (name = "boot", description = "What nodes boot: changes through boot grants, history (kiln extension)"),
         (name = "fleet", description = "The workers of the fleet (kiln extension)")),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The bearer JWT every call but the document and the error catalog takes
/// when the composer has `[auth]`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token of the composer's [auth] issuer, for its audience; \
                         scopes kiln:read, kiln:compose, kiln:blueprint, kiln:admin",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole HTTP surface of the composer.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/compose", post(composes::post_compose))
        .route("/composes", get(composes::list_composes))
        .route("/composes/", get(composes::list_composes))
        .route(
            "/composes/{id}",
            get(composes::get_compose).delete(composes::delete_compose),
        )
        .route("/composes/{id}/cancel", post(composes::cancel_compose))
        .route("/composes/{id}/logs", get(composes::get_logs))
        .route("/composes/{id}/manifests", get(composes::get_manifests))
        .route("/composes/{id}/metadata", get(composes::get_metadata))
        .route("/composes/{id}/sboms", get(composes::get_sboms))
        .route("/composes/{id}/jobs", get(composes::get_jobs))
        .route("/composes/{id}/events", get(events::get_events))
        .route(
            "/blueprints",
            post(blueprints::push_blueprint).get(blueprints::list_blueprints),
        )
        .route(
            "/blueprints/{name}",
            get(blueprints::get_blueprint).delete(blueprints::delete_blueprint),
        )
        .route(
            "/blueprints/{name}/compose",
            post(blueprints::compose_blueprint),
        )
        .route("/boot/changes", post(boot::post_change))
        .route("/boot/changes/{id}", get(boot::get_change))
        .route("/boot/changes/{id}/cancel", post(boot::cancel_change))
        .route("/boot/history", get(boot::get_history))
        .route("/boot/tags", get(boot::get_tags))
        .route("/boot/nodes", get(boot::get_nodes))
        .route("/depsolve/blueprint", post(depsolve::post_depsolve))
        .route("/search/packages", post(depsolve::post_search))
        .route("/distributions", get(distributions::list_distributions))
        .route(
            "/distributions/{distro}",
            get(distributions::get_distribution),
        )
        .route("/workers", get(workers::list_workers))
        // Every route above needs an authenticated caller; the document
        // of the API and its error catalog below are public.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::authenticate,
        ))
        .route("/openapi", get(meta::get_openapi))
        .route("/errors", get(meta::list_errors))
        .route("/errors/{id}", get(meta::get_error))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(API_PREFIX, api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http().make_span_with(request_id::span))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::compose_api_layer,
        ))
        // Outermost: the id is there before the span is made, and on every
        // response, whoever answered.
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!("no resource at {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A JSON answer with a status other than 200.
pub fn with_status<T: serde::Serialize>(status: StatusCode, body: T) -> axum::response::Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_shows_upload_targets_by_type() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schema = |name: &str| {
            doc.pointer(&format!("/components/schemas/{name}"))
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        let target = schema("UploadTarget");
        for kind in kiln_api::compose::UPLOAD_TYPES {
            assert!(target.contains(&format!("\"{kind}\"")), "{kind}: {target}");
        }
        for options in [
            "AwsS3UploadOptions",
            "BootUploadOptions",
            "LocalUploadOptions",
        ] {
            assert!(target.contains(options), "{options}: {target}");
        }
        // A boot target's nodes are the request's object, not the parsed selection.
        let boot = schema("BootUploadOptions");
        assert!(boot.contains("BootNodes"), "{boot}");
    }
}
