//! Distributions: what kiln can build, from the catalog.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use kiln_api::distribution::{
    ArchitectureInfo, BlueprintRepository, DistributionDetails, DistributionList, ImageTypeInfo,
};
use kiln_api::error::{Error, ErrorKind};
use kiln_api::API_PREFIX;
use kiln_distro::Distribution;

use super::error::ApiError;
use super::extract::{Caller, DistributionFilter};
use crate::AppState;

fn repositories(d: &Distribution, arch: &str) -> Vec<BlueprintRepository> {
    d.repositories
        .iter()
        .map(|r| BlueprintRepository {
            id: r.id.clone(),
            baseurls: vec![r.baseurl_for(arch)],
            gpgkeys: r
                .gpgkey_url
                .iter()
                .chain(r.keyring.iter())
                .cloned()
                .collect(),
            name: r.name.clone(),
            gpgcheck: Some(true),
            repo_gpgcheck: Some(r.keyring.is_some()),
            suite: r.suite.clone(),
            components: r.components.clone(),
        })
        .collect()
}

/// Every distribution, with its repositories per architecture.
#[utoipa::path(get, path = "/distributions", tag = "compose", operation_id = "getDistributionList",
    responses((status = 200, description = "distribution → architecture → repositories", body = Object)))]
pub async fn list_distributions(
    State(state): State<AppState>,
    _caller: Caller,
) -> Json<DistributionList> {
    let list = state
        .catalog
        .iter()
        .map(|d| {
            let arches = d
                .architectures
                .keys()
                .map(|a| (a.clone(), repositories(d, a)))
                .collect();
            (d.name.clone(), arches)
        })
        .collect();
    Json(list)
}

/// One distribution: architectures and image types, optionally filtered.
#[utoipa::path(get, path = "/distributions/{distro}", tag = "compose", operation_id = "getDistribution",
    params(("distro" = String, Path, description = "Distribution name"),
           ("image_type" = Option<Vec<String>>, Query, description = "Only these image types"),
           ("architecture" = Option<Vec<String>>, Query, description = "Only these architectures")),
    responses((status = 200, body = DistributionDetails), (status = 404, body = Error), (status = 400, body = Error)))]
pub async fn get_distribution(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    filter: DistributionFilter,
) -> Result<Json<DistributionDetails>, ApiError> {
    let d = state.catalog.get(&name).ok_or_else(|| {
        ApiError::field(
            ErrorKind::DistributionNotFound,
            "distro",
            format!(
                "unknown distribution {name:?}; known: {}",
                state.catalog.names().join(", ")
            ),
        )
    })?;
    let architectures: BTreeMap<String, ArchitectureInfo> = d
        .architectures
        .iter()
        .filter(|(a, _)| filter.architecture(a))
        .map(|(a, def)| {
            let image_types = def
                .image_types
                .iter()
                .filter(|t| filter.image_type(t))
                .filter_map(|t| {
                    let info = d.image_types.get(t)?;
                    Some((
                        t.clone(),
                        ImageTypeInfo {
                            name: t.clone(),
                            filename: Some(info.filename.clone()),
                            mime_type: Some(info.mime_type.clone()),
                            exports: Vec::new(),
                            payload_package_sets: vec!["os".into()],
                        },
                    ))
                })
                .collect();
            (
                a.clone(),
                ArchitectureInfo {
                    name: a.clone(),
                    image_types,
                },
            )
        })
        .collect();
    Ok(Json(DistributionDetails {
        id: d.name.clone(),
        kind: "Distribution".into(),
        href: format!("{API_PREFIX}/distributions/{}", d.name),
        name: d.name.clone(),
        codename: d.codename.clone(),
        releasever: Some(d.releasever.clone()),
        os_version: Some(d.os_version.clone()),
        product: Some(d.product.clone()),
        architectures,
    }))
}
