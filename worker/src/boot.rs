//! Boot delivery on the worker that holds the boot image store's and the
//! boot service's credentials (kiln-boot does the work):
//! - the `boot` upload target of a build: a PXE image goes to the store
//!   (S3, versioned keys, never overwritten) and the selected nodes' boot
//!   parameters in OpenCHAMI BSS point at it;
//! - `boot` jobs: a publish of an image already in the store, a rollback,
//!   their dry runs, and reads of what nodes boot.

use std::path::Path;

use std::time::Duration;

use kiln_api::boot::{BootChange, Plan};
use kiln_api::compose::BootUploadOptions;
use kiln_api::jobs::{BootArgs, BootResult, JobResult};
use kiln_api::nodes::NodeSelection;
use kiln_api::osbuild::BuildOutput;
use kiln_api::status::BootUpload;
use kiln_api::worker::{AssignedJob, FinishJob, JobAssignment, JobProgressUpdate};
use kiln_boot::{
    BootConfig, ImagePackage, ImageSource, LocalBootImage, NodeSelector, PublishRequest,
};
use uuid::Uuid;

use crate::client::{Client, ClientError};
use crate::config::WorkerConfig;
use crate::job::Ended;

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
    /// The image's SBOM in the export, if the build wrote one.
    pub sbom: Option<std::path::PathBuf>,
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
            sbom: job.sbom.clone(),
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
        image: None,
        url: None,
        files: None,
        kernel_cmdline: None,
        plan,
    };
    if let kiln_boot::Action::Publish { image, .. } = &status.plan.action {
        status.image = Some(image.clone());
        if !dry_run {
            let record = deployer
                .store()
                .record(image)
                .await
                .map_err(|e| e.to_string())?;
            status.url = Some(record.files.rootfs.url.clone());
            status.files = Some(record.files);
            status.kernel_cmdline = Some(record.kernel_cmdline);
        }
    }
    Ok(status)
}

/// Runs a `boot` job: the change through kiln-boot (its history in the
/// store, then BSS), then a read of what the selected nodes boot. Renews
/// the lease meanwhile; a cancel does not stop a change half made (the
/// boot service has no transactions), so the result is always reported.
pub(crate) async fn run(client: &Client, config: &WorkerConfig, job: &JobAssignment) -> Ended {
    let AssignedJob::Boot { args } = &job.job else {
        return finished(Err((
            format!("not a boot job but a {} job", job.job.kind()),
            None,
        )));
    };
    let work = change(config.boot.as_ref(), args);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(config.heartbeat_secs.max(1)));
    let done = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let update = JobProgressUpdate { phase: None, progress: None, log: Vec::new() };
                match client.progress(job.token, &update).await {
                    Ok(()) | Err(ClientError::Canceled) => {}
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "renewing the lease"),
                }
            }
        }
    };
    if let Err((reason, _)) = &done {
        tracing::warn!(job = %job.id, %reason, "boot change failed");
    }
    finished(done)
}

fn finished(done: Result<BootResult, Failed>) -> Ended {
    let finish = match done {
        Ok(r) => FinishJob::succeeded(&JobResult::Boot(r)),
        Err((reason, plan)) => {
            let partial = plan.map(|plan| {
                JobResult::Boot(BootResult {
                    plan: Some(plan),
                    nodes: Vec::new(),
                })
            });
            FinishJob::failed(reason.as_str(), partial.as_ref())
        }
    };
    Ended::Finish(finish.unwrap_or_else(|e| FinishJob {
        success: false,
        result: None,
        reason: Some(format!("writing the boot job's result: {e}")),
    }))
}

/// How a boot job ended badly: the reason, and the plan when it was being
/// applied (BSS may hold part of it; the composer records it as failed).
type Failed = (String, Option<Plan>);

async fn change(config: Option<&BootConfig>, args: &BootArgs) -> Result<BootResult, Failed> {
    let e = |e: kiln_boot::BootError| (e.to_string(), None);
    let config = config.ok_or_else(|| {
        (
            "this worker has no boot image store configured (worker.toml [boot])".to_owned(),
            None,
        )
    })?;
    let deployer = config.deployer().map_err(|m| (m, None))?;
    let group = |nodes: &NodeSelection| match nodes {
        NodeSelection::Group(g) => Ok(g.clone()),
        other => Err(format!(
            "a canary or promotion selects a group, not {}",
            other.describe()
        )),
    };
    let mut plan = match &args.change {
        BootChange::Publish {
            image,
            extra_params,
            nodes,
            ..
        } => {
            let record = deployer.store().record(image).await.map_err(e)?;
            let nodes = NodeSelector::from(nodes.clone());
            Some(
                deployer
                    .plan_publish(&record, &nodes, extra_params)
                    .await
                    .map_err(e)?,
            )
        }
        BootChange::Canary {
            image,
            nodes,
            canary,
            extra_params,
            ..
        } => {
            let record = deployer.store().record(image).await.map_err(e)?;
            Some(
                deployer
                    .plan_canary(
                        &record,
                        &group(nodes).map_err(|m| (m, None))?,
                        canary,
                        extra_params,
                    )
                    .await
                    .map_err(e)?,
            )
        }
        BootChange::Promote {
            image,
            nodes,
            canary,
            ..
        } => {
            let plan = deployer
                .plan_promote(&group(nodes).map_err(|m| (m, None))?, canary)
                .await
                .map_err(e)?;
            // The composer checked the grants against the image its
            // history names; the store must agree.
            if plan.action.published().map(|(i, _)| i) != Some(image) {
                return Err((
                    format!("canary {canary} in the boot store does not run {image}"),
                    None,
                ));
            }
            Some(plan)
        }
        BootChange::Rollback { nodes, force, .. } => Some(
            deployer
                .plan_rollback(&NodeSelector::from(nodes.clone()), *force)
                .await
                .map_err(e)?,
        ),
        BootChange::Tag { image, tag, force } => {
            // A tag is written as it is planned: the store's conditional
            // create is what keeps two movers apart.
            let plan = deployer.tag(image, tag, *force).await.map_err(e)?;
            return Ok(BootResult {
                plan: Some(plan),
                nodes: Vec::new(),
            });
        }
        BootChange::Show { .. } => None,
    };
    if let (true, Some(plan)) = (args.change.writes(), plan.as_mut()) {
        if let Err(err) = deployer.apply(plan).await {
            return Err((err.to_string(), Some(plan.clone())));
        }
    }
    let nodes = match args.change.nodes() {
        Some(n) => deployer
            .show(&NodeSelector::from(n.clone()))
            .await
            .map_err(e)?,
        None => Vec::new(),
    };
    Ok(BootResult { plan, nodes })
}
