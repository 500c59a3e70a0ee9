//! The boot image store: any [`ObjectStore`] plus the public base URL nodes
//! fetch from. Every write is a create: kiln never overwrites an object.
//!
//! Layout under the configured prefix (see the crate README):
//! `<image>/<version>/<arch>/{vmlinuz,initrd.img,rootfs.squashfs,boot.json}`,
//! `_deployments/<id>.json`, `_nodes/<xname>/<id>.json`, and transient
//! `_staging/<uuid>/<file>` objects while a large file is uploaded.

use std::io::Read;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::{BootError, Result};
use crate::image::{
    check_segment, version_for, BootFile, BootFileKind, BootFiles, BootRecord, ImageRef,
    LocalBootImage, RECORD_FILE, RECORD_KIND, SBOM_FILE,
};

/// Files up to this size are written with one conditional put; larger ones
/// go through a multipart upload to a staging key and a copy-if-not-exists.
pub const DEFAULT_SINGLE_PUT_LIMIT: u64 = 64 * 1024 * 1024;

const MULTIPART_CHUNK: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BootStore {
    store: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    base_url: String,
    single_put_limit: u64,
}

impl BootStore {
    /// `prefix` is a `/`-separated key prefix (may be empty); `base_url` is the
    /// public HTTP(S) URL of the store's root, so `<base_url>/<key>` is what a
    /// node downloads.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, base_url: &str) -> Result<BootStore> {
        let prefix: Vec<String> = prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for p in &prefix {
            check_segment("boot_store.prefix", p)?;
        }
        let parsed = url::Url::parse(base_url).map_err(|e| BootError::InvalidField {
            field: "boot_store.base_url".into(),
            reason: format!("{base_url:?} is not a URL: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(BootError::InvalidField {
                field: "boot_store.base_url".into(),
                reason: format!("{base_url:?} must be an http(s) URL without a query"),
            });
        }
        Ok(BootStore {
            store,
            prefix,
            base_url: base_url.trim_end_matches('/').to_owned(),
            single_put_limit: DEFAULT_SINGLE_PUT_LIMIT,
        })
    }

    /// Changes the size above which files are uploaded in parts.
    pub fn with_single_put_limit(mut self, bytes: u64) -> BootStore {
        self.single_put_limit = bytes;
        self
    }

    /// The key of `parts` under the prefix.
    pub fn key(&self, parts: &[&str]) -> Path {
        Path::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(parts.iter().copied()),
        )
    }

    pub fn url(&self, key: &Path) -> String {
        format!("{}/{}", self.base_url, key)
    }

    /// Which published image a kernel URL points into, if it is one of ours.
    pub fn image_for_url(&self, url: &str) -> Option<ImageRef> {
        let rest = url.strip_prefix(&self.base_url)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        for p in &self.prefix {
            if parts.next()? != p {
                return None;
            }
        }
        let (image_name, version, arch) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next()?;
        if parts.next().is_some() || image_name.starts_with('_') {
            return None;
        }
        Some(ImageRef {
            image_name: image_name.to_owned(),
            version: version.to_owned(),
            arch: arch.to_owned(),
        })
    }

    fn record_key(&self, image: &ImageRef) -> Path {
        self.key(&[&image.image_name, &image.version, &image.arch, RECORD_FILE])
    }

    /// Writes `bytes` at `key` unless something is there already.
    pub async fn put_new(&self, key: &Path, bytes: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(key, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.create_error(key, "PUT with PutMode::Create", e))
    }

    pub async fn put_new_json<T: Serialize>(&self, key: &Path, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).map_err(|source| BootError::Record {
            key: key.to_string(),
            what: "JSON document",
            source,
        })?;
        self.put_new(key, Bytes::from(body)).await
    }

    /// `operation` names the conditional write that failed, for stores that
    /// refuse it without saying which (object_store 0.12's `NotImplemented`
    /// carries no details).
    fn create_error(&self, key: &Path, operation: &str, e: object_store::Error) -> BootError {
        match e {
            object_store::Error::AlreadyExists { .. } => BootError::AlreadyExists {
                key: key.to_string(),
            },
            object_store::Error::NotImplemented => BootError::CreateNotSupported {
                store: self.store.to_string(),
                key: key.to_string(),
                reason: format!("{operation} is not implemented"),
            },
            object_store::Error::NotSupported { source } => BootError::CreateNotSupported {
                store: self.store.to_string(),
                key: key.to_string(),
                reason: source.to_string(),
            },
            source => BootError::Store {
                key: key.to_string(),
                source,
            },
        }
    }

    /// Reads a JSON object; `None` when there is none at `key`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &Path,
        what: &'static str,
    ) -> Result<Option<T>> {
        let bytes = match self.store.get(key).await {
            Ok(r) => r.bytes().await.map_err(|source| BootError::Store {
                key: key.to_string(),
                source,
            })?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(BootError::Store {
                    key: key.to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| BootError::Record {
                key: key.to_string(),
                what,
                source,
            })
    }

    /// The keys under `parts`, sorted.
    pub async fn list(&self, parts: &[&str]) -> Result<Vec<Path>> {
        let prefix = self.key(parts);
        let mut keys: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|source| BootError::Store {
                key: prefix.to_string(),
                source,
            })?;
        keys.sort();
        Ok(keys)
    }

    /// The names of the "directories" directly under `parts`, sorted.
    pub async fn list_dirs(&self, parts: &[&str]) -> Result<Vec<String>> {
        let prefix = self.key(parts);
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|source| BootError::Store {
                key: prefix.to_string(),
                source,
            })?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The record of a published image.
    pub async fn record(&self, image: &ImageRef) -> Result<BootRecord> {
        self.get_json(&self.record_key(image), "boot image record")
            .await?
            .ok_or_else(|| BootError::UnknownImage {
                image: image.to_string(),
            })
    }

    /// The versions of `image_name` in the store, oldest first.
    pub async fn versions(&self, image_name: &str) -> Result<Vec<String>> {
        check_segment("image_name", image_name)?;
        self.list_dirs(&[image_name]).await
    }

    /// Uploads a build unless this compose's image is already in the store, in
    /// which case its record is returned (a retried job does not upload twice).
    /// The record is written last, after every file is in place.
    pub async fn upload(&self, image: &LocalBootImage) -> Result<BootRecord> {
        image.validate()?;
        if let Some(existing) = self.find_compose(image).await? {
            tracing::info!(image = %existing.image_ref(), compose = %image.compose_id, "boot image already in the store");
            return Ok(existing);
        }
        let created = Utc::now();
        let version = version_for(image.compose_id, created);
        let mut files = Vec::with_capacity(3);
        for kind in BootFileKind::ALL {
            let key = self.key(&[&image.image_name, &version, &image.arch, kind.file_name()]);
            let (sha256, size) = hash_file(image.path(kind)).await?;
            self.upload_file(&key, image.path(kind), size).await?;
            tracing::info!(key = %key, size, "uploaded boot image file");
            files.push(BootFile {
                url: self.url(&key),
                key: key.to_string(),
                sha256,
                size,
            });
        }
        let [kernel, initrd, rootfs]: [BootFile; 3] =
            files.try_into().map_err(|_| BootError::InvalidField {
                field: "image".into(),
                reason: "a PXE image has exactly three files".into(),
            })?;
        let sbom = match &image.sbom {
            Some(path) => {
                let key = self.key(&[&image.image_name, &version, &image.arch, SBOM_FILE]);
                let (sha256, size) = hash_file(path).await?;
                self.upload_file(&key, path, size).await?;
                Some(BootFile {
                    url: self.url(&key),
                    key: key.to_string(),
                    sha256,
                    size,
                })
            }
            None => None,
        };
        let record = BootRecord {
            kind: RECORD_KIND.into(),
            compose_id: image.compose_id,
            image_name: image.image_name.clone(),
            version,
            arch: image.arch.clone(),
            created,
            files: BootFiles {
                kernel,
                initrd,
                rootfs,
            },
            packages: image.packages.clone(),
            kernel_cmdline: image.kernel_cmdline.clone(),
            sbom,
        };
        self.put_new_json(&self.record_key(&record.image_ref()), &record)
            .await?;
        Ok(record)
    }

    /// The record of this build's compose, if it is in the store already.
    pub async fn find_compose(&self, image: &LocalBootImage) -> Result<Option<BootRecord>> {
        let short = &image.compose_id.simple().to_string()[..8];
        for version in self.versions(&image.image_name).await?.into_iter().rev() {
            if !version.ends_with(short) {
                continue;
            }
            let r = ImageRef {
                image_name: image.image_name.clone(),
                version,
                arch: image.arch.clone(),
            };
            let found: Option<BootRecord> = self
                .get_json(&self.record_key(&r), "boot image record")
                .await?;
            if let Some(rec) = found.filter(|rec| rec.compose_id == image.compose_id) {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    async fn upload_file(&self, key: &Path, path: &FsPath, size: u64) -> Result<()> {
        if size <= self.single_put_limit {
            let owned = path.to_owned();
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut kiln_targets::open_regular(&owned)?, &mut bytes)
                    .map(|_| bytes)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| BootError::Io {
                path: path.to_owned(),
                source,
            })?;
            return self.put_new(key, Bytes::from(bytes)).await;
        }
        // Multipart uploads cannot be conditional, so the parts go to a key of
        // our own and are then copied to the final key only if it is free.
        let staging = self.key(&[
            "_staging",
            &uuid::Uuid::new_v4().simple().to_string(),
            key.filename().unwrap_or("file"),
        ]);
        self.upload_parts(&staging, path).await?;
        let copied = self
            .store
            .copy_if_not_exists(&staging, key)
            .await
            .map_err(|e| self.create_error(key, "copy_if_not_exists", e));
        if let Err(e) = self.store.delete(&staging).await {
            tracing::warn!(key = %staging, error = %e, "could not remove a staging object");
        }
        copied
    }

    async fn upload_parts(&self, key: &Path, path: &FsPath) -> Result<()> {
        let store_err = |source| BootError::Store {
            key: key.to_string(),
            source,
        };
        let io_err = |source| BootError::Io {
            path: path.to_owned(),
            source,
        };
        let upload = self.store.put_multipart(key).await.map_err(store_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut file = tokio::fs::File::from_std(kiln_targets::open_regular(path).map_err(io_err)?);
        let mut buf = vec![0u8; MULTIPART_CHUNK];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_err(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(store_err(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map(|_| ()).map_err(store_err)
    }
}

/// sha256 (hex) and size of a file, read off the async runtime.
pub async fn hash_file(path: &FsPath) -> Result<(String, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let io_err = |source| BootError::Io {
            path: path.clone(),
            source,
        };
        let mut file = kiln_targets::open_regular(&path).map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await?
}
