//! The jobs the composer runs itself, as osbuild-composer does: `depsolve`
//! (the exact package set of an image) and `manifest` (the osbuild manifest
//! from that set and the compose's customizations). Builds go to workers.
//!
//! Each job is leased from the queue like a worker's, heart-beaten while it
//! runs, and finished with its result or the reason it failed, so a composer
//! that dies mid-job loses nothing: the lease lapses and another takes it.

use std::sync::Arc;
use std::time::Duration;

use kiln_api::compose::ComposeRequest;
use kiln_api::jobs::{
    DepsolveArgs, DepsolveResult, JobKind, JobResult, ManifestArgs, ManifestResult,
};
use kiln_api::request_id::RequestId;
use kiln_api::validate::Family;
use kiln_api::worker::AssignedJob;
use kiln_depsolve::Request;
use kiln_manifests::customize::ImageCustomizations;
use kiln_manifests::generate::{self, ImageRequest};
use kiln_manifests::packages::{install_stage_ids, package_files};
use kiln_queue::{DequeueFilter, Job, LeaseStatus, QueueError};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::jobs;
use crate::AppState;

/// The kinds of job the composer runs itself.
const COMPOSER_JOBS: [JobKind; 2] = [JobKind::Depsolve, JobKind::Manifest];

/// Starts the job loop; it runs until the returned task is aborted.
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(state.config.jobs.concurrency.max(1)));
        let filter = DequeueFilter::types(&COMPOSER_JOBS.map(JobKind::as_str));
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
                    let span = job_span(&lease.job);
                    tokio::spawn(
                        async move {
                            run(&state, lease).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
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

/// The span a composer job runs in: every log line of the job names it,
/// its compose and the request id of the API call that made it.
fn job_span(job: &Job) -> tracing::Span {
    tracing::info_span!(
        "job",
        job = %job.id,
        kind = %job.job_type,
        compose = %job.compose_id.map(|c| c.to_string()).unwrap_or_default(),
        request_id = %job.request_id.as_deref().and_then(RequestId::parse).map(|r| r.to_string()).unwrap_or_default(),
    )
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
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    match queue.heartbeat(lease.token).await {
                        Ok(LeaseStatus::Alive) => {}
                        Ok(_) => return,
                        Err(e) => tracing::warn!(error = %e, "heartbeat"),
                    }
                }
            }
            .in_current_span(),
        )
    };
    let work = async {
        match jobs::assignment(state.queue.as_ref(), &job).await {
            Ok(AssignedJob::Depsolve { args }) => depsolve(state, args).await.map(JobResult::from),
            Ok(AssignedJob::Manifest { args, depsolved }) => manifest(state, &job, args, depsolved)
                .await
                .map(JobResult::from),
            Ok(other) => Err(format!("the composer does not run {} jobs", other.kind())),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut beat = beat;
    // The heart-beat ends only when the job is canceled or its lease lost:
    // then the work stops (its fetches are dropped) and the slot is free.
    let ended = tokio::select! {
        ended = work => ended,
        _ = &mut beat => {
            tracing::info!(job = %job.id, "job canceled (or its lease lost) while it ran: stopped");
            return;
        }
    };
    beat.abort();
    let outcome = jobs::outcome(ended);
    let finished = state.queue.finish(lease.token, outcome).await;
    if let Some(c) = lease.job.compose_id {
        state.statuses.forget(c);
    }
    match finished {
        Ok(j) => {
            tracing::info!(job = %j.id, kind = %j.job_type, state = j.state.as_str(), "composer job done")
        }
        Err(QueueError::Canceled(id)) => tracing::info!(job = %id, "job was canceled while it ran"),
        Err(e) => tracing::error!(job = %job.id, error = %e, "finishing a composer job"),
    }
}

async fn depsolve(state: &AppState, args: DepsolveArgs) -> Result<DepsolveResult, String> {
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
        .map_err(|e| e.to_string())?;
    let solution = repos
        .solve_async(Request {
            packages: args.packages,
            essential: distro.family == Family::Debian,
            recommends: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(DepsolveResult {
        packages: solution
            .packages
            .iter()
            .map(|p| p.depsolved(distro.family))
            .collect(),
    })
}

async fn manifest(
    state: &AppState,
    job: &Job,
    args: ManifestArgs,
    depsolved: Option<DepsolveResult>,
) -> Result<ManifestResult, String> {
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
    let depsolved = depsolved.ok_or("no depsolve result to build from")?;
    let files = package_files(&depsolved.packages);
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
    let checkpoints = install_stage_ids(&manifest).map_err(|e| e.to_string())?;
    Ok(ManifestResult {
        export: generate::export_pipeline(&args.image_type).to_owned(),
        filename,
        kernel_cmdline: (generate::base(&args.image_type) == "pxe")
            .then(|| generate::pxe_kernel_cmdline(&customizations)),
        checkpoints,
        manifest,
    })
}
