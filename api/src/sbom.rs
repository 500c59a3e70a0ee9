//! Software bills of materials: the SPDX 2.3 JSON document kiln writes per
//! image (the fields kiln fills, typed), and the compose API's
//! `GET /composes/{id}/sboms` answer in the reference's shape
//! (`ComposeSBOMs`, `ImageSBOM`). `kiln-sbom` builds the documents, the
//! worker stores them beside the artifacts and in the build's result, the
//! composer serves them and `kiln compose diff` reads them back.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;
use uuid::Uuid;

/// `spdxVersion` of every document kiln writes.
pub const SPDX_VERSION: &str = "SPDX-2.3";
/// SPDX's value for a field nobody asserted.
pub const NOASSERTION: &str = "NOASSERTION";

/// An SPDX 2.3 document (JSON serialisation, field names as the
/// specification's): kiln writes one per image, describing the packages
/// installed in its tree.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpdxDocument {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
    /// Licenses that are not SPDX expressions, as the packages declare them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicensingInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ`: the image's source epoch, not the time of the build.
    pub created: String,
    /// `Tool: kiln-<version>`.
    pub creators: Vec<String>,
}

/// One package of the document.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub version_info: Option<String>,
    pub supplier: Option<String>,
    pub originator: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<SpdxChecksum>,
    pub source_info: Option<String>,
    pub license_concluded: Option<String>,
    pub license_declared: Option<String>,
    pub copyright_text: Option<String>,
    pub summary: Option<String>,
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    pub primary_package_purpose: Option<String>,
}

impl SpdxPackage {
    /// The architecture kiln recorded in the package's purl (`?arch=`).
    pub fn arch(&self) -> Option<&str> {
        self.purl()?
            .split_once('?')?
            .1
            .split('&')
            .find_map(|q| q.strip_prefix("arch="))
    }

    /// The package's purl (`pkg:deb/…`, `pkg:rpm/…`), if it has one.
    pub fn purl(&self) -> Option<&str> {
        self.external_refs
            .iter()
            .find(|r| r.reference_type == "purl")
            .map(|r| r.reference_locator.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpdxChecksum {
    /// `SHA256`, ….
    pub algorithm: String,
    /// Lower-case hex.
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalRef {
    /// `PACKAGE-MANAGER` for a purl.
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

/// A license a package declares that is not an SPDX expression, under the
/// `LicenseRef-…` id the packages use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtractedLicensingInfo {
    pub license_id: String,
    pub extracted_text: String,
    pub name: String,
}

/// The SBOM of one pipeline of an image, as the build reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSbom {
    /// The SBOM document in the `sbom_type` format.
    #[schema(value_type = Object)]
    pub sbom: SpdxDocument,
    pub sbom_type: SbomType,
    /// The osbuild pipeline whose tree has the packages installed.
    pub pipeline_name: String,
    pub pipeline_purpose: PipelinePurpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SbomType {
    Spdx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelinePurpose {
    /// The image's own tree.
    Image,
    /// The tree the build ran its tools in.
    Buildroot,
}

/// `GET /composes/{id}/sboms`: per image (request order), the SBOMs of its
/// build; an image whose build has not succeeded has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeSboms {
    pub id: Uuid,
    pub kind: String,
    pub href: String,
    pub items: Vec<Vec<ImageSbom>>,
}
