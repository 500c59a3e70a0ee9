//! The worker protocol: what a worker and the composer say to each other on
//! the worker listener (mutual TLS), under [`WORKER_API_PREFIX`].
//!
//! - `POST /jobs` ([`RequestJob`]) long-polls for a job: 200 with a
//!   [`JobAssignment`], or 204 when none came within `wait_secs`.
//! - `POST /jobs/{token}/heartbeat` renews the lease: 200 with a
//!   [`HeartbeatResponse`], 404 when the lease is gone.
//! - `POST /jobs/{token}/progress` ([`JobProgressUpdate`]) reports progress
//!   and log lines, and renews the lease as a heartbeat does.
//! - `POST /jobs/{token}/finish` ([`FinishJob`]) ends it: 200 with a
//!   [`FinishResponse`], 409 when the job was canceled, 404 when the lease is gone.
//!
//! The worker's name is not part of any body: it is the DNS name of its
//! client certificate, so a worker cannot claim to be another.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
use uuid::Uuid;

use crate::error::{ErrorKind, FieldError};
pub use crate::jobs::{Artifact, BootArgs, BuildResult};
use crate::jobs::{
    BuildArgs, DepsolveArgs, DepsolveResult, JobError, JobKind, JobResult, ManifestArgs,
    ManifestResult,
};

/// The prefix of every worker API path.
pub const WORKER_API_PREFIX: &str = "/api/worker/v1";

/// The longest long-poll a worker may ask for; past this, proxies and load
/// balancers between worker and composer commonly cut idle connections.
pub const MAX_WAIT_SECS: u64 = 300;

/// `POST /jobs`: which jobs the worker takes, and how long it waits for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestJob {
    /// Job types the worker runs, e.g. `["build"]`.
    pub types: Vec<String>,
    /// The architecture the worker builds for (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Channels (tenants) served; empty serves every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// How long to wait for a job before answering 204 (at most [`MAX_WAIT_SECS`]).
    #[serde(default)]
    pub wait_secs: u64,
}

impl RequestJob {
    /// Checks the request, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.types.is_empty() {
            return Err(invalid("types", "name at least one job type"));
        }
        for (i, t) in self.types.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(invalid(format!("types[{i}]"), "a job type cannot be empty"));
            }
        }
        if self.arch.trim().is_empty() {
            return Err(invalid("arch", "the architecture cannot be empty"));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(invalid(
                    format!("channels[{i}]"),
                    "a channel cannot be empty",
                ));
            }
        }
        if self.wait_secs > MAX_WAIT_SECS {
            return Err(invalid(
                "wait_secs",
                format!("at most {MAX_WAIT_SECS} seconds, not {}", self.wait_secs),
            ));
        }
        Ok(())
    }
}

/// A job handed to a worker. `token` proves the lease: heartbeat and finish
/// name it, and it is worth as much as the job, so it is never logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAssignment {
    pub token: Uuid,
    pub id: Uuid,
    /// The compose the job belongs to; none for a lone job.
    pub compose_id: Option<Uuid>,
    /// The request id of the API call that made the job, for the worker's
    /// and the executor's logs; none for jobs made otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<crate::request_id::RequestId>,
    /// The job's kind (`type`), its arguments (`args`) and what the jobs
    /// it depends on made.
    #[serde(flatten)]
    pub job: AssignedJob,
}

/// A job's typed arguments, with the typed results of the jobs it depends
/// on: the composer reads them from the queue by their kinds, so a worker
/// never guesses which dependency result is which.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AssignedJob {
    Depsolve {
        args: DepsolveArgs,
    },
    Manifest {
        args: ManifestArgs,
        /// The depsolve job's result; none when the job has no depsolve job.
        depsolved: Option<DepsolveResult>,
    },
    Build {
        args: BuildArgs,
        /// The manifest job's result; none when the job has no manifest job.
        manifest: Option<ManifestResult>,
    },
    Boot {
        args: BootArgs,
    },
}

impl AssignedJob {
    pub fn kind(&self) -> JobKind {
        match self {
            AssignedJob::Depsolve { .. } => JobKind::Depsolve,
            AssignedJob::Manifest { .. } => JobKind::Manifest,
            AssignedJob::Build { .. } => JobKind::Build,
            AssignedJob::Boot { .. } => JobKind::Boot,
        }
    }
}

