//! The workers of a fleet, as the compose API lists them (`GET /workers`,
//! kiln extension): every composer of the fleet lists the same workers,
//! from the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The workers that may build for the caller's tenant and were heard from
/// within the heartbeat timeout, or hold a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// `WorkerList`.
    pub kind: String,
    pub items: Vec<WorkerInfo>,
}

/// One worker: the name its client certificate proves, what it asks for,
/// when any composer last heard from it, and what it builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub name: String,
    /// The architecture it takes jobs for ("" until it asked for one).
    pub arch: String,
    /// The tenants (channels) it takes jobs of; empty for any.
    pub channels: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The caller's running jobs it holds.
    pub jobs: Vec<WorkerJobInfo>,
    /// How many running jobs of other tenants it holds.
    pub other_jobs: u32,
}

/// A running job a worker holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerJobInfo {
    pub id: Uuid,
    pub compose_id: Option<Uuid>,
    #[serde(rename = "type")]
    pub job_type: String,
    pub started_at: Option<DateTime<Utc>>,
}
