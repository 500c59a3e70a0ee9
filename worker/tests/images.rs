//! kiln builds the container images its quadlets run. `tools/build-debs.sh`
//! packages this build's kiln-composer and kiln-worker with cargo-deb into
//! an apt repository indexed by apt-ftparchive; a real composer and worker
//! compose the example requests of `deploy/images/` from a mirror of real
//! Debian packages plus that repository; each `oci` archive is read with
//! `skopeo inspect` (entrypoint, user, ports, labels: what the request asked
//! and what `deploy/quadlet/` expects of the image) and loaded into a
//! throwaway podman store, and its layer holds what the quadlet needs (the
//! program, the user, its directories; for the worker, setuid newuidmap
//! and the build user's subordinate ids).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{local_target, Kiln, WORKER};
use kiln_testsupport::unitfile::UnitFile;
use serde_json::{json, Value};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The apt repository of this build's packages: its binaries (the profile
/// directory cargo put `kiln-worker` in) through `tools/build-debs.sh`.
fn build_debs(out: &Path) {
    let profile_dir = Path::new(WORKER).parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    run(Command::new("bash")
        .arg(repo("tools/build-debs.sh"))
        .args(["--no-build", "--fast", "--profile", profile, "--out"])
        .arg(out)
        .env("CARGO_TARGET_DIR", target_dir));
}

