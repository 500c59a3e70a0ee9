//! A PXE boot image: what a build hands over ([`LocalBootImage`]), where its
//! files go in the boot store ([`ImageRef`] and its keys) and the record
//! written beside them (`boot.json`, [`BootRecord`]).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BootError, Result};

/// The kernel, initrd and squashfs root of one build, on local disk, and what
/// the record says about them.
#[derive(Debug, Clone)]
pub struct LocalBootImage {
    pub compose_id: Uuid,
    /// The image's name, e.g. `rocky9-compute`; one path segment of the keys.
    pub image_name: String,
    /// e.g. `x86_64`, `aarch64`.
    pub arch: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    /// The command line the image was built for (e.g. `rd.live.overlay.overlayfs=1 console=ttyS0`).
    /// A `root=` in it is replaced by `root=live:<squashfs URL>` at publish time.
    pub kernel_cmdline: String,
    pub packages: Vec<ImagePackage>,
    /// The image's SBOM (SPDX JSON), stored beside the files as
    /// [`SBOM_FILE`] and named in the record.
    pub sbom: Option<PathBuf>,
}

/// The SBOM's object name under the image's version directory.
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// One installed package, as the record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

pub use kiln_api::boot::{BootFile, BootFiles, ImageRef};

/// The three files of a PXE image, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFileKind {
    Kernel,
    Initrd,
    Rootfs,
}

impl BootFileKind {
    pub const ALL: [BootFileKind; 3] = [Self::Kernel, Self::Initrd, Self::Rootfs];

    /// The object's name under the image's version directory.
    pub fn file_name(self) -> &'static str {
        match self {
            BootFileKind::Kernel => "vmlinuz",
            BootFileKind::Initrd => "initrd.img",
            BootFileKind::Rootfs => "rootfs.squashfs",
        }
    }
}

/// The record's own name beside the image files.
pub const RECORD_FILE: &str = "boot.json";

impl BootFileKind {
    /// This file's record among an image's files.
    pub fn of(self, files: &BootFiles) -> &BootFile {
        match self {
            BootFileKind::Kernel => &files.kernel,
            BootFileKind::Initrd => &files.initrd,
            BootFileKind::Rootfs => &files.rootfs,
        }
    }
}

/// `boot.json`: written last, so an image whose record exists is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Format marker, so later readers can tell versions of this record apart.
    pub kind: String,
    pub compose_id: Uuid,
    pub image_name: String,
    pub version: String,
    pub arch: String,
    pub created: DateTime<Utc>,
    pub files: BootFiles,
    pub packages: Vec<ImagePackage>,
    pub kernel_cmdline: String,
    /// The image's SBOM in the store (records of builds without one, and
    /// older records, have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<BootFile>,
}

/// The value of [`BootRecord::kind`] this crate writes.
pub const RECORD_KIND: &str = "kiln.boot-image.v1";

impl BootRecord {
    pub fn image_ref(&self) -> ImageRef {
        ImageRef {
            image_name: self.image_name.clone(),
            version: self.version.clone(),
            arch: self.arch.clone(),
        }
    }
}

/// A build's version: UTC time of the upload to the second, then the first
/// eight hex digits of the compose id, e.g. `20260122T072633Z-1a2b3c4d`.
/// Versions of one image sort by time; two composes never share one.
pub fn version_for(compose_id: Uuid, at: DateTime<Utc>) -> String {
    let short = &compose_id.simple().to_string()[..8];
    format!("{}-{short}", at.format("%Y%m%dT%H%M%SZ"))
}

/// Checks that `value` is safe as one key segment
/// ([`kiln_api::boot::check_segment`]); the error names `field`.
pub fn check_segment(field: &str, value: &str) -> Result<()> {
    kiln_api::boot::check_segment(value).map_err(|reason| BootError::InvalidField {
        field: field.to_owned(),
        reason,
    })
}

impl LocalBootImage {
    pub fn validate(&self) -> Result<()> {
        check_segment("image.image_name", &self.image_name)?;
        check_segment("image.arch", &self.arch)?;
        for (field, path) in [
            ("image.kernel", &self.kernel),
            ("image.initrd", &self.initrd),
            ("image.rootfs", &self.rootfs),
        ]
        .into_iter()
        .chain(self.sbom.as_ref().map(|p| ("image.sbom", p)))
        {
            if !path.is_file() {
                return Err(BootError::InvalidField {
                    field: field.into(),
                    reason: format!("{} is not a file", path.display()),
                });
            }
        }
        Ok(())
    }

    pub fn path(&self, kind: BootFileKind) -> &std::path::Path {
        match kind {
            BootFileKind::Kernel => &self.kernel,
            BootFileKind::Initrd => &self.initrd,
            BootFileKind::Rootfs => &self.rootfs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn versions_sort_by_time_and_name_the_compose() {
        let id = Uuid::parse_str("1a2b3c4d-0000-4000-8000-000000000000").unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 1, 22, 7, 26, 33).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        assert_eq!(version_for(id, t1), "20260122T072633Z-1a2b3c4d");
        assert!(version_for(id, t1) < version_for(Uuid::new_v4(), t2));
        check_segment("v", &version_for(id, t1)).unwrap();
    }

    #[test]
    fn segments() {
        check_segment("f", "rocky9-compute_1.2+x").unwrap();
        for bad in ["", "_deployments", ".hidden", "a/b", "a b", "é"] {
            let e = check_segment("image.image_name", bad).unwrap_err();
            assert!(e.to_string().starts_with("image.image_name: "), "{e}");
        }
    }
}
