//! From a compose request to a job graph: validation against the catalog,
//! then one chain of jobs per image.
//!
//! Per image: `depsolve` → `manifest` → `build`. The first two run in the
//! composer, as in osbuild-composer; `build` is taken by a worker of the
//! image's architecture, which also uploads to the image's targets.

use kiln_api::compose::{ComposeRequest, ImageRequest, UploadTarget};
use kiln_api::error::ErrorKind;
use kiln_api::jobs::{BuildArgs, DepsolveArgs, JobArgs, JobError, ManifestArgs};
use kiln_api::validate::{
    validate_blueprint, validate_customizations, validate_repository, validate_upload_target,
};
use kiln_distro::{Catalog, Distribution};
use kiln_queue::NewJob;

use crate::api::error::ApiError;
use crate::jobs::new_job;

/// Most images one compose may ask for.
pub const MAX_IMAGES: usize = 16;

/// Checks a compose request against the catalog, field by field.
pub fn validate<'a>(
    req: &ComposeRequest,
    catalog: &'a Catalog,
) -> Result<&'a Distribution, ApiError> {
    let distro = catalog.get(&req.distribution).ok_or_else(|| {
        ApiError::field(
            ErrorKind::UnknownDistribution,
            "distribution",
            format!(
                "unknown distribution {:?}; known: {}",
                req.distribution,
                catalog.names().join(", ")
            ),
        )
    })?;
    match (&req.image_request, &req.image_requests) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                ErrorKind::InvalidField,
                "image_requests",
                "give image_request or image_requests, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::field(
                ErrorKind::InvalidField,
                "image_request",
                "missing: a compose needs an image request",
            ))
        }
        (None, Some(v)) if v.is_empty() => {
            return Err(ApiError::field(
                ErrorKind::InvalidField,
                "image_requests",
                "empty: a compose needs an image request",
            ))
        }
        (None, Some(v)) if v.len() > MAX_IMAGES => {
            return Err(ApiError::field(
                ErrorKind::InvalidField,
                "image_requests",
                format!(
                    "{} images asked for; at most {MAX_IMAGES} per compose",
                    v.len()
                ),
            ))
        }
        _ => {}
    }
    if req.customizations.is_some() && req.blueprint.is_some() {
        return Err(ApiError::field(
            ErrorKind::InvalidField,
            "blueprint",
            "give customizations or blueprint, not both",
        ));
    }
    for (path, image) in req.images() {
        validate_image(distro, &path, image)?;
    }
    if let Some(c) = &req.customizations {
        validate_customizations(c, "customizations", distro.family)?;
    }
    if let Some(b) = &req.blueprint {
        validate_blueprint(b, "blueprint", distro.family)?;
        for (list, name) in [(&b.packages, "packages"), (&b.modules, "modules")] {
            for (i, p) in list.iter().flatten().enumerate() {
                p.request(&format!("blueprint.{name}[{i}].version"))?;
            }
        }
        if let Some(d) = b.distro.as_deref().filter(|d| !d.is_empty()) {
            if d != distro.name {
                return Err(ApiError::field(
                    ErrorKind::InvalidField,
                    "blueprint.distro",
                    format!(
                        "{d:?} differs from the compose's distribution {:?}",
                        distro.name
                    ),
                ));
            }
        }
    }
    Ok(distro)
}

