//! From a compose request to uploaded artifacts: the composer depsolves and
//! writes the manifest, a `kiln-worker` takes the build over mutual TLS,
//! runs the executor, streams progress, uploads to real storage servers on
//! loopback, and the compose status says where everything went. The same
//! builds' SBOMs: served, uploaded beside the artifact, valid by the SPDX
//! tools, exactly the depsolved set, the same bytes for the same inputs, and
//! `kiln compose diff` naming the one package a later build added.

mod common;

use std::time::Duration;

use common::{local_target, Kiln};
use kiln_api::sbom::{ComposeSboms, SpdxDocument};
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
    // A second mirror holds runit-helper, which depends on nothing: the
    // later build that adds it differs by that one package.
    let extra_dir = tempfile::tempdir().unwrap();
    let (extra, _) =
        kiln_testsupport::aptcache::debian_mirror(extra_dir.path(), &["runit-helper".to_owned()])
            .unwrap();
    let kiln = Kiln::start(|c| {
        c.repositories
            .allow
            .push(kiln_composer::AllowEntry::Prefix(extra.url()))
    })
    .await;
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
    // The SBOM, beside the artifact in every storage and served by the composer.
    let sbom_file = local.join(format!("{id}-0-root.tar.spdx.json"));
    let sbom_bytes = std::fs::read(&sbom_file).unwrap();
    let sbom_key = format!("{id}/0/root.tar.spdx.json");
    assert_eq!(
        std::fs::read(s3.object_path(&sbom_key)).unwrap(),
        sbom_bytes
    );
    for u in uploads {
        let files = u["options"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 2, "{u}");
        assert_eq!(files[1]["name"], json!("root.tar.spdx.json"));
        assert_eq!(files[1]["sha256"], json!(sha256(&sbom_bytes)));
    }
    let served = sboms(&kiln, &id).await;
    let doc: SpdxDocument = serde_json::from_slice(&sbom_bytes).unwrap();
    assert_eq!(served, doc, "the composer serves the uploaded document");
    assert_sbom_is_the_depsolved_set(&kiln, &id, &doc).await;
    validate_with_spdx_tools(&sbom_file);
    // Licenses as the packages' machine-readable copyright files declare
    // them: an SPDX id as it is, other names as extracted text; a
    // free-form copyright file declares nothing a program can read.
    let license = |name: &str| {
        doc.packages
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.license_declared.clone())
            .unwrap()
    };
    assert_eq!(license("zlib1g"), "Zlib");
    assert_eq!(license("base-files"), "NOASSERTION");
    let less = license("less");
    let text = doc
        .has_extracted_licensing_infos
        .iter()
        .find(|l| l.license_id == less)
        .map(|l| l.extracted_text.as_str());
    assert!(
        text.is_some_and(|t| t.starts_with("(GPL-3+ or Less)")),
        "{less}: {text:?}"
    );

    // The same inputs again (another target): the build comes from the
    // executor's store and its SBOM is the same bytes.
    let again = kiln.request(json!([{"type": "local", "upload_options": {}}]));
    let again_id = kiln.submit(&again).await;
    let done = kiln
        .wait(&again_id, Duration::from_secs(600), finished)
        .await;
    assert_eq!(done["status"], json!("success"), "{done}\n{}", worker.log());
    let again_bytes =
        std::fs::read(local.join(format!("{again_id}-0-root.tar.spdx.json"))).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again_bytes),
        String::from_utf8_lossy(&sbom_bytes),
        "the same image's SBOM differs"
    );

    // One package more: `kiln compose diff` lists it, and nothing else.
    let mut more = again.clone();
    more["blueprint"]["packages"] = json!([{"name": "runit-helper"}]);
    more["image_request"]["repositories"]
        .as_array_mut()
        .unwrap()
        .push(json!({"baseurl": extra.url(), "suite": "test", "components": ["main"], "check_repo_gpg": false}));
    let more_id = kiln.submit(&more).await;
    let done = kiln
        .wait(&more_id, Duration::from_secs(600), finished)
        .await;
    assert_eq!(done["status"], json!("success"), "{done}\n{}", worker.log());
    let added = sboms(&kiln, &more_id).await;
    assert_sbom_is_the_depsolved_set(&kiln, &more_id, &added).await;
    let helper = added
        .packages
        .iter()
        .find(|p| p.name == "runit-helper")
        .unwrap();
    let (version, arch) = (
        helper.version_info.clone().unwrap(),
        helper.arch().unwrap().to_owned(),
    );
    assert_eq!(added.packages.len(), doc.packages.len() + 1);
    let kiln_cli = kiln_cli();
    let diff = std::process::Command::new(&kiln_cli)
        .args(["compose", "diff", &id, &more_id, "--composer"])
        .arg(kiln.api.trim_end_matches("/api/image-builder-composer/v2"))
        .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
        .output()
        .unwrap();
    assert!(diff.status.success(), "{diff:?}");
    assert_eq!(
        String::from_utf8_lossy(&diff.stdout),
        format!("+ runit-helper {version} {arch}\n")
    );
    let json_diff = std::process::Command::new(&kiln_cli)
        .args([
            "compose",
            "diff",
            &more_id,
            &id,
            "--output",
            "json",
            "--composer",
        ])
        .arg(kiln.api.trim_end_matches("/api/image-builder-composer/v2"))
        .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
        .output()
        .unwrap();
    assert!(json_diff.status.success(), "{json_diff:?}");
    let v: Value = serde_json::from_slice(&json_diff.stdout).unwrap();
    assert_eq!(
        v,
        json!({"old": more_id, "new": id, "image": 0, "added": [], "changed": [],
               "removed": [{"name": "runit-helper", "arch": arch, "version": version}]})
    );

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

