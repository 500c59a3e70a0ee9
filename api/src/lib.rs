//! The types that cross kiln's wire, in one place so that the composer, the
//! CLI and the workers cannot drift apart. `worker` is the protocol between
//! the composer and its workers, `jobs` the typed arguments and results of
//! every job kind, `osbuild` the executor's `--json` result and monitor records.
//!
//! The compose API keeps the shape of osbuild-composer's Cloud API v2
//! (`/api/image-builder-composer/v2`): field names, nesting and status values
//! are the reference's. Where kiln goes further (Debian repositories, several
//! upload targets per image, cancel, events, job graphs) it adds fields and
//! endpoints and never changes the meaning of the reference's own.

pub mod blueprints;
pub mod boot;
pub mod compose;
pub mod customizations;
pub mod depsolve;
pub mod distribution;
pub mod error;
pub mod events;
pub mod fleet;
pub mod glob;
pub mod jobs;
pub mod nodes;
pub mod osbuild;
pub mod request_id;
pub mod sbom;
pub mod status;
pub mod validate;
pub mod worker;

/// The prefix of every compose API path.
pub const API_PREFIX: &str = "/api/image-builder-composer/v2";
