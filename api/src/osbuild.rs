//! osbuild's command-line contract as types: the `--json` result and the
//! `JSONSeqMonitor` records. `kiln-osbuild` writes them, `kiln-worker`
//! reads them (from kiln-osbuild or a real osbuild), so both sides share
//! these definitions. Reading is lenient where osbuild's own output may add
//! or leave out fields; writing gives osbuild's v2 shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

/// The `type` of a validation failure's result.
pub const VALIDATION_ERROR: &str = "https://osbuild.org/validation-error";

/// Per pipeline, in name order: the stages run in a build.
pub type StageLogs = BTreeMap<String, Vec<StageLog>>;

/// What `osbuild --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BuildOutput {
    /// The build succeeded.
    #[serde(rename = "result")]
    Result {
        success: bool,
        /// Per pipeline: stage type to the metadata it reported.
        #[serde(default)]
        metadata: BTreeMap<String, Value>,
        #[serde(default)]
        log: StageLogs,
        /// kiln: the store's size after the build (and its eviction).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store_bytes: Option<u64>,
    },
    /// The build failed.
    #[serde(rename = "error")]
    Error {
        success: bool,
        error: BuildError,
        #[serde(default)]
        log: StageLogs,
        /// kiln: the store's size after the build (and its eviction).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store_bytes: Option<u64>,
    },
    /// The manifest (or the command line) was refused before anything ran.
    #[serde(rename = "https://osbuild.org/validation-error")]
    Invalid {
        success: bool,
        title: String,
        errors: Vec<ValidationIssue>,
    },
}

impl BuildOutput {
    /// The store's size after the build, as kiln's executor reports it
    /// (osbuild does not).
    pub fn store_bytes(&self) -> Option<u64> {
        match self {
            BuildOutput::Result { store_bytes, .. } | BuildOutput::Error { store_bytes, .. } => {
                *store_bytes
            }
            BuildOutput::Invalid { .. } => None,
        }
    }

    /// A result, then, says success only when its type and flag agree.
    pub fn succeeded(&self) -> bool {
        matches!(self, BuildOutput::Result { success: true, .. })
    }

    /// The per-stage log, when the build got as far as running stages.
    pub fn log(&self) -> Option<&StageLogs> {
        match self {
            BuildOutput::Result { log, .. } | BuildOutput::Error { log, .. } => Some(log),
            BuildOutput::Invalid { .. } => None,
        }
    }

    /// Why the build failed, in one line a user can act on; `None` for a success.
    pub fn failure(&self) -> Option<String> {
        match self {
            BuildOutput::Result { success: true, .. } => None,
            BuildOutput::Result { .. } => Some("the executor reported no success".into()),
            BuildOutput::Error { error, .. } => Some(error.to_string()),
            BuildOutput::Invalid { errors, .. } => {
                let first = errors
                    .first()
                    .and_then(|e| serde_json::to_string(e).ok())
                    .unwrap_or_default();
                Some(format!(
                    "invalid manifest ({} errors): {first}",
                    errors.len()
                ))
            }
        }
    }

    /// The packages the install stages (dpkg, rpm) reported, in pipeline
    /// and stage order.
    pub fn installed_packages(&self) -> Vec<InstalledPackage> {
        self.installed_sets()
            .into_iter()
            .flat_map(|s| s.packages)
            .collect()
    }

    /// What each install stage reported, by pipeline (in name order) and
    /// stage type.
    pub fn installed_sets(&self) -> Vec<InstalledSet> {
        let BuildOutput::Result { metadata, .. } = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pipeline, stages) in metadata {
            let Ok(stages) = BTreeMap::<String, Value>::deserialize(stages) else {
                continue;
            };
            for (stage, metadata) in stages {
                if let Ok(list) = PackageList::deserialize(&metadata) {
                    out.push(InstalledSet {
                        pipeline: pipeline.clone(),
                        stage,
                        packages: list.packages,
                    });
                }
            }
        }
        out
    }
}

/// The packages one install stage of a pipeline reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledSet {
    pub pipeline: String,
    /// The stage's type (`kiln.dpkg`, `org.osbuild.rpm`).
    pub stage: String,
    pub packages: Vec<InstalledPackage>,
}

#[derive(Deserialize)]
struct PackageList {
    packages: Vec<InstalledPackage>,
}

/// A package an install stage reports in its metadata, as the tree's
/// package database (dpkg status, rpmdb) has it after the installation.
/// The optional fields are absent in what older executors (and osbuild)
/// report.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    /// dpkg: the whole version (`epoch:upstream-revision`); rpm: `%{VERSION}`.
    pub version: String,
    pub arch: String,
    /// rpm's `%{RELEASE}`.
    pub release: Option<String>,
    /// rpm's `%{EPOCH}`, when it has one.
    pub epoch: Option<String>,
    /// The source package: dpkg's `${source:Package} (${source:Version})`
    /// as `name` and `version`, rpm's `%{SOURCERPM}` as a file name.
    pub source: Option<SourcePackage>,
    /// The license the package declares (rpm's `%{LICENSE}`; a dpkg
    /// database declares none).
    pub license: Option<String>,
    /// The checksum (`sha256:<hex>`) of the package file it was installed
    /// from: the manifest's source for it.
    pub checksum: Option<String>,
}