fn validate_image(distro: &Distribution, path: &str, image: &ImageRequest) -> Result<(), ApiError> {
    if distro.architecture(&image.architecture).is_none() {
        return Err(ApiError::field(
            ErrorKind::UnknownArchitecture,
            format!("{path}.architecture"),
            format!(
                "{} does not support architecture {:?}; supported: {}",
                distro.name,
                image.architecture,
                distro
                    .architectures
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if distro
        .image_type(&image.architecture, &image.image_type)
        .is_none()
    {
        let known = distro
            .architecture(&image.architecture)
            .map(|a| a.image_types.join(", "))
            .unwrap_or_default();
        return Err(ApiError::field(
            ErrorKind::UnknownImageType,
            format!("{path}.image_type"),
            format!(
                "{} has no image type {:?} for {}; known: {known}",
                distro.name, image.image_type, image.architecture
            ),
        ));
    }
    for (i, r) in image.repositories().iter().enumerate() {
        validate_repository(r, &format!("{path}.repositories[{i}]"), distro.family)?;
    }
    for (i, t) in image.upload_targets.iter().enumerate() {
        let tpath = format!("{path}.upload_targets[{i}]");
        validate_upload_target(t, &tpath)?;
        if t.target_type == "boot" {
            validate_boot_target(image, t, &tpath)?;
        }
    }
    if let Some(opts) = &image.upload_options {
        let target = kiln_api::compose::UploadTarget {
            target_type: "local".into(),
            upload_options: opts.clone(),
        };
        validate_upload_target(&target, path)?;
    }
    Ok(())
}

/// A `boot` target publishes a PXE image; its nodes must be well formed.
fn validate_boot_target(
    image: &ImageRequest,
    t: &kiln_api::compose::UploadTarget,
    path: &str,
) -> Result<(), ApiError> {
    if image.image_type != "pxe" {
        return Err(ApiError::field(
            ErrorKind::InvalidUploadTarget,
            format!("{path}.type"),
            format!(
                "a boot target takes a pxe image, not {:?}",
                image.image_type
            ),
        ));
    }
    let o: kiln_api::compose::BootUploadOptions = serde_json::from_value(t.upload_options.clone())
        .map_err(|e| {
            ApiError::field(
                ErrorKind::InvalidUploadTarget,
                format!("{path}.upload_options"),
                e.to_string(),
            )
        })?;
    kiln_boot::NodeSelector::from_request(&o.nodes).map_err(|e| {
        let field = match &e {
            kiln_boot::BootError::InvalidXname { field, .. }
            | kiln_boot::BootError::InvalidMac { field, .. }
            | kiln_boot::BootError::InvalidField { field, .. }
            | kiln_boot::BootError::EmptySelection { field } => field.clone(),
            _ => "nodes".to_owned(),
        };
        ApiError::field(
            ErrorKind::InvalidUploadTarget,
            format!("{path}.upload_options.{field}"),
            e.to_string(),
        )
    })?;
    Ok(())
}

/// The upload targets of an image: its `upload_targets`, plus a `local` one
/// for `upload_options`.
pub fn targets(image: &ImageRequest) -> Vec<UploadTarget> {
    let mut out = image.upload_targets.clone();
    if let Some(o) = &image.upload_options {
        out.push(UploadTarget {
            target_type: "local".into(),
            upload_options: o.clone(),
        });
    }
    out
}

/// Packages the request adds to the image type's defaults.
fn requested_packages(req: &ComposeRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(c) = &req.customizations {
        out.extend(c.packages.iter().flatten().cloned());
        if let Some(k) = c.kernel.as_ref().and_then(|k| k.name.clone()) {
            out.push(k);
        }
    }
    if let Some(b) = &req.blueprint {
        for p in b
            .packages
            .iter()
            .flatten()
            .chain(b.modules.iter().flatten())
        {
            // Validated already: a bad pin never gets here.
            out.push(p.request("").unwrap_or_else(|_| p.name.clone()));
        }
        if let Some(k) = b
            .customizations
            .as_ref()
            .and_then(|c| c.kernel.as_ref())
            .and_then(|k| k.name.clone())
        {
            out.push(k);
        }
    }
    out
}

/// The job graph of a validated request: one depsolve → manifest → build
/// chain per image.
pub fn jobs(
    req: &ComposeRequest,
    distro: &Distribution,
    channel: &str,
) -> Result<Vec<NewJob>, JobError> {
    let extra = requested_packages(req);
    let mut jobs = Vec::new();
    for (image, (_, request)) in req.images().into_iter().enumerate() {
        let arch = &request.architecture;
        let mut packages = distro
            .packages(arch, &request.image_type)
            .unwrap_or_default();
        packages.extend(extra.iter().cloned());
        let package_arch = distro
            .architecture(arch)
            .map(|a| a.package_arch.clone())
            .unwrap_or_default();
        let depsolve = new_job(
            &JobArgs::Depsolve(DepsolveArgs {
                image,
                distribution: distro.name.clone(),
                family: distro.family,
                architecture: arch.clone(),
                package_arch,
                image_type: request.image_type.clone(),
                repositories: request.repositories().to_vec(),
                payload_repositories: req
                    .customizations
                    .as_ref()
                    .and_then(|c| c.payload_repositories.clone())
                    .unwrap_or_default(),
                packages,
            }),
            arch,
            channel,
        )?;
        let manifest = new_job(
            &JobArgs::Manifest(ManifestArgs {
                image,
                distribution: distro.name.clone(),
                architecture: arch.clone(),
                image_type: request.image_type.clone(),
            }),
            arch,
            channel,
        )?
        .depends_on(&[depsolve.id]);
        let build = new_job(
            &JobArgs::Build(BuildArgs {
                image,
                image_type: request.image_type.clone(),
                targets: targets(request),
            }),
            arch,
            channel,
        )?
        .depends_on(&[manifest.id]);
        jobs.extend([depsolve, manifest, build]);
    }
    Ok(jobs)
}
