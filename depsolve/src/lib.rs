//! kiln-depsolve: exact package sets from Debian repositories, in
//! milliseconds, matching what `apt-get install --no-install-recommends`
//! would install on an empty system.
//!
//! See `README.md` beside this crate for the design decisions.

pub mod compression;
pub mod control;
pub mod error;
pub mod index;
mod resolve;
pub mod solve;
pub mod version;

pub use error::DepsolveError;
pub use index::{IndexSource, Package, PackageIndex};
pub use solve::{essential_names, request_names, solve, Request, Solution, SolvedPackage};
