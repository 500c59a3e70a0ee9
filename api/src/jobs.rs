//! The job contract: every kind of job in a compose's graph, with its typed
//! arguments and its typed result. The queue (`kiln-queue`) stores them as
//! opaque JSON; the composer writes and reads them only through these types,
//! and the worker receives them typed in its [`crate::worker::JobAssignment`],
//! so the two cannot drift apart (osbuild-composer's `internal/worker/json.go`
//! is the model).
//!
//! Per image: [`Depsolve`] → [`Manifest`] → [`Build`]. Every job's arguments
//! name the image (in request order) it works for.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use crate::boot::{BootChange, NodeStatus, Plan, Requester};
use crate::compose::{Repository, UploadTarget};
use crate::depsolve::DepsolvedPackage;
use crate::status::UploadStatus;
use crate::validate::Family;

/// The kinds of job, as the queue's `job_type` column names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// The exact package set of an image (run by the composer).
    Depsolve,
    /// The osbuild manifest of an image (run by the composer).
    Manifest,
    /// Build the manifest and upload the result (run by a worker).
    Build,
    /// Change or read what nodes boot (run by a worker that holds the boot
    /// service's credentials).
    Boot,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Depsolve,
        JobKind::Manifest,
        JobKind::Build,
        JobKind::Boot,
    ];

    /// The name the queue stores.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Depsolve => "depsolve",
            JobKind::Manifest => "manifest",
            JobKind::Build => "build",
            JobKind::Boot => "boot",
        }
    }

    /// The kind the queue's name stands for.
    pub fn parse(name: &str) -> Result<JobKind, JobError> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| JobError::UnknownKind(name.to_owned()))
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's stored arguments or result that do not fit its kind's type.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("unknown job type {0:?}")]
    UnknownKind(String),
    #[error("{kind} job arguments: {source}")]
    Args {
        kind: JobKind,
        source: serde_json::Error,
    },
    #[error("{kind} job result: {source}")]
    Result {
        kind: JobKind,
        source: serde_json::Error,
    },
    #[error("writing {kind} job data: {source}")]
    Encode {
        kind: JobKind,
        source: serde_json::Error,
    },
}

/// One kind of job: its name in the queue, its arguments and its result.
pub trait JobType {
    const KIND: JobKind;
    type Args: Serialize + DeserializeOwned;
    type Result: Serialize + DeserializeOwned;

    fn decode_args(args: &Value) -> Result<Self::Args, JobError> {
        Self::Args::deserialize(args).map_err(|source| JobError::Args {
            kind: Self::KIND,
            source,
        })
    }

    fn decode_result(result: &Value) -> Result<Self::Result, JobError> {
        Self::Result::deserialize(result).map_err(|source| JobError::Result {
            kind: Self::KIND,
            source,
        })
    }

    fn encode_args(args: &Self::Args) -> Result<Value, JobError> {
        encode(Self::KIND, args)
    }

    fn encode_result(result: &Self::Result) -> Result<Value, JobError> {
        encode(Self::KIND, result)
    }
}

fn encode(kind: JobKind, v: &impl Serialize) -> Result<Value, JobError> {
    serde_json::to_value(v).map_err(|source| JobError::Encode { kind, source })
}

/// The `depsolve` job.
pub struct Depsolve;
/// The `manifest` job.
pub struct Manifest;
/// The `build` job.
pub struct Build;
/// The `boot` job.
pub struct Boot;

impl JobType for Depsolve {
    const KIND: JobKind = JobKind::Depsolve;
    type Args = DepsolveArgs;
    type Result = DepsolveResult;
}

impl JobType for Manifest {
    const KIND: JobKind = JobKind::Manifest;
    type Args = ManifestArgs;
    type Result = ManifestResult;
}

impl JobType for Build {
    const KIND: JobKind = JobKind::Build;
    type Args = BuildArgs;
    type Result = BuildResult;
}

impl JobType for Boot {
    const KIND: JobKind = JobKind::Boot;
    type Args = BootArgs;
    type Result = BootResult;
}

/// The queue's `arch` of a job any worker may take whatever its
/// architecture (a `boot` job: no image is built).
pub const ANY_ARCH: &str = "any";

/// A change of what nodes boot (or a read of it), outside any compose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootArgs {
    pub change: BootChange,
    pub requested_by: Requester,
}

/// What a `boot` job did and what the nodes boot afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootResult {
    /// The applied (or, for a dry run, computed) plan; none for a read.
    pub plan: Option<Plan>,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// What to depsolve: the image's package list against its repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepsolveArgs {
    pub image: usize,
    pub distribution: String,
    pub family: Family,
    /// The image's architecture, as the distribution names it (`x86_64`).
    pub architecture: String,
    /// The same architecture as the packages name it (`amd64`).
    pub package_arch: String,
    pub image_type: String,
    /// Empty: the distribution's own repositories, with their keyrings.
    #[serde(default)]
    pub repositories: Vec<Repository>,
    #[serde(default)]
    pub payload_repositories: Vec<Repository>,
    /// The image type's packages and the ones the request adds.
    pub packages: Vec<String>,
}

