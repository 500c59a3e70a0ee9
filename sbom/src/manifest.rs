//! What an SBOM needs of an osbuild manifest: every package file's URL by
//! its checksum (`org.osbuild.curl` items) and each pipeline's source epoch.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The manifest does not have osbuild's v2 shape where the SBOM reads it.
#[derive(Debug, thiserror::Error)]
#[error("reading the manifest's sources and source epochs: {0}")]
pub struct SourcesError(#[source] serde_json::Error);

/// Package file URLs by checksum (`sha256:<hex>`) and source epochs by
/// pipeline name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestSources {
    pub urls: BTreeMap<String, String>,
    pub source_epochs: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct ManifestView {
    #[serde(default)]
    pipelines: Vec<PipelineView>,
    #[serde(default)]
    sources: SourcesView,
}

#[derive(Deserialize)]
struct PipelineView {
    name: String,
    #[serde(rename = "source-epoch")]
    source_epoch: Option<u64>,
}

#[derive(Deserialize, Default)]
struct SourcesView {
    #[serde(rename = "org.osbuild.curl")]
    curl: Option<CurlSource>,
}

#[derive(Deserialize)]
struct CurlSource {
    #[serde(default)]
    items: BTreeMap<String, CurlItem>,
}

/// osbuild's two spellings of a curl item: the URL, or an object with it.
#[derive(Deserialize)]
#[serde(untagged)]
enum CurlItem {
    Url(String),
    Object { url: String },
}

impl ManifestSources {
    /// Reads an osbuild v2 manifest; other sources and fields are ignored.
    pub fn from_manifest(manifest: &Value) -> Result<ManifestSources, SourcesError> {
        let view = ManifestView::deserialize(manifest).map_err(SourcesError)?;
        let urls = view
            .sources
            .curl
            .map(|c| {
                c.items
                    .into_iter()
                    .map(|(checksum, item)| match item {
                        CurlItem::Url(url) | CurlItem::Object { url } => (checksum, url),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let source_epochs = view
            .pipelines
            .into_iter()
            .filter_map(|p| Some((p.name, p.source_epoch?)))
            .collect();
        Ok(ManifestSources {
            urls,
            source_epochs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_spellings_and_the_epochs() {
        let m = json!({
            "version": "2",
            "pipelines": [{"name": "os", "source-epoch": 1700000000, "stages": []}, {"name": "archive"}],
            "sources": {
                "org.osbuild.curl": {"items": {
                    "sha256:aa": "https://deb.example/a.deb",
                    "sha256:bb": {"url": "https://deb.example/b.deb"}
                }},
                "org.osbuild.inline": {"items": {"sha256:cc": {"encoding": "base64", "data": ""}}}
            }
        });
        let s = ManifestSources::from_manifest(&m).unwrap();
        assert_eq!(s.urls["sha256:aa"], "https://deb.example/a.deb");
        assert_eq!(s.urls["sha256:bb"], "https://deb.example/b.deb");
        assert_eq!(s.urls.len(), 2);
        assert_eq!(s.source_epochs, BTreeMap::from([("os".into(), 1700000000)]));
        let bad = json!({"pipelines": [{"name": 3}]});
        assert!(ManifestSources::from_manifest(&bad).is_err());
    }
}