/// What a running build is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildPhase {
    Building,
    Uploading,
}

/// `POST /jobs/{token}/progress`: where the job stands, and new log lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProgressUpdate {
    #[serde(default)]
    pub phase: Option<BuildPhase>,
    #[serde(default)]
    pub progress: Option<crate::status::Progress>,
    /// Log lines since the last update.
    #[serde(default)]
    pub log: Vec<String>,
}

/// Most log lines one progress update may carry.
pub const MAX_LOG_LINES: usize = 1000;

impl JobProgressUpdate {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.log.len() > MAX_LOG_LINES {
            return Err(invalid(
                "log",
                format!(
                    "at most {MAX_LOG_LINES} lines per update, not {}",
                    self.log.len()
                ),
            ));
        }
        if let Some(p) = &self.progress {
            if p.done < 0 || p.total < 0 || p.done > p.total {
                return Err(invalid(
                    "progress",
                    "done and total must satisfy 0 <= done <= total",
                ));
            }
        }
        Ok(())
    }
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Keep going.
    Alive,
    /// The job was canceled: stop the work and do not finish it.
    Canceled,
}

/// `POST /jobs/{token}/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatResponse {
    pub status: LeaseState,
}

/// `POST /jobs/{token}/finish`: how the job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishJob {
    pub success: bool,
    /// The job's result, an object (e.g. a build's artifacts and upload statuses).
    #[serde(default)]
    pub result: Option<Value>,
    /// Why the job failed; required when `success` is false.
    #[serde(default)]
    pub reason: Option<String>,
}

impl FinishJob {
    /// A job that succeeded with `result`.
    pub fn succeeded(result: &JobResult) -> Result<FinishJob, JobError> {
        Ok(FinishJob {
            success: true,
            result: Some(result.encode()?),
            reason: None,
        })
    }

    /// A job that failed for `reason`, with what it got done.
    pub fn failed(
        reason: impl Into<String>,
        result: Option<&JobResult>,
    ) -> Result<FinishJob, JobError> {
        Ok(FinishJob {
            success: false,
            result: result.map(JobResult::encode).transpose()?,
            reason: Some(reason.into()),
        })
    }

    /// Checks the request, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(r) = &self.result {
            if !r.is_object() {
                return Err(invalid("result", "must be a JSON object"));
            }
        }
        let reason = self.reason.as_deref().map(str::trim).unwrap_or("");
        if !self.success && reason.is_empty() {
            return Err(invalid("reason", "a failed job must say why"));
        }
        Ok(())
    }
}

/// `POST /jobs/{token}/release`: the worker gives its job back without a
/// result (it was told to stop at once); the composer queues it again at
/// once, counted as a requeue, instead of waiting for its heartbeats to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseJob {
    /// Why, for the job's record (one line, at most [`MAX_RELEASE_REASON`] bytes).
    pub reason: String,
}

/// The longest reason a release may give.
pub const MAX_RELEASE_REASON: usize = 512;

impl ReleaseJob {
    pub fn validate(&self) -> Result<(), FieldError> {
        let r = self.reason.trim();
        if r.is_empty() {
            return Err(invalid("reason", "a released job must say why"));
        }
        if r.len() > MAX_RELEASE_REASON || r.chars().any(char::is_control) {
            return Err(invalid(
                "reason",
                format!("one line of at most {MAX_RELEASE_REASON} bytes"),
            ));
        }
        Ok(())
    }
}

