//! The repository policy holds before any connection: hostile URLs are
//! refused by form, by prefix, by address (however spelled), on the
//! address a host name resolves to, and on every redirect. A trap listener
//! on loopback counts the connections it receives; after every hostile
//! fetch it has received none.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_depsolve::fetch::{FetchLimits, Fetcher};
use kiln_depsolve::{AllowEntry, DepsolveError, RepoPolicy};

/// Accepts connections on `listener` forever, answering each with
/// `answer(path)`, and counts them.
fn serve(
    listener: TcpListener,
    answer: impl Fn(&str) -> String + Send + 'static,
) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let path = read_path(&mut stream);
            let _ = stream.write_all(answer(&path).as_bytes());
        }
    });
    count
}

fn read_path(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1).unwrap_or("").to_owned()
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn fetcher(entries: &[AllowEntry], cache: &std::path::Path) -> Fetcher {
    let policy = RepoPolicy::new(entries).unwrap();
    Fetcher::new(cache, FetchLimits::default(), Arc::new(policy)).unwrap()
}

#[tokio::test]
async fn hostile_repository_urls_are_refused_before_any_connection() {
    let cache = tempfile::tempdir().unwrap();
    let (trap, trap_port) = listener();
    let trapped = serve(trap, |_| {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno".into()
    });
    let trap_url = format!("http://127.0.0.1:{trap_port}/Release");
    // An allowed repository on loopback that serves /repo/ok and redirects
    // everything else to the trap.
    let (mirror, mirror_port) = listener();
    let redirect_to = trap_url.clone();
    let _mirror_hits = serve(mirror, move |path| {
        if path == "/repo/ok" {
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".into()
        } else {
            format!("HTTP/1.1 302 Found\r\nLocation: {redirect_to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    });
    let mirror = format!("http://127.0.0.1:{mirror_port}/repo/");
    let allowed = [
        AllowEntry::Prefix(mirror.clone()),
        AllowEntry::Prefix("https://deb.debian.org/debian/".into()),
        // A host name, not marked internal: it may not resolve to loopback.
        AllowEntry::Prefix(format!("http://localhost:{trap_port}/")),
        AllowEntry::Prefix("file:///srv/mirror/".into()),
    ];
    let f = fetcher(&allowed, cache.path());

    // The control: what the policy allows is fetched.
    assert_eq!(
        f.get(&format!("{mirror}ok")).await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );

    let t = trap_port;
    let refused_by_policy = [
        format!("http://127.0.0.1:{t}/Release"),
        format!("http://[::1]:{t}/Release"),
        format!("http://0.0.0.0:{t}/Release"),
        format!("http://2130706433:{t}/Release"),
        format!("http://0x7f000001:{t}/Release"),
        format!("http://127.1:{t}/Release"),
        format!("http://[::ffff:127.0.0.1]:{t}/Release"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[fe80::1]:{t}/"),
        format!("http://10.0.0.1:{t}/"),
        format!("http://[fd00::1]:{t}/"),
        format!("gopher://127.0.0.1:{t}/"),
        "file:///etc/passwd".to_owned(),
        "file:///srv/mirror/../../etc/passwd".to_owned(),
        format!("{mirror}../../Release"),
        format!("http://user:secret@127.0.0.1:{mirror_port}/repo/ok"),
        format!("{mirror}ok?x=1"),
        format!("{mirror}ok#frag"),
        "https://deb.debian.org/debian-security/dists/".to_owned(),
    ];
    for url in &refused_by_policy {
        match f.get(url).await {
            Err(DepsolveError::Policy(e)) => {
                assert!(!e.to_string().contains("secret"), "{e}");
            }
            other => panic!("{url}: expected a policy refusal, got {other:?}"),
        }
    }
    // Allowed by prefix, refused where it is resolved or redirected.
    for (url, why) in [
        (format!("http://localhost:{t}/Release"), "internal address"),
        (
            format!("{mirror}dists/stable/InRelease"),
            "redirect refused",
        ),
    ] {
        let err = f.get(&url).await.unwrap_err();
        assert!(
            matches!(err, DepsolveError::Fetch { .. }) && format!("{err:?}").contains(why),
            "{url}: {err:?}"
        );
    }
    assert_eq!(
        trapped.load(Ordering::SeqCst),
        0,
        "the trap listener was contacted"
    );
    assert!(refused_by_policy.len() + 2 >= 15);

    // And the trap does count: a policy that opens it reaches it.
    let open = fetcher(
        &[AllowEntry::Prefix(format!("http://127.0.0.1:{t}/"))],
        cache.path(),
    );
    assert_eq!(
        open.get(&trap_url).await.unwrap().as_deref(),
        Some(&b"no"[..])
    );
    assert_eq!(trapped.load(Ordering::SeqCst), 1);
}
