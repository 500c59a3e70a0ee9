//! What an upload can fail with. Each variant names the target kind and the
//! step that failed; storage errors carry the storage's own message, which
//! is what the compose's `upload_status` shows.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The target's configuration (or the object name) cannot work.
    #[error("{target} target: invalid configuration: {reason}")]
    Config {
        target: &'static str,
        reason: String,
    },

    /// The artifact could not be read, or changed while it was read.
    #[error("reading artifact {}: {reason}", path.display())]
    Artifact { path: PathBuf, reason: String },

    /// Writing into a local target's directory failed.
    #[error("local target: {operation} {}: {reason}", path.display())]
    Local {
        operation: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// The storage refused a request, or kept failing until retries ran out.
    #[error("{target} target: {operation} failed after {attempts} attempt(s): {message}")]
    Storage {
        target: &'static str,
        operation: String,
        attempts: u32,
        message: String,
    },

    /// The storage acknowledged bytes other than the ones sent.
    #[error("{target} target: {what} does not match: sent {expected}, storage reports {actual}")]
    Verification {
        target: &'static str,
        what: String,
        expected: String,
        actual: String,
    },
}

impl UploadError {
    /// Replaces every occurrence of each secret in the error's text.
    pub(crate) fn redact(self, secrets: &[&str]) -> UploadError {
        let scrub = |s: String| {
            secrets
                .iter()
                .filter(|x| !x.is_empty())
                .fold(s, |s, x| s.replace(x, "<redacted>"))
        };
        match self {
            UploadError::Config { target, reason } => UploadError::Config {
                target,
                reason: scrub(reason),
            },
            UploadError::Artifact { path, reason } => UploadError::Artifact {
                path,
                reason: scrub(reason),
            },
            UploadError::Local {
                operation,
                path,
                reason,
            } => UploadError::Local {
                operation,
                path,
                reason: scrub(reason),
            },
            UploadError::Storage {
                target,
                operation,
                attempts,
                message,
            } => UploadError::Storage {
                target,
                operation: scrub(operation),
                attempts,
                message: scrub(message),
            },
            UploadError::Verification {
                target,
                what,
                expected,
                actual,
            } => UploadError::Verification {
                target,
                what,
                expected,
                actual: scrub(actual),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_text() {
        let e = UploadError::Storage {
            target: "s3",
            operation: "PUT with s3cr3t".into(),
            attempts: 2,
            message: "server echoed s3cr3t back".into(),
        }
        .redact(&["s3cr3t", ""]);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("server echoed <redacted> back"), "{shown}");
    }
}
