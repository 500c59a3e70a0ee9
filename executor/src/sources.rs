//! Sources: the files stages read, fetched once into the store's source
//! cache under their checksum and verified before anything uses them.
//! `org.osbuild.curl` downloads (http, https and file URLs) in parallel
//! with retries; `org.osbuild.inline` carries the bytes in the manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

/// Parallel downloads per build.
const PARALLEL: usize = 8;
/// Attempts per URL before the source fails.
const ATTEMPTS: u32 = 4;

/// A content checksum, `ALGO:HEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

pub struct Checksum;

impl Checksum {
    pub fn parse(s: &str) -> Option<(Algo, &str)> {
        let (algo, hex) = s.split_once(':')?;
        let (algo, len) = match algo {
            "sha1" => (Algo::Sha1, 40),
            "sha256" => (Algo::Sha256, 64),
            "sha384" => (Algo::Sha384, 96),
            "sha512" => (Algo::Sha512, 128),
            _ => return None,
        };
        (hex.len() == len
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some((algo, hex))
    }
}

/// A running hash of one of the checksum algorithms.
pub enum Hasher {
    Sha1(sha1_smol::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Self {
        match algo {
            Algo::Sha1 => Hasher::Sha1(sha1_smol::Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn hex(self) -> String {
        match self {
            Hasher::Sha1(h) => h.digest().to_string(),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Checks one item's description; the message names what is wrong.
pub fn check_item(source: &str, item: &Value) -> Result<(), String> {
    match source {
        "org.osbuild.curl" => {
            let url = match item {
                Value::String(u) => u.as_str(),
                Value::Object(o) => {
                    for k in o.keys() {
                        if !["url", "insecure", "secrets"].contains(&k.as_str()) {
                            return Err(format!(
                                "Additional properties are not allowed ('{k}' was unexpected)"
                            ));
                        }
                    }
                    o.get("url")
                        .and_then(Value::as_str)
                        .ok_or("'url' is a required property")?
                }
                other => return Err(format!("{other} is neither a URL nor an object with 'url'")),
            };
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("file://"))
            {
                return Err(format!("{url:?} is not an http, https or file URL"));
            }
            Ok(())
        }
        "org.osbuild.inline" => {
            let o = item
                .as_object()
                .ok_or("an inline item is an object with 'encoding' and 'data'")?;
            match o.get("encoding").and_then(Value::as_str) {
                Some("base64") => {}
                Some(other) => return Err(format!("{other:?} is not one of ['base64']")),
                None => return Err("'encoding' is a required property".into()),
            }
            let data = o
                .get("data")
                .and_then(Value::as_str)
                .ok_or("'data' is a required property")?;
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("'data' is not base64: {e}"))?;
            Ok(())
        }
        other => Err(format!("unknown source {other:?}")),
    }
}

/// Why a source could not be provided.
#[derive(Debug, thiserror::Error)]
#[error("{checksum}: {reason}")]
pub struct SourceError {
    pub checksum: String,
    pub reason: String,
}

fn fail(checksum: &str, reason: impl Into<String>) -> SourceError {
    SourceError {
        checksum: checksum.to_owned(),
        reason: reason.into(),
    }
}

/// Writes `bytes` (checked against `checksum`) into the cache, atomically.
fn store_bytes(dir: &Path, checksum: &str, bytes: &[u8]) -> Result<(), SourceError> {
    let (algo, want) = Checksum::parse(checksum).ok_or_else(|| fail(checksum, "not a checksum"))?;
    let mut h = Hasher::new(algo);
    h.update(bytes);
    let got = h.hex();
    if got != want {
        return Err(fail(
            checksum,
            format!("checksum mismatch: the data hashes to {got}"),
        ));
    }
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(checksum, e.to_string()))?;
    tmp.write_all(bytes)
        .map_err(|e| fail(checksum, e.to_string()))?;
    // Readable like a download (tempfile creates 0600).
    std::fs::set_permissions(
        tmp.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .map_err(|e| fail(checksum, e.to_string()))?;
    tmp.persist(dir.join(checksum))
        .map_err(|e| fail(checksum, e.to_string()))?;
    Ok(())
}

/// Downloads one URL into `dir/checksum`, verifying while writing.
async fn fetch_one(
    client: &reqwest::Client,
    dir: &Path,
    checksum: &str,
    url: &str,
) -> Result<(), SourceError> {
    let (algo, want) = Checksum::parse(checksum).ok_or_else(|| fail(checksum, "not a checksum"))?;
    let tmp_path = dir.join(format!(".partial-{}", uuid::Uuid::new_v4()));
    let result = async {
        let mut hasher = Hasher::new(algo);
        let mut out = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            }
        } else {
            let mut resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        }
        out.flush().await.map_err(|e| e.to_string())?;
        let got = hasher.hex();
        if got != want {
            return Err(format!(
                "{url}: checksum mismatch: the download hashes to {algo:?}:{got}"
            ));
        }
        tokio::fs::rename(&tmp_path, dir.join(checksum))
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp_path).await;
    }
    result.map_err(|r| fail(checksum, r))
}

/// Makes every item of the manifest's sources present in `dir` (the
/// store's file cache), fetching what is missing. `progress(done, total)`
/// is called as items complete.
pub async fn fetch_all(
    dir: &Path,
    sources: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, Value>>,
    progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
) -> Result<(), SourceError> {
    std::fs::create_dir_all(dir).map_err(|e| fail("", format!("{}: {e}", dir.display())))?;
    let mut downloads: Vec<(String, String)> = Vec::new();
    for (kind, items) in sources {
        for (checksum, item) in items {
            if dir.join(checksum).exists() {
                continue;
            }
            match kind.as_str() {
                "org.osbuild.inline" => {
                    let data = item.get("data").and_then(Value::as_str).unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| fail(checksum, e.to_string()))?;
                    store_bytes(dir, checksum, &bytes)?;
                }
                _ => {
                    let url = match item {
                        Value::String(u) => u.clone(),
                        other => other
                            .get("url")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    };
                    downloads.push((checksum.clone(), url));
                }
            }
        }
    }
    let total = downloads.len();
    if total == 0 {
        return Ok(());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| fail("", e.to_string()))?;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (checksum, url) in downloads {
        let (client, semaphore, done, progress) = (
            client.clone(),
            semaphore.clone(),
            done.clone(),
            progress.clone(),
        );
        let dir: PathBuf = dir.to_owned();
        tasks.spawn(async move {
            let _permit = semaphore
                .acquire()
                .await
                .map_err(|e| fail(&checksum, e.to_string()))?;
            let mut last = None;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                match fetch_one(&client, &dir, &checksum, &url).await {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    // A wrong checksum will not get better by asking again.
                    Err(e) if e.reason.contains("checksum mismatch") => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(fail(
                    &e.checksum,
                    format!("{} (after {ATTEMPTS} attempts)", e.reason),
                ));
            }
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress(n, total);
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        let res = res.map_err(|e| fail("", e.to_string())).and_then(|r| r);
        if let Err(e) = res {
            if first_error.is_none() {
                first_error = Some(e);
                tasks.abort_all();
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_parse_by_algorithm_and_length() {
        assert!(Checksum::parse(&format!("sha256:{}", "a".repeat(64))).is_some());
        assert!(Checksum::parse(&format!("sha256:{}", "a".repeat(63))).is_none());
        assert!(Checksum::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Checksum::parse(&format!("md5:{}", "a".repeat(32))).is_none());
        assert!(Checksum::parse(&format!("sha512:{}", "0".repeat(128))).is_some());
    }

    #[test]
    fn inline_items_are_verified_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let bad = format!("sha256:{}", "0".repeat(64));
        let err = store_bytes(dir.path(), &bad, b"hello").unwrap_err();
        assert!(err.reason.contains("checksum mismatch"), "{err}");
        assert!(!dir.path().join(&bad).exists());
        let good = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"hello")));
        store_bytes(dir.path(), &good, b"hello").unwrap();
        assert_eq!(std::fs::read(dir.path().join(&good)).unwrap(), b"hello");
    }
}
