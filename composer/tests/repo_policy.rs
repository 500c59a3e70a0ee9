//! The repository policy at the API: a request naming a repository outside
//! `[repositories] allow` (or one that leads to an internal address) is
//! refused with the field named, nothing is stored, and nothing is
//! connected to: a listener on loopback, where most of the hostile URLs
//! point, counts its connections and must see none.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{start_with, Backend, TestComposer};
use kiln_composer::AllowEntry;
use serde_json::{json, Value};

/// A loopback listener that counts the connections made to it and closes
/// each at once.
async fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

fn compose(baseurl: &str) -> Value {
    json!({
        "distribution": "debian-12",
        "image_request": {
            "architecture": "x86_64",
            "image_type": "tar",
            "repositories": [{"baseurl": baseurl, "suite": "bookworm", "components": ["main"], "check_repo_gpg": false}],
            "upload_targets": [{"type": "local", "upload_options": {}}]
        }
    })
}

/// The URLs a hostile caller would try, with the status each must get.
/// `{trap}` is the counting listener's port, `{api}` the composer's own.
fn hostile() -> Vec<(&'static str, u16)> {
    vec![
        // The composer's own API, the example (internal, and a fragment).
        (
            "http://127.0.0.1:{api}/api/image-builder-composer/v2/openapi#",
            400,
        ),
        (
            "http://127.0.0.1:{api}/api/image-builder-composer/v2/openapi",
            403,
        ),
        // Loopback however it is spelled, on a port no prefix names.
        ("http://127.0.0.1:{trap}/debian", 403),
        ("http://localhost:{trap}/debian", 403),
        ("http://[::1]:{trap}/debian", 403),
        ("http://2130706433:{trap}/debian", 403),
        ("http://0x7f.0.0.1:{trap}/debian", 403),
        ("http://127.1:{trap}/debian", 403),
        ("http://[::ffff:127.0.0.1]:{trap}/debian", 403),
        // The allowed loopback prefix's port, outside its path.
        ("http://127.0.0.1:{trap}/allowed-not/debian", 403),
        ("http://127.0.0.1:{trap}/allowed/../debian", 403),
        ("http://127.0.0.1:{trap}/allowed/%2e%2e/debian", 403),
        // Cloud metadata, private and unique-local addresses.
        ("http://169.254.169.254/latest/meta-data/", 403),
        ("http://10.0.0.1/debian", 403),
        ("http://[fd00::1]/debian", 403),
        // The composer's disk.
        ("file:///etc", 403),
        ("file:///srv/kiln-repos/../../etc", 403),
        ("file:///srv/kiln-repos%2f..%2f..%2fetc", 403),
        // Under the allowed mirror, but with what a base URL never carries.
        ("http://kiln:secret@mirror.kiln.test/debian", 400),
        (
            "http://mirror.kiln.test/debian?redirect=http://127.0.0.1:{trap}/",
            400,
        ),
        ("http://mirror.kiln.test/debian#x", 400),
        // Near the allowed mirror, but not under it.
        ("http://mirror.kiln.test.evil.test/debian", 403),
        ("http://mirror.kiln.test:{trap}/debian", 403),
        ("https://mirror.kiln.test/debian", 403),
        // A host name under an allowed prefix that resolves to loopback.
        ("http://localhost/debian", 403),
        // Schemes that are never fetched.
        ("gopher://127.0.0.1:{trap}/debian", 400),
        ("ftp://127.0.0.1:{trap}/debian", 400),
    ]
}

async fn start(b: Backend, trap_port: u16) -> TestComposer {
    start_with(b, |cfg| {
        cfg.repositories.allow = vec![
            AllowEntry::Prefix("http://mirror.kiln.test/debian".into()),
            AllowEntry::Prefix("http://localhost/debian".into()),
            AllowEntry::Prefix("file:///srv/kiln-repos".into()),
            AllowEntry::Prefix(format!("http://127.0.0.1:{trap_port}/allowed")),
        ];
    })
    .await
}

