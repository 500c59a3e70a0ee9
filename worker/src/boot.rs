//! The `boot` upload target: a PXE image goes to the cluster's boot image
//! store (S3, versioned keys, never overwritten) and the selected nodes'
//! boot parameters in OpenCHAMI BSS point at it (kiln-boot does both).

use std::path::Path;

use kiln_api::compose::BootUploadOptions;
use kiln_boot::{
    BootConfig, ImagePackage, ImageSource, LocalBootImage, NodeSelector, PublishRequest,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// The packages the executor reported installing (dpkg or rpm stage).
fn packages(result: &Value) -> Vec<ImagePackage> {
    let mut out = Vec::new();
    for pipeline in result["metadata"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for stage in pipeline.as_object().into_iter().flat_map(|s| s.values()) {
            for p in stage["packages"].as_array().into_iter().flatten() {
                if let (Some(name), Some(version), Some(arch)) = (
                    p["name"].as_str(),
                    p["version"].as_str(),
                    p["arch"].as_str(),
                ) {
                    out.push(ImagePackage {
                        name: name.into(),
                        version: version.into(),
                        arch: arch.into(),
                    });
                }
            }
        }
    }
    out
}

pub struct BootJob<'a> {
    pub compose_id: Uuid,
    pub arch: &'a str,
    pub exported: &'a Path,
    pub kernel_cmdline: &'a str,
    pub result: &'a Value,
}

/// Publishes (or, for a dry run, plans) the image; returns the upload
/// status options: the image, its URLs and the per-node changes.
pub async fn publish(
    config: Option<&BootConfig>,
    options: &Value,
    job: &BootJob<'_>,
) -> Result<Value, String> {
    let config =
        config.ok_or("this worker has no boot image store configured (worker.toml [boot])")?;
    let options: BootUploadOptions =
        serde_json::from_value(options.clone()).map_err(|e| format!("upload_options: {e}"))?;
    let nodes = NodeSelector::from_request(&options.nodes).map_err(|e| e.to_string())?;
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
    let mut status = json!({"dry_run": dry_run, "plan": plan});
    if let kiln_boot::Action::Publish { image, .. } = &plan.action {
        status["image"] = json!(image);
        if !dry_run {
            let record = deployer
                .store()
                .record(image)
                .await
                .map_err(|e| e.to_string())?;
            status["url"] = json!(record.files.rootfs.url);
            status["files"] = json!({"kernel": record.files.kernel, "initrd": record.files.initrd, "rootfs": record.files.rootfs});
            status["kernel_cmdline"] = json!(record.kernel_cmdline);
        }
    }
    Ok(status)
}
