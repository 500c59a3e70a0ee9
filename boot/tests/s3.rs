//! The boot store on S3, end to end: a real s3s-fs bucket (signatures
//! checked) through `kiln_targets::s3_object_store`, the BSS and SMD test
//! doubles, two builds published to an SMD group, and writes onto taken keys
//! refused by the server.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures::TryStreamExt;
use kiln_boot::{BootError, BootRecord, BootStore, ImageSource, NodeSelector, PublishRequest};
use kiln_targets::{s3_object_store, RetryPolicy, S3Target, Secret};
use kiln_testsupport::openchami::BssEntry;
use kiln_testsupport::storage::S3Server;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

const MIB: usize = 1024 * 1024;
/// Files above this go up in parts to `_staging` and are then copied with
/// copy-if-not-exists, so both kinds of conditional write reach s3s-fs.
const SINGLE_PUT_LIMIT: u64 = 64 * 1024;

fn s3_target(server: &S3Server) -> S3Target {
    S3Target {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: server.bucket.clone(),
        access_key_id: server.access_key_id.clone(),
        secret_access_key: Secret::new(server.secret_access_key.clone()),
        path_style: true,
        part_size: 5 * MIB as u64,
        concurrency: 1,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            request_timeout_secs: 30,
        },
    }
}

fn request(image: ImageSource) -> PublishRequest {
    PublishRequest {
        image,
        nodes: NodeSelector::group(GROUP).unwrap(),
        extra_params: EXTRA.into(),
    }
}

async fn read(store: &dyn ObjectStore, key: &str) -> Bytes {
    store
        .get(&Path::from(key))
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
        .bytes()
        .await
        .unwrap()
}

/// Every file of `rec` is in the bucket with the bytes of `build`.
async fn assert_stored(
    store: &dyn ObjectStore,
    server: &S3Server,
    rec: &BootRecord,
    build: &kiln_boot::LocalBootImage,
) {
    for (file, local) in [
        (&rec.files.kernel, &build.kernel),
        (&rec.files.initrd, &build.initrd),
        (&rec.files.rootfs, &build.rootfs),
    ] {
        let want = std::fs::read(local).unwrap();
        let got = read(store, &file.key).await;
        assert!(got == want, "{} differs from {}", file.key, local.display());
        assert_eq!(file.sha256, sha256_hex(&got), "{}", file.key);
        assert_eq!(file.size, want.len() as u64, "{}", file.key);
        // It is s3s-fs's object, not something kept elsewhere.
        assert!(server.object_path(&file.key).is_file(), "{}", file.key);
    }
    // The SBOM, when the build has one, beside them.
    match (&rec.sbom, &build.sbom) {
        (Some(file), Some(local)) => {
            assert!(file.key.ends_with("/sbom.spdx.json"), "{}", file.key);
            let want = std::fs::read(local).unwrap();
            assert!(read(store, &file.key).await == want, "{}", file.key);
            assert_eq!(file.sha256, sha256_hex(&want), "{}", file.key);
            assert_eq!(file.size, want.len() as u64);
            assert!(file.url.ends_with(&file.key), "{}", file.url);
        }
        (None, None) => {}
        (stored, local) => panic!("record {stored:?}, build {local:?}"),
    }
    let record: BootRecord = serde_json::from_slice(
        &read(
            store,
            &format!(
                "{PREFIX}/{}/{}/{}/boot.json",
                rec.image_name, rec.version, rec.arch
            ),
        )
        .await,
    )
    .unwrap();
    assert_eq!(&record, rec);
}

