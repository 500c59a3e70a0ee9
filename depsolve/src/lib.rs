//! kiln-depsolve: exact package sets from Debian repositories, in
//! milliseconds, matching what `apt-get install --no-install-recommends`
//! would install on an empty system.
//!
//! See `README.md` beside this crate for the design decisions.

pub(crate) mod builder;
pub mod compression;
pub mod control;
pub mod debindex;
pub mod error;
pub mod fetch;
pub mod index;
pub mod policy;
pub mod release;
pub mod repo;
mod resolve;
pub mod rpm;
mod rpm_rich;
pub mod rpmversion;
pub mod snapshot;
pub mod solve;
pub mod source;
pub mod version;

pub use debindex::IndexSource;
pub use error::DepsolveError;
pub use index::{Package, PackageIndex};
pub use policy::{AllowEntry, PolicyError, RepoPolicy};
pub use repo::{RepoConfig, RepoSet};
pub use solve::{essential_names, request_names, solve, Request, Solution, SolvedPackage};
pub use source::{Source, SourceKind};

#[cfg(test)]
mod resolve_tests;
