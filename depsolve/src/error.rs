//! Errors of the depsolve crate. Each names the file, field or package
//! that was wrong so a person can act on it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DepsolveError {
    #[error("{file}: package {package}: {detail}")]
    BadIndex {
        file: String,
        package: String,
        detail: String,
    },
    #[error("bad source line '{line}': {detail}")]
    BadSource { line: String, detail: String },
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("{file}: checksum mismatch (expected sha256 {expected}, got {actual})")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: size mismatch (expected {expected} bytes, got {actual})")]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: OpenPGP signature verification failed: {detail}")]
    Signature { file: String, detail: String },
    #[error("{file}: {detail}")]
    BadRelease { file: String, detail: String },
    #[error("{what}: larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{file}: cannot decompress: {detail}")]
    Decompress { file: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsolvable request:\n{}", .problems.join("\n"))]
    Unsolvable { problems: Vec<String> },
    #[error("repository policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("internal task failed: {0}")]
    Task(String),
}