async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn two_builds_published_to_an_smd_group_through_s3() {
    let server = S3Server::start("boot-images").expect("s3s-fs");
    let store = s3_object_store(&s3_target(&server)).unwrap();
    let boot_store = BootStore::new(Arc::clone(&store), PREFIX, BASE_URL)
        .unwrap()
        .with_single_put_limit(SINGLE_PUT_LIMIT);
    let c = Cluster::start_on(|_| boot_store).await;

    // First build: a 9 MiB squashfs, two 8 MiB-chunked parts in staging.
    let mut first = c.build("rocky9-compute", 9 * MIB + 17);
    // With its SBOM, which the record names.
    let sbom = first.kernel.with_file_name("root.tar.spdx.json");
    std::fs::write(&sbom, "{\"spdxVersion\": \"SPDX-2.3\"}\n").unwrap();
    first.sbom = Some(sbom);
    let plan = c
        .deployer
        .publish(&request(ImageSource::Local(first.clone())))
        .await
        .unwrap_or_else(|e| panic!("{e}\ns3s-fs log:\n{}", server.log()));
    assert_eq!(plan.changes.len(), 3);
    let rec1 = c
        .deployer
        .store()
        .find_compose(&first)
        .await
        .unwrap()
        .expect("the first build's record");
    assert_stored(store.as_ref(), &server, &rec1, &first).await;
    let entry_for = |rec: &BootRecord| BssEntry {
        kernel: Some(rec.files.kernel.url.clone()),
        initrd: Some(rec.files.initrd.url.clone()),
        params: Some(format!(
            "root=live:{} rd.live.overlay.overlayfs=1 console=ttyS0,115200 {EXTRA}",
            rec.files.rootfs.url
        )),
        cloud_init: None,
    };
    for x in group_members() {
        assert_eq!(c.bss.entry(x), Some(entry_for(&rec1)), "{x}");
    }
    assert_eq!(c.bss.entry("x3000c0s19b1n0"), None, "not in the group");

    // Second build, its squashfs small enough for a single staged part.
    let second = c.build("rocky9-compute", 100 * 1024);
    c.deployer
        .publish(&request(ImageSource::Local(second.clone())))
        .await
        .unwrap_or_else(|e| panic!("{e}\ns3s-fs log:\n{}", server.log()));
    let rec2 = c
        .deployer
        .store()
        .find_compose(&second)
        .await
        .unwrap()
        .expect("the second build's record");
    assert_ne!(rec1.version, rec2.version);
    // Both builds are in the bucket, each with its own bytes.
    assert_stored(store.as_ref(), &server, &rec1, &first).await;
    assert_stored(store.as_ref(), &server, &rec2, &second).await;
    for x in group_members() {
        assert_eq!(c.bss.entry(x), Some(entry_for(&rec2)), "{x}");
    }
    let all = keys(store.as_ref()).await;
    assert!(!all.iter().any(|k| k.contains("_staging")), "{all:?}");
    // 2 × 4 image files, the first's SBOM, 2 deployments, 2 × 3 node entries.
    assert_eq!(all.len(), 17, "{all:?}");

    // A key that is taken is refused by the server, small or large path.
    let kernel_key = Path::from(rec1.files.kernel.key.as_str());
    let e = c
        .deployer
        .store()
        .put_new(&kernel_key, Bytes::from_static(b"another kernel"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BootError::AlreadyExists { key } if *key == rec1.files.kernel.key),
        "{e}"
    );
    assert_stored(store.as_ref(), &server, &rec1, &first).await;

    // A third build whose squashfs key is already taken (as by an earlier,
    // interrupted upload): its version is `<UTC second>-<compose id>`, so
    // every version the next half minute could produce gets a squatter.
    let third = c.build("rocky9-compute", 200 * 1024);
    let short = &third.compose_id.simple().to_string()[..8];
    let now = chrono::Utc::now();
    let squatter = Bytes::from_static(b"not the third build's squashfs");
    for s in -2..30 {
        let at = now + chrono::Duration::seconds(s);
        let version = format!("{}-{short}", at.format("%Y%m%dT%H%M%SZ"));
        let key = format!("{PREFIX}/rocky9-compute/{version}/x86_64/rootfs.squashfs");
        store
            .put(&Path::from(key), PutPayload::from(squatter.clone()))
            .await
            .unwrap();
    }
    let e = c
        .deployer
        .publish(&request(ImageSource::Local(third.clone())))
        .await
        .expect_err("the squashfs key is taken");
    let BootError::AlreadyExists { key } = &e else {
        panic!("expected AlreadyExists, got {e}");
    };
    assert!(key.ends_with("/x86_64/rootfs.squashfs"), "{key}");
    assert!(key.contains(short), "{key}");
    assert_eq!(read(store.as_ref(), key).await, squatter, "overwritten");
    // Nothing was recorded or registered for the third build.
    assert_eq!(c.deployer.store().find_compose(&third).await.unwrap(), None);
    for x in group_members() {
        assert_eq!(c.bss.entry(x), Some(entry_for(&rec2)), "{x}");
    }
    let all = keys(store.as_ref()).await;
    assert!(!all.iter().any(|k| k.contains("_staging")), "{all:?}");
    assert_eq!(c.deployer.store().deployment_ids().await.unwrap().len(), 2);
}
