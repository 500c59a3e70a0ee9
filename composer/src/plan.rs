//! From a compose request to a job graph: validation against the catalog,
//! then one chain of jobs per image.
//!
//! Per image: `depsolve` → `manifest` → `build`. The first two run in the
//! composer, as in osbuild-composer; `build` is taken by a worker of the
//! image's architecture, which also uploads to the image's targets.

use kiln_api::boot::Requester;
use kiln_api::compose::{ComposeRequest, ImageRequest, UploadTarget};
use kiln_api::error::{ErrorKind, FieldError};
use kiln_api::jobs::{BuildArgs, DepsolveArgs, JobArgs, JobError, ManifestArgs};
use kiln_api::validate::{
    check_oci_applies, validate_blueprint, validate_customizations, validate_repository,
    MAX_REPOSITORIES,
};
use kiln_depsolve::RepoPolicy;
use kiln_distro::{Catalog, Distribution};
use kiln_queue::NewJob;

use crate::config::BootGrant;
use crate::jobs::new_job;
use crate::repos::check_allowed;

/// Most images one compose may ask for.
pub const MAX_IMAGES: usize = 16;
/// Most upload targets one image may have.
pub const MAX_TARGETS: usize = 8;

/// Why a compose request cannot become a job graph. The API tells the
/// first as a 4xx naming the field, the second as an internal error.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The request does not fit the catalog or kiln's rules.
    #[error(transparent)]
    Request(#[from] FieldError),
    /// The job graph could not be written.
    #[error(transparent)]
    Jobs(#[from] JobError),
}

/// The job graph of a request, once it is checked against the catalog.
///
/// The request's repositories are checked against the repository policy
/// separately ([`check_repositories`]): that may resolve host names.
pub fn plan(
    req: &ComposeRequest,
    catalog: &Catalog,
    grants: &[BootGrant],
    requester: &Requester,
) -> Result<Vec<NewJob>, PlanError> {
    let distro = validate(req, catalog)?;
    crate::grants::check(req, grants, &requester.tenant)?;
    Ok(jobs(req, distro, requester)?)
}

/// Checks a compose request against the catalog, field by field.
pub fn validate<'a>(
    req: &ComposeRequest,
    catalog: &'a Catalog,
) -> Result<&'a Distribution, FieldError> {
    let distro = catalog.get(&req.distribution).ok_or_else(|| {
        FieldError::new(
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
            return Err(FieldError::new(
                ErrorKind::InvalidField,
                "image_requests",
                "give image_request or image_requests, not both",
            ))
        }
        (None, None) => {
            return Err(FieldError::new(
                ErrorKind::InvalidField,
                "image_request",
                "missing: a compose needs an image request",
            ))
        }
        (None, Some(v)) if v.is_empty() => {
            return Err(FieldError::new(
                ErrorKind::InvalidField,
                "image_requests",
                "empty: a compose needs an image request",
            ))
        }
        (None, Some(v)) if v.len() > MAX_IMAGES => {
            return Err(FieldError::new(
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
        return Err(FieldError::new(
            ErrorKind::InvalidField,
            "blueprint",
            "give customizations or blueprint, not both",
        ));
    }
    for (path, image) in req.images() {
        validate_image(distro, &path, image)?;
    }
    let has_oci_image = req
        .images()
        .iter()
        .any(|(_, image)| kiln_manifests::generate::base(&image.image_type) == "oci");
    if let Some(c) = &req.customizations {
        validate_customizations(c, "customizations", distro.family)?;
        check_oci_applies("customizations.oci", c.oci.as_ref(), has_oci_image)?;
    }
    if let Some(b) = &req.blueprint {
        validate_blueprint(b, "blueprint", distro.family)?;
        let oci = b.customizations.as_ref().and_then(|c| c.oci.as_ref());
        check_oci_applies("blueprint.customizations.oci", oci, has_oci_image)?;
        for (list, name) in [(&b.packages, "packages"), (&b.modules, "modules")] {
            for (i, p) in list.iter().flatten().enumerate() {
                p.request(&format!("blueprint.{name}[{i}].version"))?;
            }
        }
        if let Some(d) = b.distro.as_deref().filter(|d| !d.is_empty()) {
            if d != distro.name {
                return Err(FieldError::new(
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

/// Every repository of a request against the repository policy, before
/// anything is stored or fetched.
pub async fn check_repositories(
    req: &ComposeRequest,
    policy: &RepoPolicy,
) -> Result<(), FieldError> {
    let mut given = Vec::new();
    for (path, image) in req.images() {
        for (i, r) in image.repositories().iter().enumerate() {
            given.push((format!("{path}.repositories[{i}]"), r));
        }
    }
    let payload = req
        .customizations
        .as_ref()
        .and_then(|c| c.payload_repositories.as_ref());
    for (i, r) in payload.into_iter().flatten().enumerate() {
        given.push((format!("customizations.payload_repositories[{i}]"), r));
    }
    for (path, r) in given {
        check_allowed(policy, r, &path).await?;
    }
    Ok(())
}

fn validate_image(
    distro: &Distribution,
    path: &str,
    image: &ImageRequest,
) -> Result<(), FieldError> {
    if distro.architecture(&image.architecture).is_none() {
        return Err(FieldError::new(
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
        return Err(FieldError::new(
            ErrorKind::UnknownImageType,
            format!("{path}.image_type"),
            format!(
                "{} has no image type {:?} for {}; known: {known}",
                distro.name, image.image_type, image.architecture
            ),
        ));
    }
    let too_many = |field: &str, n: usize, max: usize, what: &str| {
        Err(FieldError::new(
            ErrorKind::InvalidField,
            format!("{path}.{field}"),
            format!("{n} {what} named; at most {max} per image"),
        ))
    };
    if image.repositories().len() > MAX_REPOSITORIES {
        return too_many(
            "repositories",
            image.repositories().len(),
            MAX_REPOSITORIES,
            "repositories",
        );
    }
    if image.upload_targets.len() > MAX_TARGETS {
        return too_many(
            "upload_targets",
            image.upload_targets.len(),
            MAX_TARGETS,
            "upload targets",
        );
    }
    for (i, r) in image.repositories().iter().enumerate() {
        validate_repository(r, &format!("{path}.repositories[{i}]"), distro.family)?;
    }
    // Each target's options were read with the request; what is left is
    // what depends on the image.
    for (i, t) in image.upload_targets.iter().enumerate() {
        if matches!(t, UploadTarget::Boot(_)) && image.image_type != "pxe" {
            return Err(FieldError::new(
                ErrorKind::InvalidUploadTarget,
                format!("{path}.upload_targets[{i}].type"),
                format!(
                    "a boot target takes a pxe image, not {:?}",
                    image.image_type
                ),
            ));
        }
    }
    Ok(())
}

/// The upload targets of an image: its `upload_targets`, plus a `local` one
/// for `upload_options`.
pub fn targets(image: &ImageRequest) -> Vec<UploadTarget> {
    let mut out = image.upload_targets.clone();
    out.extend(image.upload_options.clone().map(UploadTarget::Local));
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
    requester: &Requester,
) -> Result<Vec<NewJob>, JobError> {
    let channel = requester.tenant.as_str();
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
                requested_by: Some(requester.clone()),
            }),
            arch,
            channel,
        )?
        .depends_on(&[manifest.id]);
        jobs.extend([depsolve, manifest, build]);
    }
    Ok(jobs)
}
