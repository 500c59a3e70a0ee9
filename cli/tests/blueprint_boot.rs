//! `kiln blueprint` against a real composer (in this process, SQLite), and
//! `kiln boot` against a real S3 boot store (s3s-fs) and the OpenCHAMI BSS
//! and SMD test doubles.

use std::process::Output;

use kiln_boot::{BootConfig, LocalBootImage};
use kiln_composer::{AppState, ComposerConfig};
use kiln_testsupport::openchami::{BssTestDouble, Node, SmdTestDouble};
use kiln_testsupport::storage::S3Server;
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

async fn kiln(args: &[&str]) -> Output {
    tokio::process::Command::new(KILN)
        .args(args)
        // No `kiln login` of the person running the tests reaches the composer.
        .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprints_are_pushed_listed_shown_composed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ComposerConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    config.jobs.run_in_composer = false;
    let state = AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = state.clone();
    tokio::spawn(
        async move { kiln_composer::serve(serving, listener, std::future::pending()).await },
    );

    let file = dir.path().join("node.toml");
    std::fs::write(&file, "name = \"node\"\ndistro = \"debian-12\"\ndescription = \"compute\"\n[[packages]]\nname = \"chrony\"\n").unwrap();
    let c = ["--composer", url.as_str()];
    for v in ["1", "2"] {
        let out =
            stdout(&kiln(&[&["blueprint", "push", file.to_str().unwrap()], &c[..]].concat()).await);
        assert_eq!(out.trim(), format!("node version {v}"));
    }
    let list = stdout(&kiln(&[&["blueprint", "list"], &c[..]].concat()).await);
    assert!(
        list.lines()
            .any(|l| l.starts_with("node") && l.contains(" 2 ") && l.contains("debian-12")),
        "{list}"
    );
    let shown: Value = serde_json::from_str(&stdout(
        &kiln(
            &[
                &[
                    "blueprint",
                    "show",
                    "node",
                    "--version",
                    "1",
                    "--output",
                    "json",
                ],
                &c[..],
            ]
            .concat(),
        )
        .await,
    ))
    .unwrap();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["blueprint"]["packages"][0]["name"], "chrony");

    let id = stdout(
        &kiln(
            &[
                &[
                    "blueprint",
                    "compose",
                    "node",
                    "--arch",
                    "x86_64",
                    "--image-type",
                    "tar",
                ],
                &c[..],
            ]
            .concat(),
        )
        .await,
    );
    let compose = state
        .queue
        .compose(uuid::Uuid::parse_str(id.trim()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(compose.request["blueprint"]["name"], "node");
    assert_eq!(
        compose.request["image_request"]["upload_targets"][0]["type"],
        "local"
    );

    // A bad push names the field; an unknown name is an error.
    std::fs::write(&file, "name = \"node\"\n").unwrap();
    let bad = kiln(&[&["blueprint", "push", file.to_str().unwrap()], &c[..]].concat()).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("distro"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    stdout(&kiln(&[&["blueprint", "delete", "node"], &c[..]].concat()).await);
    let gone = kiln(&[&["blueprint", "show", "node"], &c[..]].concat()).await;
    assert!(!gone.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_publish_show_and_rollback_change_bss_as_they_say() {
    let s3 = S3Server::start("boot").unwrap();
    let xnames = ["x1000c0s0b0n0", "x1000c0s1b0n0", "x1000c0s2b0n0"];
    let nodes: Vec<Node> = xnames
        .iter()
        .enumerate()
        .map(|(i, x)| Node::new(x, &format!("02:00:00:00:00:0{i}"), i as u32 + 1))
        .collect();
    let smd = SmdTestDouble::start(&nodes, &[("compute", &xnames)], None)
        .await
        .unwrap();
    let bss = BssTestDouble::start(&nodes, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "prefix = \"kiln\"\nbase_url = \"{s3}/boot\"\nbss = {{ url = \"{bss}\" }}\nsmd = {{ url = \"{smd}\" }}\n[store]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nbucket = \"boot\"\naccess_key_id = \"{k}\"\nsecret_access_key = \"{sk}\"\npath_style = true\n",
        s3 = s3.endpoint(),
        bss = bss.url(),
        smd = smd.url(),
        k = s3.access_key_id,
        sk = s3.secret_access_key
    );
    let config_file = dir.path().join("boot.toml");
    std::fs::write(&config_file, &toml).unwrap();
    // An image in the store, as a compose's boot target would leave it.
    for f in ["vmlinuz", "initrd.img", "rootfs.squashfs"] {
        std::fs::write(dir.path().join(f), format!("{f} bytes")).unwrap();
    }
    let config: BootConfig = toml::from_str(&toml).unwrap();
    let record = config
        .deployer()
        .unwrap()
        .store()
        .upload(&LocalBootImage {
            compose_id: uuid::Uuid::new_v4(),
            image_name: "compute".into(),
            arch: "x86_64".into(),
            kernel: dir.path().join("vmlinuz"),
            initrd: dir.path().join("initrd.img"),
            rootfs: dir.path().join("rootfs.squashfs"),
            kernel_cmdline: "rd.live.overlay.overlayfs=1 console=ttyS0".into(),
            packages: vec![],
        })
        .await
        .unwrap();
    let image = format!("compute/{}/x86_64", record.version);
    let cfg = ["--config", config_file.to_str().unwrap()];

    let dry = stdout(
        &kiln(
            &[
                &[
                    "boot",
                    "publish",
                    &image,
                    "--group",
                    "compute",
                    "--extra-params",
                    "ip=dhcp",
                    "--dry-run",
                ],
                &cfg[..],
            ]
            .concat(),
        )
        .await,
    );
    assert!(
        dry.contains("dry run") && dry.contains("x1000c0s1b0n0"),
        "{dry}"
    );
    assert!(bss.entries().is_empty(), "a dry run changed BSS");

    stdout(
        &kiln(
            &[
                &[
                    "boot",
                    "publish",
                    &image,
                    "--group",
                    "compute",
                    "--extra-params",
                    "ip=dhcp",
                ],
                &cfg[..],
            ]
            .concat(),
        )
        .await,
    );
    for x in xnames {
        let e = bss.entry(x).unwrap();
        assert_eq!(e.kernel.as_deref(), Some(record.files.kernel.url.as_str()));
        assert!(e
            .params
            .unwrap()
            .contains(&format!("root=live:{}", record.files.rootfs.url)));
    }
    let shown =
        stdout(&kiln(&[&["boot", "show", "--xname", "x1000c0s2b0n0"], &cfg[..]].concat()).await);
    assert!(shown.contains(&image), "{shown}");

    stdout(&kiln(&[&["boot", "rollback", "--group", "compute"], &cfg[..]].concat()).await);
    assert!(
        xnames.iter().all(|x| bss.entry(x).is_none()),
        "{:?}",
        bss.entries()
    );

    let bad = kiln(&[&["boot", "show", "--xname", "not-a-node"], &cfg[..]].concat()).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("xname"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    bss.assert_no_violations();
    smd.assert_no_violations();
}