/// The exact package set of an image (the compose's `/metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepsolveResult {
    pub packages: Vec<DepsolvedPackage>,
}

/// What to write a manifest for; the packages come from the depsolve job
/// this one depends on, the customizations from the compose's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestArgs {
    pub image: usize,
    pub distribution: String,
    pub architecture: String,
    pub image_type: String,
}

/// The manifest and what a worker needs to run it.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestResult {
    /// The osbuild v2 manifest (the compose's `/manifests`).
    pub manifest: Value,
    /// The pipeline whose tree is the image.
    pub export: String,
    /// The image's file name in that tree.
    pub filename: String,
    /// The kernel command line of a `pxe` image.
    pub kernel_cmdline: Option<String>,
    /// Stage ids to keep in the executor's store (`--checkpoint`): the
    /// package installation, so that a build differing only in its
    /// customizations starts after it. Computed where the manifest is made.
    #[serde(default)]
    pub checkpoints: Vec<String>,
}

impl ManifestResult {
    /// The names a worker turns into paths and executor arguments: the
    /// export pipeline and the file name must be plain names (no `/`, not
    /// `.` or `..`, not an option), the checkpoints stage ids (hex).
    pub fn check_names(&self) -> Result<(), String> {
        let plain = |what: &str, s: &str| {
            let ok = !s.is_empty()
                && s.len() <= 255
                && s != "."
                && s != ".."
                && !s.starts_with('-')
                && !s.contains(['/', '\0']);
            if ok {
                Ok(())
            } else {
                Err(format!("the manifest's {what} {s:?} is not a plain name"))
            }
        };
        plain("export", &self.export)?;
        plain("filename", &self.filename)?;
        for id in &self.checkpoints {
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "the manifest's checkpoint {id:?} is not a stage id"
                ));
            }
        }
        Ok(())
    }
}

/// What to build: the image (its manifest comes from the manifest job this
/// one depends on) and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildArgs {
    pub image: usize,
    #[serde(default)]
    pub image_type: String,
    /// The image's upload targets, in request order (`upload_options` as a
    /// `local` target at the end).
    #[serde(default)]
    pub targets: Vec<UploadTarget>,
    /// Who submitted the compose: the boot history names them when a
    /// `boot` target changes what nodes boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
}

/// What a `build` job's result holds.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildResult {
    /// One status per upload target, in the image request's order; none
    /// when the build failed before uploading.
    #[serde(default)]
    pub uploads: Vec<UploadStatus>,
    /// The image's files (name, size, sha256), as built.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The kernel command line of a `pxe` image.
    pub kernel_cmdline: Option<String>,
    /// The executor's per-stage log (its `--json` result's `log`), each
    /// output trimmed; `null` when the executor reported none.
    #[serialize_always]
    pub log: Option<crate::osbuild::StageLogs>,
    /// The SBOM of the image's tree (also uploaded beside the artifacts);
    /// none when the build failed or its executor reported no packages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sboms: Vec<crate::sbom::ImageSbom>,
}

/// One file of a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The arguments of any job, by its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum JobArgs {
    Depsolve(DepsolveArgs),
    Manifest(ManifestArgs),
    Build(BuildArgs),
    Boot(BootArgs),
}

impl JobArgs {
    pub fn kind(&self) -> JobKind {
        match self {
            JobArgs::Depsolve(_) => JobKind::Depsolve,
            JobArgs::Manifest(_) => JobKind::Manifest,
            JobArgs::Build(_) => JobKind::Build,
            JobArgs::Boot(_) => JobKind::Boot,
        }
    }

    /// The image (in request order) the job works for; 0 for a job of no
    /// compose.
    pub fn image(&self) -> usize {
        match self {
            JobArgs::Depsolve(a) => a.image,
            JobArgs::Manifest(a) => a.image,
            JobArgs::Build(a) => a.image,
            JobArgs::Boot(_) => 0,
        }
    }

    /// Reads the stored arguments of a job of `kind`.
    pub fn decode(kind: JobKind, args: &Value) -> Result<JobArgs, JobError> {
        Ok(match kind {
            JobKind::Depsolve => JobArgs::Depsolve(Depsolve::decode_args(args)?),
            JobKind::Manifest => JobArgs::Manifest(Manifest::decode_args(args)?),
            JobKind::Build => JobArgs::Build(Build::decode_args(args)?),
            JobKind::Boot => JobArgs::Boot(Boot::decode_args(args)?),
        })
    }

    /// The arguments as the queue stores them.
    pub fn encode(&self) -> Result<Value, JobError> {
        match self {
            JobArgs::Depsolve(a) => Depsolve::encode_args(a),
            JobArgs::Manifest(a) => Manifest::encode_args(a),
            JobArgs::Build(a) => Build::encode_args(a),
            JobArgs::Boot(a) => Boot::encode_args(a),
        }
    }
}

/// The result of any job, by its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    Depsolve(DepsolveResult),
    Manifest(ManifestResult),
    Build(BuildResult),
    Boot(BootResult),
}

