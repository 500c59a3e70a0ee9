//! `POST /depsolve/blueprint` and `POST /search/packages`.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::compose::Repository;
use crate::customizations::Blueprint;

/// Depsolve a blueprint's packages (and an image type's, when named).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepsolveRequest {
    pub distribution: String,
    pub architecture: String,
    pub blueprint: Blueprint,
    /// Repositories to solve against; absent: the distribution's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<Repository>,
    /// Add the image type's default packages (and, for Debian, the base system).
    pub image_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DepsolveResponse {
    pub packages: Vec<DepsolvedPackage>,
}

/// A package of a solution: the reference's package metadata, plus where to
/// fetch it (`url`, `size`; kiln extension).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DepsolvedPackage {
    /// `deb` or `rpm`.
    #[serde(rename = "type")]
    pub package_type: String,
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<String>,
    pub arch: String,
    /// Empty: kiln does not read RPM header signatures.
    pub sigmd5: String,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub url: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchPackagesRequest {
    pub distribution: String,
    pub architecture: String,
    /// Names, `*` and `?` allowed.
    pub packages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<Repository>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchPackagesResponse {
    pub packages: Vec<PackageDetails>,
    /// More packages matched than one answer holds (kiln extension): the
    /// first ones by name are given; narrow the patterns for the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageDetails {
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<String>,
    pub arch: String,
    /// Where the package is fetched from. kiln extension.
    pub url: String,
}

/// Splits `[epoch:]version[-release]` (Debian and RPM alike).
pub fn split_evr(full: &str) -> (Option<String>, String, String) {
    let (epoch, rest) = match full.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => {
            (Some(e.to_owned()), r)
        }
        _ => (None, full),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) => (epoch, v.to_owned(), r.to_owned()),
        None => (epoch, rest.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_evr;

    #[test]
    fn versions_split_like_the_package_managers() {
        assert_eq!(
            split_evr("1:2.36-9+deb12u4"),
            (Some("1".into()), "2.36".into(), "9+deb12u4".into())
        );
        assert_eq!(
            split_evr("252.26-1~deb12u2"),
            (None, "252.26".into(), "1~deb12u2".into())
        );
        assert_eq!(split_evr("1.0"), (None, "1.0".into(), String::new()));
        assert_eq!(
            split_evr("2:1.2-3-4"),
            (Some("2".into()), "1.2-3".into(), "4".into())
        );
    }
}
