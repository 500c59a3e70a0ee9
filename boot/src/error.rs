//! One error type for the crate; every variant names the field, key, node or
//! service that was wrong, so a CLI or worker can show it as it is.

use std::path::PathBuf;

/// Which OpenCHAMI service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Bss,
    Smd,
    BootService,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Bss => "BSS",
            Service::Smd => "SMD",
            Service::BootService => "boot-service",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{field}: {value:?} is not a node xname (expected x<cabinet>c<chassis>s<slot>b<bmc>n<node>, e.g. x1000c0s0b0n0)")]
    InvalidXname { field: String, value: String },

    #[error(
        "{field}: {value:?} is not a MAC address (expected six hex octets, e.g. 02:00:00:00:00:01)"
    )]
    InvalidMac { field: String, value: String },

    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },

    #[error("{field}: the node selection is empty")]
    EmptySelection { field: String },

    #[error("{field}: {service} knows no node for {values}")]
    UnknownNodes {
        service: Service,
        field: String,
        values: String,
    },

    #[error("{service} refused the request {method} {url} with {status}: the bearer token configured in `{service_key}.token` is missing or not accepted ({detail})")]
    Unauthorized {
        service: Service,
        service_key: &'static str,
        method: String,
        url: String,
        status: u16,
        detail: String,
    },

    #[error("{service} answered {method} {url} with {status}: {detail}")]
    Status {
        service: Service,
        method: String,
        url: String,
        status: u16,
        detail: String,
    },

    #[error("{service} could not be reached at {url}: {source}")]
    Http {
        service: Service,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{service} answered {url} with a body kiln cannot read: {reason}")]
    Decode {
        service: Service,
        url: String,
        reason: String,
    },

    #[error("boot store: {key} already exists; kiln never overwrites a published object")]
    AlreadyExists { key: String },

    #[error("boot store {store}: cannot write {key} without overwriting (conditional create is not supported by this store: {reason}); configure conditional writes on the store")]
    CreateNotSupported {
        store: String,
        key: String,
        reason: String,
    },

    #[error("boot store: {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: object_store::Error,
    },

    #[error("boot store: {key} is not a valid {what}: {source}")]
    Record {
        key: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("boot store: no image {image} found")]
    UnknownImage { image: String },

    #[error("node {xname}: kiln has no earlier deployment to roll back to")]
    NothingToRollBack { xname: String },

    #[error("node {xname}: its boot parameters were changed outside kiln since deployment {deployment} (the boot service has kernel {found:?}, kiln set {expected:?}); roll back with `force` to restore anyway")]
    Drift {
        xname: String,
        deployment: String,
        expected: Option<String>,
        found: Option<String>,
    },

    #[error("canary {canary}: {reason}")]
    Canary { canary: String, reason: String },

    #[error("tag {tag} names {current}; moving it to {requested} needs `force`")]
    TagExists {
        tag: String,
        current: String,
        requested: String,
    },

    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A node name that is not well formed keeps its own variant.
impl From<kiln_api::nodes::NodeError> for BootError {
    fn from(e: kiln_api::nodes::NodeError) -> BootError {
        use kiln_api::nodes::NodeError;
        match e {
            NodeError::InvalidXname { field, value } => BootError::InvalidXname { field, value },
            NodeError::InvalidMac { field, value } => BootError::InvalidMac { field, value },
            NodeError::Invalid { field, reason } => BootError::InvalidField { field, reason },
            NodeError::Empty { field } => BootError::EmptySelection { field },
        }
    }
}

pub type Result<T, E = BootError> = std::result::Result<T, E>;
