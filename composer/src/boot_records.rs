//! What boot delivery did, kept in the database when a worker finishes the
//! job that did it: a `boot` job (a change or a read asked through the
//! API) or a `build` job with `boot` targets. Each applied change goes to
//! the history under its deployment id (so a result reported twice is
//! recorded once); what the nodes boot afterwards goes to the node records.
//! Written before the job is finished in the queue: the boot service was
//! changed whether or not the lease is still good.

use chrono::{DateTime, Utc};
use kiln_api::boot::{Action, BootHistoryEntry, NodeStatus, Plan, Requester};
use kiln_api::jobs::{BootArgs, BootResult, BuildArgs, BuildResult};
use kiln_api::status::UploadDetails;
use kiln_queue::{BootChangeRecord, Job, JobQueue, NodeBootRecord, QueueError};

/// Records what a finished `boot` job did (a dry run did nothing) and read;
/// `failed` is the reason of a job that failed while applying its plan.
pub async fn boot_job(
    queue: &dyn JobQueue,
    job: &Job,
    args: &BootArgs,
    result: &BootResult,
    failed: Option<&str>,
) -> Result<(), QueueError> {
    let now = Utc::now();
    let requested_by = &args.requested_by;
    if let (true, Some(plan)) = (args.change.writes(), &result.plan) {
        history(queue, job, requested_by, plan, failed, now).await?;
    }
    let nodes: Vec<NodeBootRecord> = result
        .nodes
        .iter()
        .map(|n| node(n, now))
        .collect::<Result<_, _>>()?;
    queue.observe_nodes(&requested_by.tenant, &nodes).await
}

/// Records the publishes a finished `build` job's `boot` targets made.
pub async fn build_job(
    queue: &dyn JobQueue,
    job: &Job,
    args: &BuildArgs,
    result: &BuildResult,
) -> Result<(), QueueError> {
    let requested_by = args.requested_by.clone().unwrap_or_else(|| Requester {
        tenant: job.channel.clone(),
        subject: None,
    });
    let now = Utc::now();
    for status in &result.uploads {
        let Ok(UploadDetails::Boot(upload)) = status.details() else {
            continue;
        };
        if upload.dry_run {
            continue;
        }
        let plan = &upload.plan;
        history(queue, job, &requested_by, plan, None, now).await?;
        // Every selected node now boots the plan's target (the unchanged
        // ones did already).
        let kiln_api::boot::Action::Publish { image, compose_id } = &plan.action else {
            continue;
        };
        let Some(target) = plan.changes.first().and_then(|c| c.after.clone()) else {
            continue;
        };
        let nodes = plan
            .changes
            .iter()
            .map(|c| &c.xname)
            .chain(&plan.unchanged)
            .map(|x| {
                node(
                    &NodeStatus {
                        xname: x.clone(),
                        current: Some(target.clone()),
                        image: Some(image.clone()),
                        compose_id: Some(*compose_id),
                        last_deployment: Some(plan.id.clone()),
                        tags: Vec::new(),
                    },
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        queue.observe_nodes(&requested_by.tenant, &nodes).await?;
    }
    Ok(())
}

/// An applied plan with at least one change (kiln-boot records nothing
/// for a plan without), or a tag, goes to the history.
async fn history(
    queue: &dyn JobQueue,
    job: &Job,
    requested_by: &Requester,
    plan: &Plan,
    failed: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    if plan.changes.is_empty() && !matches!(plan.action, Action::Tag { .. }) {
        return Ok(());
    }
    let entry = BootHistoryEntry {
        failed: failed.map(str::to_owned),
        ..BootHistoryEntry::of(plan, requested_by.clone(), job.id, now)
    };
    let record = BootChangeRecord {
        id: plan.id.clone(),
        channel: requested_by.tenant.clone(),
        job_id: job.id,
        nodes: plan.changes.iter().map(|c| c.xname.to_string()).collect(),
        record: encode(&entry)?,
        created_at: now,
    };
    if queue.record_boot_change(&record).await? {
        tracing::info!(deployment = %plan.id, tenant = %requested_by.tenant, subject = ?requested_by.subject,
            job = %job.id, nodes = plan.changes.len(), "boot change recorded");
    }
    Ok(())
}

fn node(n: &NodeStatus, at: DateTime<Utc>) -> Result<NodeBootRecord, QueueError> {
    Ok(NodeBootRecord {
        xname: n.xname.to_string(),
        record: encode(n)?,
        observed_at: at,
    })
}

fn encode(v: &impl serde::Serialize) -> Result<serde_json::Value, QueueError> {
    serde_json::to_value(v).map_err(|e| QueueError::Corrupt(format!("boot record: {e}")))
}