/// The names a package's `Depends` field lists (versions and alternatives
/// beyond the first left out).
fn depends(deb: &Path) -> Vec<String> {
    let field = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Depends"));
    String::from_utf8(field)
        .unwrap()
        .split(',')
        .map(|d| {
            d.split('|')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// `tar -tv` of a gzip layer: path → (mode string, uid).
fn listing(layer: &Path) -> BTreeMap<String, (String, u32)> {
    let text = run(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(layer));
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let uid = f[1].split('/').next().unwrap().parse().unwrap();
            let path = f[5].trim_start_matches("./").trim_end_matches('/');
            (format!("/{path}"), (f[0].to_owned(), uid))
        })
        .collect()
}

fn layer_file(layer: &Path, path: &str) -> String {
    let bytes = run(Command::new("tar")
        .args(["-xzOf"])
        .arg(layer)
        .arg(format!(".{path}")));
    String::from_utf8(bytes).unwrap()
}

/// The uid of `user` in an `/etc/passwd`.
fn uid_of(passwd: &str, user: &str) -> u32 {
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {user} in /etc/passwd:\n{passwd}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_builds_the_container_images_its_quadlets_run() {
    let apt = tempfile::tempdir().unwrap();
    build_debs(apt.path());
    let pool = apt.path().join("pool/main");
    let debs: Vec<PathBuf> = std::fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let names: Vec<String> = debs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for package in ["kiln-composer_", "kiln-worker_", "kiln_"] {
        assert!(
            names.iter().any(|n| n.starts_with(package)),
            "{package}*.deb missing: {names:?}"
        );
    }
    let index =
        std::fs::read_to_string(apt.path().join("dists/kiln/main/binary-amd64/Packages")).unwrap();
    for package in ["kiln-composer", "kiln-worker", "kiln"] {
        assert!(
            index.lines().any(|l| l == format!("Package: {package}")),
            "{package} is not in the index:\n{index}"
        );
    }
    let release = std::fs::read_to_string(apt.path().join("dists/kiln/Release")).unwrap();
    assert!(release.contains("main/binary-amd64/Packages"), "{release}");

    // The mirror holds what the packages depend on.
    let mut extra: Vec<String> = debs.iter().flat_map(|d| depends(d)).collect();
    extra.retain(|n| !n.starts_with("kiln"));
    extra.sort();
    extra.dedup();
    let apt_url = format!("file://{}", apt.path().display());
    let allowed = apt_url.clone();
    let kiln = Kiln::start_mirroring(&["oci"], &extra, |c| {
        c.repositories
            .allow
            .push(kiln_composer::AllowEntry::Prefix(allowed));
    })
    .await;
    let local = kiln.dir.path().join("images");
    let worker = kiln.worker("w1.kiln.test", &local_target(&local));

    let store = tempfile::tempdir().unwrap();
    for (example, quadlet_file, program) in [
        (
            "deploy/images/kiln-composer.json",
            "deploy/quadlet/kiln-composer.container",
            "/usr/bin/kiln-composer",
        ),
        (
            "deploy/images/kiln-worker.json",
            "deploy/quadlet/kiln-worker.container",
            "/usr/bin/kiln-worker",
        ),
    ] {
        let mut request: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(example)).unwrap()).unwrap();
        let asked = request["customizations"]["oci"].clone();
        // The test's mirror and repository stand for the example's.
        request["image_request"]["repositories"] = json!([{
            "baseurl": kiln.mirror.url(), "suite": "test", "components": ["main"], "check_repo_gpg": false}]);
        request["customizations"]["payload_repositories"][0]["baseurl"] = json!(apt_url);
        let started = std::time::Instant::now();
        let id = kiln.submit(&request).await;
        let done = kiln
            .wait(&id, Duration::from_secs(900), |s| {
                matches!(s["status"].as_str(), Some("success" | "failure"))
            })
            .await;
        assert_eq!(
            done["status"],
            "success",
            "{example}: {done}\n{}",
            worker.log()
        );
        eprintln!("{example}: {:.1} s", started.elapsed().as_secs_f64());
        let archive = local.join(format!("{id}-0-image.oci.tar"));

        // What skopeo reads: the request's configuration, the quadlet's user.
        let inspect: Value = serde_json::from_slice(&run(Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display()))))
        .unwrap();
        let config = &inspect["config"];
        assert_eq!(
            config["Entrypoint"],
            json!([program]),
            "{example}: {inspect}"
        );
        assert_eq!(config["Entrypoint"], asked["entrypoint"]);
        assert!(
            config.get("Cmd").is_none_or(|c| c == &json!([])),
            "{config}"
        );
        assert_eq!(config["User"], asked["user"], "{config}");
        assert_eq!(config["Labels"], asked["labels"], "{config}");
        assert_eq!(config["WorkingDir"], asked["working_dir"], "{config}");
        assert_eq!(config["StopSignal"], "SIGTERM", "{config}");
        for port in asked["exposed_ports"].as_array().into_iter().flatten() {
            assert_eq!(
                config["ExposedPorts"][port.as_str().unwrap()],
                json!({}),
                "{config}"
            );
        }
        let env: Vec<&str> = config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        for e in asked["env"].as_array().unwrap() {
            assert!(env.contains(&e.as_str().unwrap()), "{e} missing: {env:?}");
        }
        assert_eq!(inspect["architecture"], "amd64");
        assert_eq!(inspect["os"], "linux");
        let quadlet = UnitFile::read(&repo(quadlet_file));
        assert_eq!(
            quadlet.get("Container", "User"),
            config["User"].as_str(),
            "{quadlet_file} runs the image as another user"
        );
        assert_eq!(
            quadlet.get("Container", "Exec"),
            None,
            "{quadlet_file} must run the image's entrypoint"
        );
        // Every directory the quadlet mounts a volume of is in the image,
        // owned by the image's user (podman copies it into a new volume).
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("dir:{}", layout.display())));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{manifest}");
        let digest = layers[0]["digest"].as_str().unwrap();
        let layer = layout.join(digest.trim_start_matches("sha256:"));
        let files = listing(&layer);
        let passwd = layer_file(&layer, "/etc/passwd");
        let user = config["User"].as_str().unwrap();
        let uid = uid_of(&passwd, user);
        let (mode, owner) = &files[program];
        assert!(mode.starts_with("-rwxr-xr-x"), "{program}: {mode}");
        assert_eq!(*owner, 0, "{program} belongs to root");
        for v in quadlet.list("Container", "Volume") {
            let target = v.split(':').nth(1).unwrap();
            if target.starts_with("/etc/") || target == "/etc" {
                continue; // the host's configuration, mounted read-only
            }
            let (mode, owner) = files
                .get(target)
                .unwrap_or_else(|| panic!("{example}: no {target} for {quadlet_file}'s volume"));
            assert!(mode.starts_with('d'), "{target}: {mode}");
            assert_eq!(*owner, uid, "{target} belongs to {user}");
        }
        if program.ends_with("kiln-worker") {
            // Rootless builds: setuid newuidmap/newgidmap, bubblewrap, and
            // 65536 subordinate ids for the build user.
            for tool in ["/usr/bin/newuidmap", "/usr/bin/newgidmap"] {
                let (mode, owner) = &files[tool];
                assert!(mode.starts_with("-rwsr-xr-x"), "{tool}: {mode}");
                assert_eq!(*owner, 0, "{tool}");
            }
            assert!(files.contains_key("/usr/bin/bwrap"), "no bubblewrap");
            for ids in ["/etc/subuid", "/etc/subgid"] {
                let text = layer_file(&layer, ids);
                assert!(
                    text.lines().any(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        f.len() == 3 && f[0] == user && f[2].parse::<u64>().unwrap() >= 65536
                    }),
                    "{ids}: {text}"
                );
            }
        }
        // podman takes it into a store of its own (nothing is run).
        if let Some(out) = podman_load(store.path(), &archive) {
            let images: Value = serde_json::from_slice(&out).unwrap();
            let loaded = &images[0]["Config"];
            assert_eq!(loaded["Entrypoint"], json!([program]), "{images}");
            assert_eq!(loaded["User"], json!(user), "{images}");
            assert_eq!(loaded["Labels"], asked["labels"], "{images}");
        }
    }
}

/// `podman load` of the archive into a throwaway store, then `podman
/// inspect` of what it loaded; `None` (reported) without podman.
fn podman_load(store: &Path, archive: &Path) -> Option<Vec<u8>> {
    if kiln_testsupport::unitfile::program("podman").is_none() {
        kiln_testsupport::reference::skipped(
            "podman is missing: the image was read with skopeo only",
        );
        return None;
    }
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let loaded = run(&mut podman(&[
        "load",
        "--quiet",
        "--input",
        archive.to_str().unwrap(),
    ]));
    let text = String::from_utf8(loaded).unwrap();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load said: {text}"))
        .trim()
        .to_owned();
    Some(run(&mut podman(&["image", "inspect", &id])))
}
