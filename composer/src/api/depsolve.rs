//! Depsolving and package search, in the reference's shape.

use axum::extract::State;
use axum::Json;
use kiln_api::compose::Repository;
use kiln_api::depsolve::{
    split_evr, DepsolveRequest, DepsolveResponse, PackageDetails, SearchPackagesRequest,
    SearchPackagesResponse,
};
use kiln_api::error::{Error, ErrorKind, FieldError};
use kiln_api::validate::{validate_blueprint, Family, MAX_REPOSITORIES};
use kiln_depsolve::{RepoSet, Request};
use kiln_distro::Distribution;

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::repos::RepoError;
use crate::AppState;

/// Most names or patterns one search may give.
pub const MAX_SEARCH_PATTERNS: usize = 64;
/// Most packages one search answers with.
pub const MAX_SEARCH_RESULTS: usize = 1000;

fn distribution<'a>(state: &'a AppState, name: &str) -> Result<&'a Distribution, ApiError> {
    state.catalog.get(name).ok_or_else(|| {
        ApiError::field(
            ErrorKind::UnknownDistribution,
            "distribution",
            format!(
                "unknown distribution {name:?}; known: {}",
                state.catalog.names().join(", ")
            ),
        )
    })
}

/// The request's repositories (field `repositories`; none: the
/// distribution's own), loaded.
async fn loaded(
    state: &AppState,
    distro: &Distribution,
    arch: &str,
    repositories: &[Repository],
) -> Result<RepoSet, RepoError> {
    if repositories.len() > MAX_REPOSITORIES {
        return Err(RepoError::Request(FieldError::new(
            ErrorKind::InvalidField,
            "repositories",
            format!(
                "{} repositories named; at most {MAX_REPOSITORIES}",
                repositories.len()
            ),
        )));
    }
    state
        .repos
        .get(
            &state.config.data_dir,
            distro,
            arch,
            repositories,
            "repositories",
            &[],
        )
        .await
}

/// Depsolve a blueprint: the exact package set, with where to fetch each package.
#[utoipa::path(post, path = "/depsolve/blueprint", tag = "compose", operation_id = "postDepsolveBlueprint",
    request_body = DepsolveRequest,
    responses(
        (status = 200, body = DepsolveResponse),
        (status = 400, description = "Invalid request, or the packages cannot be installed together (the reason explains why)", body = Error),
        (status = 502, description = "A repository could not be read or verified (the reason names the file)", body = Error)))]
pub async fn post_depsolve(
    State(state): State<AppState>,
    _caller: Caller,
    JsonBody(req): JsonBody<DepsolveRequest>,
) -> Result<Json<DepsolveResponse>, ApiError> {
    let distro = distribution(&state, &req.distribution)?;
    validate_blueprint(&req.blueprint, "blueprint", distro.family)?;
    let mut packages = Vec::new();
    let mut essential = false;
    if let Some(t) = &req.image_type {
        packages = distro.packages(&req.architecture, t).ok_or_else(|| {
            ApiError::field(
                ErrorKind::UnknownImageType,
                "image_type",
                format!(
                    "{} has no image type {t:?} for {}",
                    distro.name, req.architecture
                ),
            )
        })?;
        essential = distro.family == Family::Debian;
    }
    let bp = &req.blueprint;
    for (list, name) in [(&bp.packages, "packages"), (&bp.modules, "modules")] {
        for (i, p) in list.iter().flatten().enumerate() {
            packages.push(p.request(&format!("blueprint.{name}[{i}].version"))?);
        }
    }
    if let Some(k) = bp
        .customizations
        .as_ref()
        .and_then(|c| c.kernel.as_ref())
        .and_then(|k| k.name.clone())
    {
        packages.push(k);
    }
    let repos = loaded(&state, distro, &req.architecture, &req.repositories).await?;
    let solution = repos
        .solve_async(Request {
            packages,
            essential,
            recommends: false,
        })
        .await
        .map_err(RepoError::from)?;
    Ok(Json(DepsolveResponse {
        packages: solution
            .packages
            .into_iter()
            .map(|p| p.depsolved(distro.family))
            .collect(),
    }))
}

/// Search packages by name (`*` and `?` allowed): the candidate version of each.
#[utoipa::path(post, path = "/search/packages", tag = "compose", operation_id = "postSearchPackages",
    request_body = SearchPackagesRequest,
    responses(
        (status = 200, body = SearchPackagesResponse),
        (status = 400, body = Error),
        (status = 502, description = "A repository could not be read or verified", body = Error)))]
pub async fn post_search(
    State(state): State<AppState>,
    _caller: Caller,
    JsonBody(req): JsonBody<SearchPackagesRequest>,
) -> Result<Json<SearchPackagesResponse>, ApiError> {
    let distro = distribution(&state, &req.distribution)?;
    if req.packages.is_empty() || req.packages.len() > MAX_SEARCH_PATTERNS {
        return Err(ApiError::field(
            ErrorKind::InvalidField,
            "packages",
            format!(
                "{} patterns: name 1 to {MAX_SEARCH_PATTERNS} packages or patterns",
                req.packages.len()
            ),
        ));
    }
    for (i, p) in req.packages.iter().enumerate() {
        let ok = !p.is_empty()
            && p.len() <= 255
            && p.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-' | '*' | '?')
            });
        if !ok {
            return Err(ApiError::field(
                ErrorKind::InvalidField,
                format!("packages[{i}]"),
                format!("{p:?} is not a package name or pattern"),
            ));
        }
    }
    let repos = loaded(&state, distro, &req.architecture, &req.repositories).await?;
    // A pattern walks the whole index: off the async threads.
    let patterns = req.packages;
    let mut found = tokio::task::spawn_blocking(move || repos.search(&patterns))
        .await
        .map_err(ApiError::internal)?;
    let truncated = found.len() > MAX_SEARCH_RESULTS;
    found.truncate(MAX_SEARCH_RESULTS);
    let packages = found
        .into_iter()
        .map(|p| {
            let (epoch, version, release) = split_evr(&p.version);
            PackageDetails {
                name: p.name,
                version,
                release,
                epoch,
                arch: p.arch,
                url: p.url,
            }
        })
        .collect();
    Ok(Json(SearchPackagesResponse {
        packages,
        truncated,
    }))
}
