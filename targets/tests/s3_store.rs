//! `s3_object_store` against s3s-fs (signatures checked) on loopback: its
//! create-only writes are refused on an existing key by the server itself.

mod common;

use bytes::Bytes;
use common::quick_retries;
use kiln_targets::{s3_object_store, S3Target, Secret, UploadError};
use kiln_testsupport::storage::S3Server;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

fn target(server: &S3Server) -> S3Target {
    S3Target {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: server.bucket.clone(),
        access_key_id: server.access_key_id.clone(),
        secret_access_key: Secret::new(server.secret_access_key.clone()),
        path_style: true,
        part_size: 5 * 1024 * 1024,
        concurrency: 1,
        retry: quick_retries(),
    }
}

fn create() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    }
}

async fn read(store: &dyn ObjectStore, key: &Path) -> Bytes {
    store.get(key).await.unwrap().bytes().await.unwrap()
}

#[tokio::test]
async fn a_create_onto_an_existing_key_is_refused() {
    let server = S3Server::start("boot").expect("s3s-fs");
    let store = s3_object_store(&target(&server)).unwrap();
    let key = Path::from("a/b/vmlinuz");
    store
        .put_opts(&key, PutPayload::from_static(b"first"), create())
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let e = store
        .put_opts(&key, PutPayload::from_static(b"second"), create())
        .await
        .unwrap_err();
    assert!(
        matches!(e, object_store::Error::AlreadyExists { .. }),
        "{e:?}"
    );
    assert_eq!(read(store.as_ref(), &key).await, "first");
    assert_eq!(
        std::fs::read(server.object_path("a/b/vmlinuz")).unwrap(),
        b"first"
    );
}

#[tokio::test]
async fn copy_if_not_exists_copies_once_and_then_refuses() {
    let server = S3Server::start("boot").expect("s3s-fs");
    let store = s3_object_store(&target(&server)).unwrap();
    // The source is a multipart upload of two parts, as a large staged file is.
    let staged = Path::from("_staging/1/rootfs.squashfs");
    let body: Vec<u8> = (0..6 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    let mut writer = WriteMultipart::new_with_chunk_size(
        store.put_multipart(&staged).await.unwrap(),
        5 * 1024 * 1024,
    );
    writer.write(&body);
    writer.finish().await.unwrap();

    let dest = Path::from("img/v1/x86_64/rootfs.squashfs");
    store
        .copy_if_not_exists(&staged, &dest)
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    assert!(read(store.as_ref(), &dest).await == body);

    let other = Path::from("other");
    store
        .put_opts(&other, PutPayload::from_static(b"other bytes"), create())
        .await
        .unwrap();
    let e = store.copy_if_not_exists(&other, &dest).await.unwrap_err();
    assert!(
        matches!(e, object_store::Error::AlreadyExists { .. }),
        "{e:?}"
    );
    assert!(
        read(store.as_ref(), &dest).await == body,
        "the copy overwrote"
    );
}

#[test]
fn credentials_are_required() {
    let t = S3Target {
        endpoint: "http://127.0.0.1:1".into(),
        region: "us-east-1".into(),
        bucket: "b".into(),
        access_key_id: String::new(),
        secret_access_key: Secret::new(""),
        path_style: true,
        part_size: 5 * 1024 * 1024,
        concurrency: 1,
        retry: quick_retries(),
    };
    let e = s3_object_store(&t).expect_err("no credentials");
    assert!(matches!(e, UploadError::Config { .. }), "{e}");
    assert!(e.to_string().contains("access_key_id"), "{e}");
}
