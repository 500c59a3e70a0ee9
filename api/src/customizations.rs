//! What a compose changes in the image: the Cloud API `customizations` object
//! and the blueprint, two spellings of the same wishes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::compose::Repository;

/// Customizations in the Cloud API shape.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customizations {
    /// Extra packages to install.
    pub packages: Option<Vec<String>>,
    pub users: Option<Vec<User>>,
    pub groups: Option<Vec<Group>>,
    pub hostname: Option<String>,
    pub kernel: Option<Kernel>,
    pub timezone: Option<Timezone>,
    pub locale: Option<Locale>,
    pub services: Option<Services>,
    pub files: Option<Vec<File>>,
    pub directories: Option<Vec<Directory>>,
    /// Extra repositories used to find the packages of the image itself.
    pub payload_repositories: Option<Vec<Repository>>,
    /// Minimum file-system sizes (the `disk` image type).
    pub filesystem: Option<Vec<Filesystem>>,
    /// cloud-init datasource for the booted node. kiln extension.
    pub cloud_init: Option<CloudInit>,
    /// The container's configuration (`oci` images). kiln extension.
    pub oci: Option<OciConfig>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub groups: Option<Vec<String>>,
    /// SSH public key.
    pub key: Option<String>,
    /// A crypt(3) password hash (`$6$…`, `$5$…`, `$y$…`, `$2b$…`).
    pub password: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Kernel package name (e.g. `linux-image-amd64`, `kernel`).
    pub name: Option<String>,
    /// Appended to the kernel command line.
    pub append: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timezone {
    pub timezone: Option<String>,
    pub ntpservers: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Locale {
    pub languages: Option<Vec<String>>,
    pub keyboard: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Services {
    pub enabled: Option<Vec<String>>,
    pub disabled: Option<Vec<String>>,
    pub masked: Option<Vec<String>>,
}

/// A file to create. `user` and `group` are names or numeric ids.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    /// Octal mode, e.g. `0644`.
    pub mode: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub group: Option<Value>,
    pub data: Option<String>,
    pub ensure_parents: Option<bool>,
}

/// A directory to create.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub path: String,
    pub mode: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub group: Option<Value>,
    pub ensure_parents: Option<bool>,
}

/// A minimum file-system size, in bytes.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    pub mountpoint: String,
    pub min_size: u64,
}

/// cloud-init datasource, e.g. `nocloud-net;s=http://10.0.0.1/cloud-init/`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    pub datasource: String,
}

/// What a container made from an `oci` image runs, and how: the OCI image
/// configuration's `Entrypoint`, `Cmd`, `Env`, `User`, `ExposedPorts`,
/// `Labels`, `WorkingDir`, `Volumes` and `StopSignal`. Only for composes
/// with an `oci` image. kiln extension.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// The program a container runs, with its first arguments.
    pub entrypoint: Option<Vec<String>>,
    /// The arguments after the entrypoint, or without one the command.
    /// Default: none with an entrypoint, else `["/bin/sh"]`.
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` variables; `PATH` is Debian's unless given here.
    pub env: Option<Vec<String>>,
    /// The user (and group) it runs as: a name or a numeric id, as
    /// `user` or `user:group`.
    pub user: Option<String>,
    /// Ports it listens on: `8700` (TCP), `8700/tcp`, `53/udp`, `9/sctp`.
    pub exposed_ports: Option<Vec<String>>,
    /// Labels of the image, e.g. `org.opencontainers.image.source`.
    pub labels: Option<BTreeMap<String, String>>,
    /// Absolute directory it starts in.
    pub working_dir: Option<String>,
    /// Absolute directories meant to be volumes.
    pub volumes: Option<Vec<String>>,
    /// The signal that stops it: `SIGTERM`, `SIGINT`, a number.
    pub stop_signal: Option<String>,
}

/// A blueprint, as osbuild-composer's blueprints (and their TOML files) spell it.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Blueprint {
    pub name: String,
    pub description: Option<String>,
    pub version: Option<String>,
    pub distro: Option<String>,
    pub packages: Option<Vec<BlueprintPackage>>,
    /// An alias of `packages`.
    pub modules: Option<Vec<BlueprintPackage>>,
    /// Package groups: an RPM notion, refused for Debian.
    pub groups: Option<Vec<PackageGroup>>,
    pub customizations: Option<BlueprintCustomizations>,
    /// SOURCE_DATE_EPOCH of the image, overriding the distribution's
    /// snapshot date. kiln extension.
    pub source_epoch: Option<u64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintPackage {
    pub name: String,
    pub version: Option<String>,
}

impl BlueprintPackage {
    /// The package as a resolver takes it: `name`, or `name=version` for an
    /// exact version. Wildcard versions other than `*` are refused, naming
    /// `field`.
    pub fn request(&self, field: &str) -> Result<String, crate::error::FieldError> {
        match self.version.as_deref() {
            None | Some("") | Some("*") => Ok(self.name.clone()),
            Some(v) if v.contains('*') || v.contains('?') => Err(crate::error::FieldError::new(
                crate::error::ErrorKind::InvalidField,
                field,
                format!("{v:?}: only exact versions (or \"*\") can be pinned"),
            )),
            Some(v) => Ok(format!("{}={v}", self.name)),
        }
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageGroup {
    pub name: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintCustomizations {
    pub hostname: Option<String>,
    pub kernel: Option<Kernel>,
    pub sshkey: Option<Vec<SshKey>>,
    pub user: Option<Vec<BlueprintUser>>,
    pub group: Option<Vec<Group>>,
    pub timezone: Option<Timezone>,
    pub locale: Option<Locale>,
    pub services: Option<Services>,
    pub filesystem: Option<Vec<BlueprintFilesystem>>,
    pub directories: Option<Vec<Directory>>,
    pub files: Option<Vec<File>>,
    /// cloud-init datasource. kiln extension.
    pub cloud_init: Option<CloudInit>,
    /// The container's configuration (`oci` images). kiln extension.
    pub oci: Option<OciConfig>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKey {
    pub user: String,
    pub key: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintUser {
    pub name: String,
    pub description: Option<String>,
    pub password: Option<String>,
    pub key: Option<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub groups: Option<Vec<String>>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A minimum size with units: a byte count or a string such as `"2 GiB"`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintFilesystem {
    pub mountpoint: String,
    #[schema(value_type = Object)]
    pub minsize: Value,
}