async fn composes(c: &TestComposer) -> i64 {
    let (status, list) = c.get("/composes").await;
    assert_eq!(status, 200, "{list}");
    list["total"].as_i64().unwrap()
}

async fn hostile_repositories_are_refused_before_any_connection(b: Backend) {
    let (trap_port, connections) = trap().await;
    let c = start(b, trap_port).await;
    let api_port = c.base.split(':').nth(2).unwrap().split('/').next().unwrap();
    let cases = hostile();
    assert!(cases.len() >= 15);
    for (template, want) in cases {
        let url = template
            .replace("{trap}", &trap_port.to_string())
            .replace("{api}", api_port);
        let (status, err) = c.post("/compose", &compose(&url)).await;
        assert_eq!(status, want, "{url}: {err}");
        assert_eq!(
            err["details"]["field"], "image_request.repositories[0].baseurl",
            "{url}: {err}"
        );
        let reason = err["reason"].as_str().unwrap();
        assert!(!reason.contains("secret"), "{url}: {reason}");

        // The same repository as a payload repository, and for a depsolve.
        let mut payload = compose("http://mirror.kiln.test/debian");
        payload["customizations"] = json!({"payload_repositories": [{"baseurl": url, "suite": "x", "components": ["main"], "check_repo_gpg": false}]});
        let (status, err) = c.post("/compose", &payload).await;
        assert_eq!(status, want, "{url}: {err}");
        assert_eq!(
            err["details"]["field"], "customizations.payload_repositories[0].baseurl",
            "{url}: {err}"
        );
        let depsolve = json!({
            "distribution": "debian-12", "architecture": "x86_64",
            "blueprint": {"name": "t", "packages": [{"name": "bash"}]},
            "repositories": [{"baseurl": url, "suite": "bookworm", "components": ["main"], "check_repo_gpg": false}],
        });
        let (status, err) = c.post("/depsolve/blueprint", &depsolve).await;
        assert_eq!(status, want, "{url}: {err}");
        assert_eq!(
            err["details"]["field"], "repositories[0].baseurl",
            "{url}: {err}"
        );
    }
    assert_eq!(composes(&c).await, 0, "a refused compose was stored");
    assert!(
        !c.state.config.data_dir.join("repo-cache").exists(),
        "a refused repository reached the fetcher"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the trap was contacted"
    );

    // The control: under the allowed loopback prefix the composer does
    // connect (the listener hangs up, so the repository is unavailable),
    // which shows the count above could have moved.
    let allowed = format!("http://127.0.0.1:{trap_port}/allowed/debian");
    let (status, created) = c.post("/compose", &compose(&allowed)).await;
    assert_eq!(status, 201, "{created}");
    let depsolve = json!({
        "distribution": "debian-12", "architecture": "x86_64",
        "blueprint": {"name": "t", "packages": [{"name": "bash"}]},
        "repositories": [{"baseurl": allowed, "suite": "bookworm", "components": ["main"], "check_repo_gpg": false}],
    });
    let (status, err) = c.post("/depsolve/blueprint", &depsolve).await;
    assert_eq!(status, 502, "{err}");
    assert!(connections.load(Ordering::SeqCst) > 0);
}

on_both_backends!(hostile_repositories_are_refused_before_any_connection);

/// The distributions' own repositories need no `allow` entry, and nothing
/// else is allowed by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_the_distributions_repositories_are_allowed() {
    let c = start_with(Backend::Sqlite, |_| {}).await;
    let (status, body) = c
        .post("/compose", &compose("http://deb.debian.org/debian"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, err) = c
        .post("/compose", &compose("http://mirror.kiln.test/debian"))
        .await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-25");
    assert!(
        err["reason"]
            .as_str()
            .unwrap()
            .contains("[repositories] allow"),
        "{err}"
    );
}