/// The answer to a finish or a release: the job's state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishResponse {
    pub id: Uuid,
    /// `success` or `failed` after a finish; `queued` or `failed` after a release.
    pub state: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::InvalidField, field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_says_why_in_one_line() {
        let r = |reason: &str| {
            ReleaseJob {
                reason: reason.into(),
            }
            .validate()
        };
        assert!(r("told to stop at once").is_ok());
        for bad in ["", "  ", "two\nlines", &"x".repeat(MAX_RELEASE_REASON + 1)] {
            assert_eq!(r(bad).unwrap_err().field, "reason", "{bad:?}");
        }
    }
    use serde_json::json;

    fn request(v: Value) -> Result<RequestJob, String> {
        let r: RequestJob = serde_json::from_value(v).map_err(|e| e.to_string())?;
        r.validate().map_err(|e| e.field)?;
        Ok(r)
    }

    #[test]
    fn a_job_request_names_the_field_at_fault() {
        let ok = request(json!({"types": ["build"], "arch": "x86_64", "wait_secs": 30})).unwrap();
        assert_eq!(ok.channels, Vec::<String>::new());
        assert_eq!(
            request(json!({"types": [], "arch": "x86_64"})),
            Err("types".into())
        );
        assert_eq!(
            request(json!({"types": ["build", " "], "arch": "x86_64"})),
            Err("types[1]".into())
        );
        assert_eq!(
            request(json!({"types": ["build"], "arch": ""})),
            Err("arch".into())
        );
        assert_eq!(
            request(json!({"types": ["build"], "arch": "x86_64", "channels": [""]})),
            Err("channels[0]".into())
        );
        assert_eq!(
            request(json!({"types": ["build"], "arch": "x86_64", "wait_secs": 301})),
            Err("wait_secs".into())
        );
        assert!(
            request(json!({"types": ["build"], "arch": "x86_64", "worker": "w"}))
                .unwrap_err()
                .contains("unknown field `worker`")
        );
    }

    #[test]
    fn a_failure_must_say_why_and_a_result_is_an_object() {
        let finish = |v: Value| {
            serde_json::from_value::<FinishJob>(v)
                .unwrap()
                .validate()
                .map_err(|e| e.field)
        };
        assert_eq!(finish(json!({"success": true})), Ok(()));
        assert_eq!(
            finish(json!({"success": false, "reason": "osbuild exited 1"})),
            Ok(())
        );
        assert_eq!(finish(json!({"success": false})), Err("reason".into()));
        assert_eq!(
            finish(json!({"success": false, "reason": "  "})),
            Err("reason".into())
        );
        assert_eq!(
            finish(json!({"success": true, "result": [1]})),
            Err("result".into())
        );
    }

    #[test]
    fn an_assignment_calls_its_type_type() {
        let a = JobAssignment {
            token: Uuid::nil(),
            id: Uuid::nil(),
            compose_id: None,
            request_id: None,
            job: AssignedJob::Build {
                args: BuildArgs {
                    image: 0,
                    image_type: "tar".into(),
                    targets: vec![],
                    requested_by: None,
                },
                manifest: None,
            },
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["type"], "build");
        assert_eq!(v["compose_id"], Value::Null);
        // No request id: no field, and an assignment without one reads back.
        assert!(v.get("request_id").is_none(), "{v}");
        let with_id = JobAssignment {
            request_id: crate::request_id::RequestId::parse("req-1"),
            ..a.clone()
        };
        let w = serde_json::to_value(&with_id).unwrap();
        assert_eq!(w["request_id"], "req-1");
        assert_eq!(
            serde_json::from_value::<JobAssignment>(w.clone()).unwrap(),
            with_id
        );
        // An id that is not one is refused where it is read.
        let mut bad = w;
        bad["request_id"] = Value::from("a b");
        assert!(serde_json::from_value::<JobAssignment>(bad).is_err());
        assert_eq!(
            serde_json::to_value(HeartbeatResponse {
                status: LeaseState::Canceled
            })
            .unwrap(),
            json!({"status": "canceled"})
        );
        assert_eq!(v["args"]["image"], 0);
        assert!(v.get("manifest").is_none());
        let back: JobAssignment = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.job.kind(), JobKind::Build);
    }

    #[test]
    fn a_build_gets_its_manifest_typed() {
        let v = json!({
            "token": Uuid::nil(), "id": Uuid::nil(), "compose_id": null, "type": "build",
            "args": {"image": 1, "image_type": "pxe", "targets": []},
            "manifest": {"manifest": {}, "export": "pxe", "filename": "initrd.img",
                         "kernel_cmdline": "quiet", "checkpoints": ["abc"]},
        });
        let a: JobAssignment = serde_json::from_value(v).unwrap();
        let AssignedJob::Build {
            args,
            manifest: Some(m),
        } = a.job
        else {
            panic!("not a build with its manifest");
        };
        assert_eq!(args.image, 1);
        assert_eq!(m.checkpoints, vec!["abc".to_owned()]);
        assert_eq!(m.kernel_cmdline.as_deref(), Some("quiet"));
    }
}
