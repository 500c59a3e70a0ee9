//! The `boot` upload target: a PXE image goes to the cluster's boot image
//! store (S3, versioned keys, never overwritten) and the selected nodes'
//! boot parameters in OpenCHAMI BSS point at it (kiln-boot does both).

use std::path::Path;

use kiln_api::compose::BootUploadOptions;
use kiln_api::osbuild::BuildOutput;
use kiln_api::status::BootUpload;
use kiln_boot::{
    BootConfig, ImagePackage, ImageSource, LocalBootImage, NodeSelector, PublishRequest,
};
use serde_json::Value;
use uuid::Uuid;

/// The packages the executor reported installing (dpkg or rpm stage).
fn packages(result: &BuildOutput) -> Vec<ImagePackage> {
    result
        .installed_packages()
        .into_iter()
        .map(|p| ImagePackage {
            name: p.name,
            version: p.version,
            arch: p.arch,
        })
        .collect()
}

pub(crate) struct BootJob<'a> {
    pub compose_id: Uuid,
    pub arch: &'a str,
    pub exported: &'a Path,
    pub kernel_cmdline: &'a str,
    pub result: &'a BuildOutput,
}

/// Publishes (or, for a dry run, plans) the image; returns what the upload
/// status reports: the image, its URLs and the per-node changes.
pub(crate) async fn publish(
    config: Option<&BootConfig>,
    options: &BootUploadOptions,
    job: &BootJob<'_>,
) -> Result<BootUpload, String> {
    let config =
        config.ok_or("this worker has no boot image store configured (worker.toml [boot])")?;
    let nodes = NodeSelector::from(options.nodes.clone());
    let deployer = config.deployer()?;
    let request = PublishRequest {
        image: ImageSource::Local(LocalBootImage {
            compose_id: job.compose_id,
            image_name: options.image_name.clone(),
            arch: job.arch.to_owned(),
            kernel: job.exported.join("vmlinuz"),
            initrd: job.exported.join("initrd.img"),
            rootfs: job.exported.join("rootfs.squashfs"),
            kernel_cmdline: job.kernel_cmdline.to_owned(),
            packages: packages(job.result),
        }),
        nodes,
        extra_params: options.extra_params.clone().unwrap_or_default(),
    };
    let dry_run = options.dry_run.unwrap_or(false);
    let plan = if dry_run {
        deployer.dry_run(&request).await
    } else {
        deployer.publish(&request).await
    }
    .map_err(|e| e.to_string())?;
    let mut status = BootUpload {
        dry_run,
        plan: to_json(&plan)?,
        image: None,
        url: None,
        files: None,
        kernel_cmdline: None,
    };
    if let kiln_boot::Action::Publish { image, .. } = &plan.action {
        status.image = Some(to_json(image)?);
        if !dry_run {
            let record = deployer
                .store()
                .record(image)
                .await
                .map_err(|e| e.to_string())?;
            status.url = Some(record.files.rootfs.url.clone());
            status.files = Some(to_json(&record.files)?);
            status.kernel_cmdline = Some(record.kernel_cmdline.clone());
        }
    }
    Ok(status)
}

fn to_json(v: &impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}
