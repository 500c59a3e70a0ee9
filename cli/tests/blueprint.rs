//! `kiln blueprint` against a real composer (in this process, SQLite).

use std::process::Output;

use kiln_composer::{AppState, ComposerConfig};
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
