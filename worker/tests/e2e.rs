//! From a compose request to uploaded artifacts: the composer depsolves and
//! writes the manifest, a `kiln-worker` takes the build over mutual TLS,
//! runs the executor, streams progress, uploads to real storage servers on
//! loopback, and the compose status says where everything went.

mod common;

use std::time::Duration;

use common::{local_target, Kiln};
use kiln_testsupport::storage::{AzuriteServer, GcsServer, S3Server};
use serde_json::{json, Value};
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("success") | Some("failure"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_is_built_and_uploaded_to_every_target() {
    let kiln = Kiln::start(|_| {}).await;
    let s3 = S3Server::start("images").unwrap();
    let azure = AzuriteServer::start().unwrap();
    let gcs = GcsServer::start("images").unwrap();
    let local = kiln.dir.path().join("local-images");
    std::fs::create_dir_all(&local).unwrap();
    let azure_target = kiln_targets::AzureTarget {
        account: azure.account.clone(),
        key: kiln_targets::Secret::new(azure.key.clone()),
        container: "images".into(),
        endpoint: Some(azure.endpoint()),
        block_size: 4 << 20,
        concurrency: 4,
        retry: Default::default(),
    };
    kiln_targets::azure::create_container(&azure_target)
        .await
        .unwrap();
    let targets = format!(
        "{}\n[targets.\"aws.s3\"]\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"images\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\npath_style = true\npart_size = 5242880\n\n[targets.azure]\ntype = \"azure\"\naccount = \"{}\"\nkey = \"{}\"\ncontainer = \"images\"\nendpoint = \"{}\"\n\n[targets.gcp]\ntype = \"gcs\"\nbucket = \"images\"\nendpoint = \"{}\"\n",
        local_target(&local),
        s3.endpoint(),
        s3.access_key_id,
        s3.secret_access_key,
        azure.account,
        azure.key,
        azure.endpoint(),
        gcs.endpoint()
    );
    let worker = kiln.worker("w1.kiln.test", &targets);
    let request = kiln.request(json!([
        {"type": "local", "upload_options": {}},
        {"type": "aws.s3", "upload_options": {"region": "us-east-1"}},
        {"type": "azure", "upload_options": {"tenant_id": "t", "subscription_id": "s", "resource_group": "r"}},
        {"type": "gcp", "upload_options": {"region": "europe-west1"}}
    ]));
    let id = kiln.submit(&request).await;
    // While it builds, the status says so, with the executor's progress.
    let building = kiln
        .wait(&id, Duration::from_secs(300), |s| {
            s["image_status"]["status"] == json!("building")
                && s["image_status"]["progress"]["total"].as_i64() > Some(0)
                || finished(s)
        })
        .await;
    assert!(
        !finished(&building),
        "the build never showed progress: {building}"
    );
    let done = kiln.wait(&id, Duration::from_secs(600), finished).await;
    assert_eq!(done["status"], json!("success"), "{done}\n{}", worker.log());
    let uploads = done["image_status"]["upload_statuses"].as_array().unwrap();
    assert_eq!(uploads.len(), 4, "{done}");
    assert!(
        uploads.iter().all(|u| u["status"] == json!("success")),
        "{done}"
    );

    // The bytes in every storage are the artifact's.
    let local_file = local.join(format!("{id}-0-root.tar"));
    let tar = std::fs::read(&local_file).unwrap();
    assert!(tar.len() > 10 << 20);
    let want = sha256(&tar);
    let key = format!("{id}/0/root.tar");
    assert_eq!(sha256(&std::fs::read(s3.object_path(&key)).unwrap()), want);
    assert_eq!(
        sha256(
            &kiln_targets::azure::read_blob(&azure_target, &key)
                .await
                .unwrap()
        ),
        want
    );
    let from_gcs = reqwest::get(format!(
        "{}/storage/v1/b/images/o/{}?alt=media",
        gcs.endpoint(),
        key.replace('/', "%2F")
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(sha256(&from_gcs), want);
    let urls: Vec<&str> = uploads
        .iter()
        .map(|u| u["options"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls[0], format!("file://{}", local_file.display()));
    assert_eq!(urls[1], format!("s3://images/{key}"));
    assert!(urls[2].ends_with(&format!("/images/{key}")), "{}", urls[2]);
    assert_eq!(urls[3], format!("gs://images/{key}"));
    for u in uploads {
        assert_eq!(u["options"]["files"][0]["sha256"], json!(want));
    }
    // The tree inside is the requested one.
    let hostname = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&local_file)
        .arg("./etc/hostname")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hostname.stdout), "node-e2e\n");
    // The worker's scratch directory and the executor's store are its own.
    use std::os::unix::fs::PermissionsExt;
    for dir in ["jobs", "store"] {
        let mode = std::fs::metadata(worker.home.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
}
