//! Bounded work: a repository cannot make kiln-depsolve take unbounded
//! memory or time. A decompression bomb behind a valid signature, an
//! oversized index served over HTTP and a server that never answers are
//! each refused with an error naming the file and the limit.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::deb_repo::{self, config, DebRepo};
use common::http::HttpServer;
use kiln_depsolve::fetch::FetchLimits;
use kiln_depsolve::{DepsolveError, RepoSet};

const LIMITS: FetchLimits = FetchLimits {
    max_fetch_bytes: 1 << 20,
    max_index_bytes: 8 << 20,
    fetch_timeout: Duration::from_secs(2),
};

/// A signed suite whose only index is `Packages` (`gz`: gzipped) holding
/// the real index padded to `size` bytes.
fn padded_suite(repo: &DebRepo, suite: &str, size: usize, gz: bool) {
    deb_repo::index_suite_as(&repo.root, suite, "plain");
    let bin = repo.root.join(format!("dists/{suite}/main/binary-amd64"));
    let mut text = std::fs::read(bin.join("Packages")).unwrap();
    let pad = b"X-Padding: 0000000000000000000000000000000000000000000000000000000000\n";
    while text.len() < size {
        text.extend_from_slice(pad);
    }
    std::fs::write(bin.join("Packages"), &text).unwrap();
    if gz {
        deb_repo::run(
            Command::new("gzip")
                .args(["-f", "-n"])
                .arg(bin.join("Packages")),
        );
    }
    deb_repo::write_release(&repo.root, suite);
    let suite_dir = repo.root.join(format!("dists/{suite}"));
    deb_repo::sign_suite(&repo.gnupghome, &suite_dir, true, false);
}

#[tokio::test]
async fn a_decompression_bomb_an_oversized_index_and_a_silent_server_are_refused() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();

    // 256 MiB of index in ~256 KiB of gzip, correctly signed: decompression
    // stops at the 8 MiB bound.
    padded_suite(&repo, "bomb", 256 << 20, true);
    let bomb = repo.root.join("dists/bomb/main/binary-amd64/Packages.gz");
    assert!(std::fs::metadata(&bomb).unwrap().len() < LIMITS.max_fetch_bytes);
    let line = format!("deb {} bomb main", repo.file_url());
    let err = RepoSet::open_with(config(&line, &repo.keyring, cache.path()), LIMITS, None)
        .await
        .err()
        .expect("a bomb must be refused");
    assert!(matches!(err, DepsolveError::TooLarge { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/dists/bomb/main/binary-amd64/Packages.gz (decompressed): larger than the limit of 8388608 bytes",
            repo.file_url()
        )
    );

    // A 2 MiB plain index over HTTP: refused by its size, and never kept.
    padded_suite(&repo, "big", 2 << 20, false);
    let server = HttpServer::serve(&repo.root);
    let line = format!("deb {} big main", server.url());
    let err = RepoSet::open_with(config(&line, &repo.keyring, cache.path()), LIMITS, None)
        .await
        .err()
        .expect("an oversized index must be refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/dists/big/main/binary-amd64/Packages: larger than the limit of 1048576 bytes",
            server.url()
        )
    );
    // The same suite within the default limits loads.
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert!(!set.index().packages().is_empty());

    // A server that takes the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let line = format!("deb [trusted=yes] {url} stable main");
    let started = Instant::now();
    let err = RepoSet::open_with(config(&line, &repo.keyring, cache.path()), LIMITS, None)
        .await
        .err()
        .expect("a silent server must fail the load");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        err.to_string().ends_with(": not complete after 2 s"),
        "{err}"
    );
}