impl JobResult {
    pub fn kind(&self) -> JobKind {
        match self {
            JobResult::Depsolve(_) => JobKind::Depsolve,
            JobResult::Manifest(_) => JobKind::Manifest,
            JobResult::Build(_) => JobKind::Build,
            JobResult::Boot(_) => JobKind::Boot,
        }
    }

    /// Reads the stored result of a job of `kind`.
    pub fn decode(kind: JobKind, result: &Value) -> Result<JobResult, JobError> {
        Ok(match kind {
            JobKind::Depsolve => JobResult::Depsolve(Depsolve::decode_result(result)?),
            JobKind::Manifest => JobResult::Manifest(Manifest::decode_result(result)?),
            JobKind::Build => JobResult::Build(Build::decode_result(result)?),
            JobKind::Boot => JobResult::Boot(Boot::decode_result(result)?),
        })
    }

    /// The result as the queue stores it.
    pub fn encode(&self) -> Result<Value, JobError> {
        match self {
            JobResult::Depsolve(r) => Depsolve::encode_result(r),
            JobResult::Manifest(r) => Manifest::encode_result(r),
            JobResult::Build(r) => Build::encode_result(r),
            JobResult::Boot(r) => Boot::encode_result(r),
        }
    }
}

impl From<DepsolveResult> for JobResult {
    fn from(r: DepsolveResult) -> Self {
        JobResult::Depsolve(r)
    }
}

impl From<ManifestResult> for JobResult {
    fn from(r: ManifestResult) -> Self {
        JobResult::Manifest(r)
    }
}

impl From<BuildResult> for JobResult {
    fn from(r: BuildResult) -> Self {
        JobResult::Build(r)
    }
}

impl From<BootResult> for JobResult {
    fn from(r: BootResult) -> Self {
        JobResult::Boot(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifest_names_are_plain() {
        let good = ManifestResult {
            manifest: json!({}),
            export: "image".into(),
            filename: "disk.qcow2".into(),
            kernel_cmdline: None,
            checkpoints: vec!["ab12".into()],
        };
        assert!(good.check_names().is_ok());
        for (export, filename, checkpoint) in [
            ("../x", "disk", "ab"),
            ("image", "../../etc/passwd", "ab"),
            ("image", "/etc/passwd", "ab"),
            ("..", "disk", "ab"),
            ("--inspect", "disk", "ab"),
            ("image", "disk", "../store"),
            ("", "disk", "ab"),
        ] {
            let bad = ManifestResult {
                export: export.into(),
                filename: filename.into(),
                checkpoints: vec![checkpoint.into()],
                ..good.clone()
            };
            assert!(
                bad.check_names().is_err(),
                "{export} {filename} {checkpoint}"
            );
        }
    }

    #[test]
    fn kinds_are_the_queue_names() {
        for k in JobKind::ALL {
            assert_eq!(JobKind::parse(k.as_str()).unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        assert!(matches!(
            JobKind::parse("upload"),
            Err(JobError::UnknownKind(k)) if k == "upload"
        ));
    }

    #[test]
    fn arguments_round_trip_and_name_their_image() {
        let args = JobArgs::Build(BuildArgs {
            image: 2,
            image_type: "pxe".into(),
            targets: vec![UploadTarget::Local(Default::default())],
            requested_by: None,
        });
        let stored = args.encode().unwrap();
        assert_eq!(
            stored,
            json!({"image": 2, "image_type": "pxe", "targets": [{"type": "local", "upload_options": {}}]})
        );
        let back = JobArgs::decode(JobKind::Build, &stored).unwrap();
        assert_eq!(back, args);
        assert_eq!(back.image(), 2);
        let err = JobArgs::decode(JobKind::Manifest, &stored).unwrap_err();
        assert!(
            err.to_string().starts_with("manifest job arguments:"),
            "{err}"
        );
    }

    #[test]
    fn a_build_result_reads_what_older_builds_stored() {
        // Only upload statuses (a failed build), no log.
        let r = Build::decode_result(&json!({"uploads": [
            {"type": "aws.s3", "status": "failure", "options": {"reason": "denied"}}
        ]}))
        .unwrap();
        assert_eq!(r.uploads.len(), 1);
        assert!(r.artifacts.is_empty() && r.log.is_none());
        let r = Build::decode_result(&json!({"uploads": [], "log": null})).unwrap();
        assert!(r.log.is_none());
        assert_eq!(
            Build::encode_result(&r).unwrap(),
            json!({"uploads": [], "artifacts": [], "log": null})
        );
    }

    #[test]
    fn a_manifest_result_carries_its_checkpoints() {
        let r = ManifestResult {
            manifest: json!({"version": "2"}),
            export: "archive".into(),
            filename: "root.tar".into(),
            kernel_cmdline: None,
            checkpoints: vec!["abc".into()],
        };
        let v = Manifest::encode_result(&r).unwrap();
        assert_eq!(v["checkpoints"], json!(["abc"]));
        assert!(v.get("kernel_cmdline").is_none());
        assert_eq!(Manifest::decode_result(&v).unwrap(), r);
    }
}
