//! Uploads of finished artifacts to the targets a worker is configured with:
//! a local directory, S3, Azure Blob Storage and Google Cloud Storage.
//!
//! The worker calls [`upload`] (or [`upload_observed`] to also hear about
//! retries) once per artifact. Every target hashes the artifact with SHA-256
//! while reading it, once, and checks the bytes the storage received against
//! digests it computed itself; how each protocol does that is told in its
//! module. Requests that fail transiently are retried with exponential
//! backoff ([`RetryPolicy`]); a target that keeps failing yields an
//! [`UploadError`] carrying the storage's own message, with every secret of
//! the target's configuration removed from it.
//!
//! [`s3_object_store`] hands out an S3 target's bucket as an `object_store`
//! store with create-only writes, for kiln-boot's boot image store.

mod azure_blob;
mod config;
mod error;
mod gcs;
mod local;
mod parts;
mod retry;
mod s3;
mod s3_store;

pub mod azure {
    //! Container administration on Azure Blob Storage, for setup scripts and
    //! tests; uploads go through [`crate::upload`].
    pub use crate::azure_blob::{create_container, read_blob};
}

use std::path::Path;
use std::time::Duration;

pub use config::{
    AzureTarget, GcsTarget, LocalTarget, RetryPolicy, S3Target, Secret, TargetConfig,
};
pub use error::UploadError;
pub use parts::open_regular;
pub use s3_store::s3_object_store;

/// What an upload put where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedObject {
    /// `file:///…`, `s3://bucket/key`, `https://…/container/blob` or `gs://bucket/name`.
    pub url: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the artifact's bytes.
    pub sha256: String,
}

/// Something that happened during an upload.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// `done` of `total` bytes are stored (parts confirmed by the storage).
    Progress { done: u64, total: u64 },
    /// A request failed transiently and is tried again after `delay`.
    /// `attempt` is the number of the attempt about to be made (2 for the first retry).
    Retry {
        operation: &'a str,
        attempt: u32,
        delay: Duration,
        error: &'a str,
    },
}

/// Uploads `artifact` to `target` as `object_name` (a key, blob or object
/// name; for a local target a file name in the directory), reporting
/// `(bytes done, bytes total)` to `progress`.
pub async fn upload(
    target: &TargetConfig,
    artifact: &Path,
    object_name: &str,
    progress: impl Fn(u64, u64) + Send + Sync,
) -> Result<UploadedObject, UploadError> {
    upload_observed(target, artifact, object_name, |event| {
        if let Event::Progress { done, total } = event {
            progress(done, total)
        }
    })
    .await
}

/// [`upload`], reporting retries as well as progress.
pub async fn upload_observed(
    target: &TargetConfig,
    artifact: &Path,
    object_name: &str,
    on_event: impl Fn(Event<'_>) + Send + Sync,
) -> Result<UploadedObject, UploadError> {
    validate_object_name(target, object_name)?;
    let result = match target {
        TargetConfig::Local(t) => local::upload(t, artifact, object_name, &on_event).await,
        TargetConfig::S3(t) => s3::upload(t, artifact, object_name, &on_event).await,
        TargetConfig::Azure(t) => azure_blob::upload(t, artifact, object_name, &on_event).await,
        TargetConfig::Gcs(t) => gcs::upload(t, artifact, object_name, &on_event).await,
    };
    // Whatever path an error took, no secret of the target leaves in it.
    result.map_err(|e| e.redact(&secrets(target)))
}

fn secrets(target: &TargetConfig) -> Vec<&str> {
    match target {
        TargetConfig::Local(_) => vec![],
        TargetConfig::S3(t) => vec![t.secret_access_key.expose()],
        TargetConfig::Azure(t) => vec![t.key.expose()],
        TargetConfig::Gcs(t) => t.bearer_token.iter().map(|s| s.expose()).collect(),
    }
}

fn validate_object_name(target: &TargetConfig, name: &str) -> Result<(), UploadError> {
    let bad = |reason: &str| UploadError::Config {
        target: target.kind(),
        reason: format!("object name {name:?}: {reason}"),
    };
    if name.is_empty() || name.len() > 1024 {
        return Err(bad("must be 1 to 1024 bytes long"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    if name.starts_with('/')
        || name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad(
            "must be a relative path without empty, `.` or `..` segments",
        ));
    }
    if matches!(target, TargetConfig::Local(_)) && name.contains('/') {
        return Err(bad("a local target takes a plain file name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker runs uploads on spawned tasks: the future must be `Send`.
    #[test]
    fn upload_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let target = TargetConfig::Local(LocalTarget {
            path: "/nonexistent".into(),
        });
        let fut = upload(&target, Path::new("/nonexistent"), "x", |_, _| {});
        assert_send(&fut);
        let fut = upload_observed(&target, Path::new("/nonexistent"), "x", |_| {});
        assert_send(&fut);
    }

    #[test]
    fn object_names_that_could_escape_are_refused() {
        let local = TargetConfig::Local(LocalTarget {
            path: "/tmp".into(),
        });
        for bad in ["", "../x", "a/../b", "/abs", "a//b", "a\nb", "sub/dir"] {
            assert!(validate_object_name(&local, bad).is_err(), "{bad:?}");
        }
        assert!(validate_object_name(&local, "disk.qcow2").is_ok());
        let gcs = TargetConfig::Gcs(GcsTarget {
            endpoint: None,
            bucket: "b".into(),
            bearer_token: None,
            chunk_size: 1 << 20,
            retry: RetryPolicy::default(),
        });
        assert!(validate_object_name(&gcs, "composes/1/disk.qcow2").is_ok());
    }
}