impl InstalledPackage {
    /// The version as its package manager writes it: dpkg's as it is,
    /// rpm's `[epoch:]version-release`.
    pub fn full_version(&self) -> String {
        let mut v = String::new();
        if let Some(e) = self.epoch.as_deref().filter(|e| !e.is_empty()) {
            v.push_str(e);
            v.push(':');
        }
        v.push_str(&self.version);
        if let Some(r) = self.release.as_deref().filter(|r| !r.is_empty()) {
            v.push('-');
            v.push_str(r);
        }
        v
    }
}

/// The source package a binary package was built from.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePackage {
    pub name: String,
    pub version: Option<String>,
}

/// osbuild's error object: `org.osbuild.error.stage` (with the stage),
/// `org.osbuild.error.sources` (with a reason and the checksum), or
/// `org.osbuild.error` (a reason).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildError {
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: Option<String>,
    /// Boxed: the details are large and most errors have none.
    pub details: Option<Box<ErrorDetails>>,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(stage) = self.details.as_ref().and_then(|d| d.stage.as_ref()) {
            return write!(
                f,
                "stage {} failed: {}",
                stage.kind,
                stage.error.as_deref().unwrap_or("failed")
            );
        }
        match &self.reason {
            Some(reason) => write!(f, "{}: {reason}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorDetails {
    pub stage: Option<FailedStage>,
    pub checksum: Option<String>,
    /// `kiln.error.private-keys`: the export refused, the pipeline whose
    /// tree holds the keys, and their paths in the image.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub private_keys: Option<PrivateKeys>,
}

/// Private key material an export would have carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivateKeys {
    pub export: String,
    pub pipeline: String,
    pub paths: Vec<String>,
}

/// The stage a build failed in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedStage {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// One stage of the log. `success` and `error` appear only for a failure.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLog {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub output: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub success: bool,
    pub error: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One error of a validation failure: what is wrong, and where (JSON path
/// components, strings and indexes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationIssue {
    pub message: String,
    #[serde(default)]
    pub path: Vec<Value>,
}

/// One `JSONSeqMonitor` record (RFC 7464: 0x1e, JSON, newline).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRecord {
    /// A log line; empty for a stage's result.
    #[serde(default)]
    pub message: String,
    /// A finished stage: id, name, success, output.
    pub result: Option<Value>,
    #[serde(default)]
    pub context: MonitorContext,
    pub progress: Option<MonitorProgress>,
    #[serde(default)]
    pub timestamp: f64,
}

/// Where a record comes from.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MonitorContext {
    #[serde(default)]
    pub origin: String,
    pub pipeline: Option<PipelineContext>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineContext {
    pub name: String,
    #[serialize_always]
    pub id: Option<String>,
    pub stage: Option<StageContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageContext {
    pub name: String,
    pub id: String,
}

/// Pipelines done of all (`pipelines/sources`), and within the current one
/// its stages.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorProgress {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub done: i64,
    pub progress: Option<Box<MonitorProgress>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_keep_osbuilds_shape() {
        let failed = BuildOutput::Error {
            success: false,
            error: BuildError {
                kind: "org.osbuild.error.stage".into(),
                reason: None,
                details: Some(Box::new(ErrorDetails {
                    stage: Some(FailedStage {
                        id: "abc".into(),
                        kind: "org.osbuild.mkdir".into(),
                        output: "out".into(),
                        error: Some("exit 1".into()),
                    }),
                    ..Default::default()
                })),
            },
            log: StageLogs::from([(
                "os".to_owned(),
                vec![StageLog {
                    id: "abc".into(),
                    kind: "org.osbuild.mkdir".into(),
                    output: "out".into(),
                    success: false,
                    error: Some("exit 1".into()),
                }],
            )]),
            store_bytes: None,
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "error", "success": false,
                "error": {"type": "org.osbuild.error.stage", "details": {"stage": {
                    "id": "abc", "type": "org.osbuild.mkdir", "output": "out", "error": "exit 1"}}},
                "log": {"os": [{"id": "abc", "type": "org.osbuild.mkdir", "output": "out",
                    "success": false, "error": "exit 1"}]},
            })
        );
        assert_eq!(
            failed.failure().as_deref(),
            Some("stage org.osbuild.mkdir failed: exit 1")
        );
        let ok: BuildOutput = serde_json::from_value(json!({
            "type": "result", "success": true,
            "metadata": {"os": {"kiln.dpkg": {"packages": [{"name": "a", "version": "1", "arch": "amd64"}]},
                                "org.osbuild.locale": {"x": 1}}},
            "log": {"os": [{"id": "1", "type": "kiln.dpkg", "output": ""}]},
        }))
        .unwrap();
        assert!(ok.succeeded() && ok.failure().is_none());
        assert_eq!(ok.installed_packages().len(), 1);
        assert!(ok.log().unwrap()["os"][0].success);
    }

    #[test]
    fn a_validation_failure_names_its_errors() {
        let v: BuildOutput = serde_json::from_value(json!({
            "type": VALIDATION_ERROR, "success": false, "title": "JSON Schema validation failed",
            "errors": [{"message": "bad", "path": ["pipelines", 0]}],
        }))
        .unwrap();
        assert!(!v.succeeded() && v.log().is_none());
        assert_eq!(
            v.failure().unwrap(),
            r#"invalid manifest (1 errors): {"message":"bad","path":["pipelines",0]}"#
        );
    }
}
