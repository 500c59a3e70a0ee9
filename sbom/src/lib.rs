//! kiln's software bills of materials: an SPDX 2.3 document per image,
//! made from what the install stages read back from the tree's package
//! database (dpkg status, rpmdb) and from the manifest's package sources
//! (the URL and checksum of every package file), and the package-level
//! difference between two such documents (`kiln compose diff`).
//!
//! **Invariant: the same inputs give the same bytes.** A document's
//! creation time is the image's source epoch, its namespace a digest of
//! its inputs, its packages sorted; nothing depends on the clock or on the
//! build's identity (compose id, worker). Tests: `document::tests`.

mod diff;
mod document;
mod license;
mod manifest;

pub use diff::{diff, ChangedPackage, PackageDiff, PackageKey, PackageVersion};
pub use document::{document, PackageFormat, SbomInputs, NAMESPACE_PREFIX};
pub use manifest::{ManifestSources, SourcesError};

/// The `Tool:` creator kiln names in its documents.
pub const CREATOR: &str = concat!("Tool: kiln-", env!("CARGO_PKG_VERSION"));
