//! The boot store never overwrites: conditional creates, large files through
//! a staging key, and a clear error from stores that cannot create-if-absent.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures::stream::BoxStream;
use kiln_boot::{BootError, BootStore, ImageSource, NodeSelector, PublishRequest};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

#[tokio::test]
async fn a_published_key_is_never_overwritten() {
    let c = Cluster::start().await;
    let store = c.deployer.store();
    let key = store.key(&["rocky9", "v1", "x86_64", "vmlinuz"]);
    store
        .put_new(&key, Bytes::from_static(b"first"))
        .await
        .unwrap();
    let e = store
        .put_new(&key, Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(e, BootError::AlreadyExists { .. }), "{e}");
    assert!(
        e.to_string().contains("kiln/pxe/rocky9/v1/x86_64/vmlinuz"),
        "{e}"
    );
    let on_disk = std::fs::read(c.store_root().join("kiln/pxe/rocky9/v1/x86_64/vmlinuz")).unwrap();
    assert_eq!(on_disk, b"first");
}

#[tokio::test]
async fn large_files_go_through_staging_and_arrive_whole() {
    // Anything above 1 KiB goes up in parts; the parts are 8 MiB, so a 9 MiB
    // squashfs takes two.
    let c = Cluster::start_with(|s| s.with_single_put_limit(1024)).await;
    let build = c.build("rocky9-compute", 9 * 1024 * 1024 + 17);
    c.deployer
        .publish(&PublishRequest {
            image: ImageSource::Local(build.clone()),
            nodes: NodeSelector::xnames(&["x1000c0s0b0n0"]).unwrap(),
            extra_params: String::new(),
        })
        .await
        .unwrap();
    let rec = c
        .deployer
        .store()
        .find_compose(&build)
        .await
        .unwrap()
        .unwrap();
    let stored = std::fs::read(c.store_root().join(&rec.files.rootfs.key)).unwrap();
    assert_eq!(stored, std::fs::read(&build.rootfs).unwrap());
    assert_eq!(rec.files.rootfs.sha256, sha256_hex(&stored));
    let files = files_under(&c.store_root());
    assert!(!files.iter().any(|f| f.contains("_staging")), "{files:?}");
}

/// A store that, like S3 without conditional writes configured, cannot
/// create-if-absent.
#[derive(Debug)]
struct NoConditionalWrites(InMemory);

impl std::fmt::Display for NoConditionalWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoConditionalWrites")
    }
}

#[async_trait]
impl ObjectStore for NoConditionalWrites {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if opts.mode == PutMode::Create {
            return Err(object_store::Error::NotImplemented);
        }
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.0.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.0.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, _from: &Path, _to: &Path) -> object_store::Result<()> {
        Err(object_store::Error::NotSupported {
            source: "copy-if-not-exists is not configured".into(),
        })
    }
}

#[tokio::test]
async fn stores_without_conditional_create_are_refused_clearly() {
    let store = BootStore::new(
        Arc::new(NoConditionalWrites(InMemory::new())),
        PREFIX,
        BASE_URL,
    )
    .unwrap();
    let key = store.key(&["img", "v", "x86_64", "vmlinuz"]);
    let e = store
        .put_new(&key, Bytes::from_static(b"k"))
        .await
        .unwrap_err();
    assert!(matches!(e, BootError::CreateNotSupported { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("NoConditionalWrites") && text.contains("without overwriting"),
        "{text}"
    );
}

#[test]
fn store_settings_are_checked() {
    let mem = || -> Arc<dyn ObjectStore> { Arc::new(InMemory::new()) };
    let e = BootStore::new(mem(), "kiln/../x", BASE_URL).unwrap_err();
    assert!(e.to_string().starts_with("boot_store.prefix: "), "{e}");
    let e = BootStore::new(mem(), "kiln", "s3://bucket/boot").unwrap_err();
    assert!(e.to_string().starts_with("boot_store.base_url: "), "{e}");
    let s = BootStore::new(mem(), "/kiln/pxe/", "https://boot.example/images/").unwrap();
    let k = s.key(&["rocky9", "20260101T000000Z-1a2b3c4d", "x86_64", "vmlinuz"]);
    assert_eq!(
        s.url(&k),
        "https://boot.example/images/kiln/pxe/rocky9/20260101T000000Z-1a2b3c4d/x86_64/vmlinuz"
    );
    let r = s.image_for_url(&s.url(&k)).unwrap();
    assert_eq!(r.to_string(), "rocky9/20260101T000000Z-1a2b3c4d/x86_64");
    assert_eq!(
        s.image_for_url("https://boot.example/images/other/rocky9/v/x86_64/vmlinuz"),
        None
    );
}