/// The one SBOM of the compose's one image, as `GET /composes/{id}/sboms`
/// serves it.
async fn sboms(kiln: &Kiln, id: &str) -> SpdxDocument {
    let r = kiln
        .http
        .get(format!("{}/composes/{id}/sboms", kiln.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: ComposeSboms = r.json().await.unwrap();
    assert_eq!(answer.kind, "ComposeSBOMs");
    assert_eq!(answer.items.len(), 1);
    assert_eq!(answer.items[0].len(), 1);
    let image = answer.items[0][0].clone();
    assert_eq!(image.pipeline_name, "os");
    assert_eq!(
        serde_json::to_value(image.pipeline_purpose).unwrap(),
        json!("image")
    );
    image.sbom
}

/// The SBOM lists exactly the packages of the compose's `/metadata`: name,
/// version, architecture and the checksum of the file it came from.
async fn assert_sbom_is_the_depsolved_set(kiln: &Kiln, id: &str, doc: &SpdxDocument) {
    let metadata: Value = kiln
        .http
        .get(format!("{}/composes/{id}/metadata", kiln.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut solved: Vec<(String, String, String, String)> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            let mut version = s("version");
            if !s("epoch").is_empty() {
                version = format!("{}:{version}", s("epoch"));
            }
            if !s("release").is_empty() {
                version = format!("{version}-{}", s("release"));
            }
            (s("name"), version, s("arch"), s("checksum"))
        })
        .collect();
    solved.sort();
    let mut listed: Vec<(String, String, String, String)> = doc
        .packages
        .iter()
        .map(|p| {
            assert_eq!(p.checksums.len(), 1, "{p:?}");
            assert_eq!(p.checksums[0].algorithm, "SHA256");
            // The mirror is a file: URL, which names no download location.
            assert_eq!(p.download_location, "NOASSERTION");
            assert!(
                p.comment.as_deref().is_some_and(|c| c.contains("file://")),
                "{p:?}"
            );
            assert!(p.source_info.is_some(), "{p:?}");
            (
                p.name.clone(),
                p.version_info.clone().unwrap(),
                p.arch().unwrap().to_owned(),
                format!("sha256:{}", p.checksums[0].checksum_value),
            )
        })
        .collect();
    listed.sort();
    assert!(solved.len() > 50, "{metadata}");
    assert_eq!(listed, solved);
}

/// `pyspdxtools -i FILE` (spdx-tools from PyPI, in the tools venv that
/// tools/test.sh makes) parses and validates the document.
fn validate_with_spdx_tools(file: &std::path::Path) {
    let (ok, text) = kiln_testsupport::spdx::validate(file);
    assert!(ok, "pyspdxtools: {text}");
    assert!(!text.contains("invalid"), "pyspdxtools: {text}");
}

/// The `kiln` command line, built beside `kiln-worker` (`cargo test
/// --workspace`, as tools/test.sh runs it, builds both).
fn kiln_cli() -> std::path::PathBuf {
    let cli = std::path::Path::new(common::WORKER).with_file_name("kiln");
    assert!(
        cli.is_file(),
        "{} is missing: build it first (cargo build -p kiln-cli)",
        cli.display()
    );
    cli
}
