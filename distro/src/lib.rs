//! The distribution catalog: one TOML file per distribution in `distributions/`
//! (embedded into the binaries), validated when read so that a composer never
//! starts with a catalog it cannot build from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_api::compose::Repository;
use kiln_api::validate::{validate_repository, Family};
use serde::Deserialize;

/// The distribution files kiln ships.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "debian-12.toml",
        include_str!("../../distributions/debian-12.toml"),
    ),
    (
        "rocky-9.toml",
        include_str!("../../distributions/rocky-9.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {source}")]
    Toml {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A repository of a distribution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryDef {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `$basearch` stands for the image's architecture.
    pub baseurl: String,
    #[serde(default)]
    pub suite: Option<String>,
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// OpenPGP keyring file on the build host (Debian).
    #[serde(default)]
    pub keyring: Option<String>,
    /// Where the signing key is published (RPM).
    #[serde(default)]
    pub gpgkey_url: Option<String>,
}

impl RepositoryDef {
    /// The base URL for an architecture.
    pub fn baseurl_for(&self, arch: &str) -> String {
        self.baseurl.replace("$basearch", arch)
    }

    /// The repository as a compose request would spell it.
    pub fn to_request(&self, arch: &str) -> Repository {
        Repository {
            baseurl: Some(self.baseurl_for(arch)),
            suite: self.suite.clone(),
            components: self.components.clone(),
            check_gpg: Some(true),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureDef {
    /// The architecture's name in the package world (`amd64` for x86_64 on Debian).
    pub package_arch: String,
    pub image_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTypeDef {
    /// The image type this one is built as, under another name (osbuild's
    /// `guest-image` is kiln's `disk`): its packages unless it lists its own.
    #[serde(default)]
    pub alias_of: Option<String>,
    pub filename: String,
    pub mime_type: String,
    /// Default packages; `${package_arch}` stands for the package architecture.
    #[serde(default)]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    pub name: String,
    pub product: String,
    pub family: Family,
    #[serde(default)]
    pub codename: Option<String>,
    pub os_version: String,
    pub releasever: String,
    /// SOURCE_DATE_EPOCH of images built from this distribution.
    pub source_epoch: u64,
    pub repositories: Vec<RepositoryDef>,
    pub architectures: BTreeMap<String, ArchitectureDef>,
    pub image_types: BTreeMap<String, ImageTypeDef>,
}

impl Distribution {
    pub fn architecture(&self, arch: &str) -> Option<&ArchitectureDef> {
        self.architectures.get(arch)
    }

    /// The image type, if the distribution builds it for `arch`.
    pub fn image_type(&self, arch: &str, image_type: &str) -> Option<&ImageTypeDef> {
        let a = self.architectures.get(arch)?;
        if a.image_types.iter().any(|t| t == image_type) {
            self.image_types.get(image_type)
        } else {
            None
        }
    }

    /// Default packages of an image type for an architecture.
    pub fn packages(&self, arch: &str, image_type: &str) -> Option<Vec<String>> {
        let a = self.architectures.get(arch)?;
        let t = self.image_type(arch, image_type)?;
        Some(
            t.packages
                .iter()
                .map(|p| p.replace("${package_arch}", &a.package_arch))
                .collect(),
        )
    }

    /// The distribution's repositories for `arch` as apt-style source lines
    /// (`deb [signed-by=KEYRING] URL SUITE COMPONENT...`, `rpm URL`).
    pub fn source_lines(&self, arch: &str) -> Vec<String> {
        self.repositories
            .iter()
            .map(|r| {
                let url = r.baseurl_for(arch);
                let url = url.trim_end_matches('/');
                match self.family {
                    Family::Rpm => format!("rpm {url}"),
                    Family::Debian => {
                        let opts = r
                            .keyring
                            .as_ref()
                            .map(|k| format!("[signed-by={k}] "))
                            .unwrap_or_default();
                        format!(
                            "deb {opts}{url} {} {}",
                            r.suite.clone().unwrap_or_default(),
                            r.components.clone().unwrap_or_default().join(" ")
                        )
                    }
                }
            })
            .collect()
    }

    /// The architecture named either as the distribution does (`x86_64`) or
    /// as its packages do (`amd64`), with its distribution name.
    pub fn find_architecture(&self, arch: &str) -> Option<(&str, &ArchitectureDef)> {
        self.architectures
            .iter()
            .find(|(name, a)| *name == arch || a.package_arch == arch)
            .map(|(n, a)| (n.as_str(), a))
    }

    fn validate(&self, file: &str) -> Result<(), CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            file: file.to_owned(),
            message,
        };
        if self.repositories.is_empty() {
            return Err(invalid("no repositories".into()));
        }
        for (i, r) in self.repositories.iter().enumerate() {
            for arch in self.architectures.keys() {
                validate_repository(
                    &r.to_request(arch),
                    &format!("repositories[{i}]"),
                    self.family,
                )
                .map_err(|e| invalid(e.reason()))?;
            }
        }
        if self.architectures.is_empty() {
            return Err(invalid("no architectures".into()));
        }
        for (arch, a) in &self.architectures {
            if a.image_types.is_empty() {
                return Err(invalid(format!("architectures.{arch}: no image types")));
            }
            for t in &a.image_types {
                if !self.image_types.contains_key(t) {
                    return Err(invalid(format!(
                        "architectures.{arch}.image_types: {t:?} is not defined under [image_types]"
                    )));
                }
            }
        }
        for (name, t) in &self.image_types {
            if let Some(base) = &t.alias_of {
                match self.image_types.get(base) {
                    Some(b) if b.alias_of.is_none() => {}
                    Some(_) => {
                        return Err(invalid(format!(
                            "image_types.{name}.alias_of: {base:?} is an alias itself"
                        )))
                    }
                    None => {
                        return Err(invalid(format!(
                        "image_types.{name}.alias_of: {base:?} is not defined under [image_types]"
                    )))
                    }
                }
            } else if t.packages.is_empty() {
                return Err(invalid(format!("image_types.{name}.packages: empty")));
            }
        }
        Ok(())
    }

    /// Gives each alias without packages of its own those of its base.
    fn resolve_aliases(&mut self) {
        let bases = self.image_types.clone();
        for t in self.image_types.values_mut() {
            if let (Some(base), true) = (&t.alias_of, t.packages.is_empty()) {
                if let Some(b) = bases.get(base) {
                    t.packages = b.packages.clone();
                }
            }
        }
    }
}

/// Every distribution kiln can build, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    distributions: BTreeMap<String, Distribution>,
}

impl Catalog {
    /// The distributions shipped inside kiln.
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Catalog::from_files(EMBEDDED.iter().map(|(f, s)| (f.to_string(), s.to_string())))
    }

    /// Every `*.toml` file of a directory.
    pub fn from_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let read_err = |source| CatalogError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                    path: path.clone(),
                    source,
                })?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Catalog::from_files(files)
    }

    fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Catalog, CatalogError> {
        let mut distributions = BTreeMap::new();
        for (file, text) in files {
            let mut d: Distribution =
                toml::from_str(&text).map_err(|source| CatalogError::Toml {
                    file: file.clone(),
                    source,
                })?;
            d.validate(&file)?;
            d.resolve_aliases();
            if distributions.contains_key(&d.name) {
                return Err(CatalogError::Invalid {
                    file,
                    message: format!("distribution {} is defined twice", d.name),
                });
            }
            distributions.insert(d.name.clone(), d);
        }
        if distributions.is_empty() {
            return Err(CatalogError::Invalid {
                file: "distributions".into(),
                message: "no distribution files".into(),
            });
        }
        Ok(Catalog { distributions })
    }

    pub fn get(&self, name: &str) -> Option<&Distribution> {
        self.distributions.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Distribution> {
        self.distributions.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.distributions.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_distributions_are_valid() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.names(), vec!["debian-12", "rocky-9"]);
        let d = c.get("debian-12").unwrap();
        assert_eq!(d.family, Family::Debian);
        let pxe = d.packages("x86_64", "pxe").unwrap();
        assert!(pxe.contains(&"linux-image-amd64".to_string()));
        assert!(d.image_type("x86_64", "iso").is_none());
        // osbuild's names take their base type's packages.
        assert_eq!(d.packages("x86_64", "pxe-tar-xz"), Some(pxe.clone()));
        assert_eq!(
            d.packages("x86_64", "guest-image"),
            d.packages("x86_64", "disk")
        );
        assert_eq!(
            d.source_lines("x86_64")[0],
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main"
        );
        assert_eq!(d.find_architecture("amd64").map(|(n, _)| n), Some("x86_64"));
        let r = c.get("rocky-9").unwrap();
        assert_eq!(
            r.source_lines("x86_64")[1],
            "rpm https://dl.rockylinux.org/pub/rocky/9/AppStream/x86_64/os"
        );
        assert_eq!(
            r.repositories[0].baseurl_for("aarch64"),
            "https://dl.rockylinux.org/pub/rocky/9/BaseOS/aarch64/os/"
        );
    }

    #[test]
    fn the_repo_directory_matches_the_embedded_copy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../distributions");
        let from_dir = Catalog::from_dir(&dir).unwrap();
        let embedded = Catalog::embedded().unwrap();
        assert_eq!(from_dir.distributions, embedded.distributions);
    }

    #[test]
    fn broken_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = include_str!("../../distributions/debian-12.toml");
        let types = "image_types = [\"tar\", \"pxe\", \"disk\", \"oci\", \"guest-image\", \"minimal-raw\", \"pxe-tar-xz\"]";
        assert!(shipped.contains(types));
        let text = shipped.replace(types, "image_types = [\"tar\", \"iso\"]");
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let err = Catalog::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("\"iso\""), "{err}");
        // An alias names a type that is defined and no alias itself.
        for (to, why) in [
            ("\"iso\"", "is not defined"),
            ("\"guest-image\"", "is an alias itself"),
        ] {
            let text = shipped.replacen("alias_of = \"disk\"", &format!("alias_of = {to}"), 2);
            std::fs::write(dir.path().join("bad.toml"), text).unwrap();
            let err = Catalog::from_dir(dir.path()).unwrap_err().to_string();
            assert!(err.contains("alias_of") && err.contains(why), "{err}");
        }

        std::fs::write(dir.path().join("bad.toml"), "name = 3").unwrap();
        let err = Catalog::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
    }
}
