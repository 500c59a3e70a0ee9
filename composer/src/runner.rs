//! The jobs the composer runs itself, as osbuild-composer does: `depsolve`
//! (the exact package set of an image) and `manifest` (the osbuild manifest
//! from that set and the compose's customizations). Builds go to workers.
//!
//! Each job is leased from the queue like a worker's, heart-beaten while it
//! runs, and finished with its result or the reason it failed, so a composer
//! that dies mid-job loses nothing: the lease lapses and another takes it.

use std::sync::Arc;
use std::time::Duration;

use kiln_api::compose::{ComposeRequest, Repository};
use kiln_api::depsolve::DepsolvedPackage;
use kiln_api::validate::Family;
use kiln_depsolve::Request;
use kiln_manifests::customize::ImageCustomizations;
use kiln_manifests::generate::{self, ImageRequest};
use kiln_manifests::packages::package_files;
use kiln_queue::{DequeueFilter, Job, LeaseStatus, Outcome, QueueError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::plan::{JOB_DEPSOLVE, JOB_MANIFEST};
use crate::AppState;

/// Starts the job loop; it runs until the returned task is aborted.
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(state.config.jobs.concurrency.max(1)));
        let filter = DequeueFilter::types(&[JOB_DEPSOLVE, JOB_MANIFEST]);
        let name = format!("composer@{}", hostname());
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            match state
                .queue
                .dequeue(&filter, &name, Duration::from_secs(30))
                .await
            {
                Ok(Some(lease)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        run(&state, lease).await;
                        drop(permit);
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "taking composer jobs");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

async fn run(state: &AppState, lease: kiln_queue::Lease) {
    let job = lease.job.clone();
    // Heart-beat for the whole job; stop working if it gets canceled.
    let beat = {
        let queue = state.queue.clone();
        let every = Duration::from_secs((state.config.queue.heartbeat_timeout_secs / 3).max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match queue.heartbeat(lease.token).await {
                    Ok(LeaseStatus::Alive) => {}
                    Ok(_) => return,
                    Err(e) => tracing::warn!(error = %e, "heartbeat"),
                }
            }
        })
    };
    let outcome = match job.job_type.as_str() {
        JOB_DEPSOLVE => depsolve(state, &job).await,
        JOB_MANIFEST => manifest(state, &job).await,
        other => Err(format!("the composer does not run {other} jobs")),
    };
    beat.abort();
    let outcome = match outcome {
        Ok(result) => Outcome::Success(result),
        Err(reason) => Outcome::Failure {
            reason,
            result: None,
        },
    };
    match state.queue.finish(lease.token, outcome).await {
        Ok(j) => {
            tracing::info!(job = %j.id, kind = %j.job_type, state = j.state.as_str(), "composer job done")
        }
        Err(QueueError::Canceled(id)) => tracing::info!(job = %id, "job was canceled while it ran"),
        Err(e) => tracing::error!(job = %job.id, error = %e, "finishing a composer job"),
    }
}

#[derive(Deserialize)]
struct DepsolveArgs {
    distribution: String,
    architecture: String,
    #[serde(default)]
    repositories: Vec<Repository>,
    #[serde(default)]
    payload_repositories: Vec<Repository>,
    packages: Vec<String>,
}

async fn depsolve(state: &AppState, job: &Job) -> Result<Value, String> {
    let args: DepsolveArgs =
        serde_json::from_value(job.args.clone()).map_err(|e| format!("job arguments: {e}"))?;
    let distro = state
        .catalog
        .get(&args.distribution)
        .ok_or_else(|| format!("distribution {} is no longer configured", args.distribution))?;
    let repos = state
        .repos
        .get(
            &state.config.data_dir,
            distro,
            &args.architecture,
            &args.repositories,
            "repositories",
            &args.payload_repositories,
        )
        .await
        .map_err(|e| e.reason)?;
    let solution = repos
        .solve_async(Request {
            packages: args.packages,
            essential: distro.family == Family::Debian,
            recommends: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let packages: Vec<DepsolvedPackage> = solution
        .packages
        .into_iter()
        .map(|p| p.depsolved(distro.family))
        .collect();
    Ok(json!({ "packages": packages }))
}

#[derive(Deserialize)]
struct ManifestArgs {
    distribution: String,
    architecture: String,
    image_type: String,
}

async fn manifest(state: &AppState, job: &Job) -> Result<Value, String> {
    let args: ManifestArgs =
        serde_json::from_value(job.args.clone()).map_err(|e| format!("job arguments: {e}"))?;
    let distro = state
        .catalog
        .get(&args.distribution)
        .ok_or_else(|| format!("distribution {} is no longer configured", args.distribution))?;
    let compose_id = job
        .compose_id
        .ok_or("a manifest job belongs to a compose")?;
    let compose = state
        .queue
        .compose(compose_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its compose is gone")?;
    let request: ComposeRequest =
        serde_json::from_value(compose.request).map_err(|e| format!("stored request: {e}"))?;
    let mut solved: Option<Vec<DepsolvedPackage>> = None;
    for dep in &job.dependencies {
        let Some(d) = state.queue.job(*dep).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if d.job_type == JOB_DEPSOLVE {
            let packages = d
                .result
                .as_ref()
                .and_then(|r| r.get("packages"))
                .cloned()
                .unwrap_or(Value::Null);
            solved = Some(
                serde_json::from_value(packages).map_err(|e| format!("depsolve result: {e}"))?,
            );
        }
    }
    let solved = solved.ok_or("no depsolve result to build from")?;
    let files = package_files(&solved);
    let customizations = match (&request.customizations, &request.blueprint) {
        (Some(c), _) => ImageCustomizations::from_customizations(c),
        (None, Some(b)) => ImageCustomizations::from_blueprint(b),
        (None, None) => ImageCustomizations::default(),
    };
    let filename = distro
        .image_type(&args.architecture, &args.image_type)
        .map(|t| t.filename.clone())
        .unwrap_or_default();
    let manifest = generate::manifest(&ImageRequest {
        family: distro.family,
        arch: &args.architecture,
        image_type: &args.image_type,
        filename: &filename,
        source_epoch: request
            .blueprint
            .as_ref()
            .and_then(|b| b.source_epoch)
            .unwrap_or(distro.source_epoch),
        packages: &files,
        customizations: &customizations,
    })
    .map_err(|e| e.to_string())?;
    let mut result = json!({
        "manifest": manifest,
        "export": generate::export_pipeline(&args.image_type),
        "filename": filename,
    });
    if args.image_type == "pxe" {
        result["kernel_cmdline"] = json!(generate::pxe_kernel_cmdline(&customizations));
    }
    Ok(result)
}
