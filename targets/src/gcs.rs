//! The Google Cloud Storage target, with the JSON API's resumable uploads,
//! spoken directly (`object_store` cannot be pointed at a GCS emulator).
//!
//! 1. `POST {endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=…`
//!    opens a session; its URI comes back in `Location`.
//! 2. The artifact goes up in `chunk_size` chunks (multiples of 256 KiB, as
//!    the protocol requires), each a `PUT` with `Content-Range: bytes a-b/total`,
//!    answered `308` (with `Range: bytes=0-n`, what the service holds) until
//!    the last, answered `200`/`201` with the object's metadata.
//! 3. After a transient failure the chunk is sent again from the offset the
//!    session last confirmed; if that fails too, kiln asks the session what
//!    it holds (`PUT` with `Content-Range: bytes */total`, no body) and
//!    resumes from there, so a failed chunk costs at most that chunk again.
//!    A session that says it holds more than was sent, or that finished the
//!    object short, fails the upload.
//!
//! Chunks are sequential: a resumable session takes bytes in order.
//! Verification: the service's `md5Hash` and `size` of the finished object
//! are compared with the MD5 and size kiln computed reading the artifact.
//!
//! Credentials: an optional bearer token from the configuration, sent only to
//! the configured endpoint's origin (a session URI elsewhere is refused).
//! Nothing else is ever asked for one: no metadata server, no environment.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use url::Url;

use crate::parts::{Digests, Part, PartReader};
use crate::retry::{reqwest_failure, response_failure, with_retries, Failure, Observer};
use crate::{Event, GcsTarget, UploadError, UploadedObject};

const TARGET: &str = "gcs";
const GRANULE: u64 = 256 * 1024;
/// The status GCS answers an unfinished chunk with ("Resume Incomplete").
const RESUME_INCOMPLETE: u16 = 308;

pub(crate) async fn upload(
    target: &GcsTarget,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let gcs = Client::new(target)?;
    let digests = Digests {
        part_md5: false,
        whole_md5: true,
    };
    let mut reader = PartReader::open(artifact, target.chunk_size, digests)?;
    let total = reader.total();
    on_event(Event::Progress { done: 0, total });

    let session = with_retries(
        &target.retry,
        TARGET,
        "starting the resumable upload",
        on_event,
        || gcs.start_session(name, total),
    )
    .await?;

    let persisted = AtomicU64::new(0);
    let mut finished: Option<serde_json::Value> = None;
    if total == 0 {
        finished = Some(send_chunk(&gcs, &session, None, total, &persisted, on_event).await?);
    }
    while let Some(part) = reader.next().await? {
        let end = part.offset + part.data.len() as u64;
        let meta = send_chunk(&gcs, &session, Some(part), total, &persisted, on_event).await?;
        if !meta.is_null() {
            finished = Some(meta);
        }
        on_event(Event::Progress { done: end, total });
    }
    let whole = reader.finish()?;
    let meta = finished.ok_or_else(|| UploadError::Storage {
        target: TARGET,
        operation: "resumable upload".into(),
        attempts: 1,
        message: "the session never reported the object as finished".into(),
    })?;
    verify(&meta, total, whole.md5.unwrap_or_default())?;
    Ok(UploadedObject {
        url: format!("gs://{}/{name}", target.bucket),
        size: total,
        sha256: whole.sha256,
    })
}

/// Sends one chunk (or, for `None`, finalises an empty object), resuming
/// after transient failures. Returns the object's metadata after the last
/// chunk, `Value::Null` after any other.
async fn send_chunk(
    gcs: &Client<'_>,
    session: &Url,
    part: Option<Part>,
    total: u64,
    persisted: &AtomicU64,
    on_event: Observer<'_>,
) -> Result<serde_json::Value, UploadError> {
    let (offset, data) = match &part {
        Some(p) => (p.offset, p.data.clone()),
        None => (0, bytes::Bytes::new()),
    };
    let end = offset + data.len() as u64;
    let operation = format!("uploading bytes {offset}-{end} of {total}");
    let attempt = AtomicU32::new(0);
    with_retries(&gcs.target.retry, TARGET, &operation, on_event, || async {
        let n = attempt.fetch_add(1, Ordering::SeqCst);
        // A first retry resends from the last offset the session confirmed
        // (its last 308): a request cut off is not stored, so nothing is
        // sent twice. Should that fail too, later retries ask the session
        // what it holds before sending. (Both because fake-gcs-server, which
        // the tests run against, finalises an object on a status query.)
        if n >= 2 {
            match gcs.query(session, total).await? {
                Progress::Finished(meta) => return finished(meta, total),
                Progress::Holds(h) => persisted.store(h, Ordering::SeqCst),
            }
        }
        let from = persisted.load(Ordering::SeqCst);
        if from < offset || from > end {
            return Err(Failure::Permanent(format!(
                "the session holds {from} bytes, outside the chunk {offset}-{end} being sent"
            )));
        }
        if from == end && end < total {
            return Ok(serde_json::Value::Null);
        }
        let slice = data.slice((from - offset) as usize..);
        let range = if slice.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {from}-{}/{total}", end - 1)
        };
        let response = gcs
            .request(Method::PUT, session.clone())
            .header("content-range", range)
            .body(slice)
            .send()
            .await
            .map_err(reqwest_failure)?;
        let progress = match read_progress(response).await {
            // A resend the session refuses may overlap bytes it kept after
            // all: the next attempt asks it what it holds.
            Err(Failure::Permanent(m)) if n == 1 && !m.contains("session is gone") => {
                return Err(Failure::Transient(m));
            }
            other => other?,
        };
        match progress {
            Progress::Finished(meta) => finished(meta, total),
            Progress::Holds(h) if h == end && end < total => {
                persisted.store(h, Ordering::SeqCst);
                Ok(serde_json::Value::Null)
            }
            Progress::Holds(h) if h > end => Err(Failure::Permanent(format!(
                "the session holds {h} bytes, more than the {end} sent"
            ))),
            Progress::Holds(h) => {
                persisted.store(h.max(offset), Ordering::SeqCst);
                Err(Failure::Transient(format!(
                    "the session took bytes up to {h} of a chunk ending at {end}"
                )))
            }
        }
    })
    .await
}

/// A session that reports the object finished must hold all of it.
fn finished(meta: serde_json::Value, total: u64) -> Result<serde_json::Value, Failure> {
    match object_size(&meta) {
        Some(size) if size == total => Ok(meta),
        size => Err(Failure::Permanent(format!(
            "the storage finished the object at {} of {total} bytes",
            size.map_or("an unknown number".into(), |s| s.to_string())
        ))),
    }
}

/// The JSON API sends sizes as strings; accept numbers too.
fn object_size(meta: &serde_json::Value) -> Option<u64> {
    match &meta["size"] {
        serde_json::Value::String(s) => s.parse::<u64>().ok(),
        v => v.as_u64(),
    }
}

fn verify(meta: &serde_json::Value, total: u64, md5: [u8; 16]) -> Result<(), UploadError> {
    let mismatch = |what: &str, expected: String, actual: String| UploadError::Verification {
        target: TARGET,
        what: what.to_string(),
        expected,
        actual,
    };
    let size = object_size(meta);
    if size != Some(total) {
        return Err(mismatch(
            "object size",
            total.to_string(),
            format!("{:?}", meta["size"]),
        ));
    }
    let expected = BASE64.encode(md5);
    match meta["md5Hash"].as_str() {
        Some(h) if h == expected => Ok(()),
        Some(h) => Err(mismatch("object md5Hash", expected, h.to_string())),
        // Composite objects have no MD5; an upload never makes one.
        None => Err(mismatch("object md5Hash", expected, "none".into())),
    }
}

enum Progress {
    /// The session holds this many bytes and waits for more.
    Holds(u64),
    /// The object is complete; its metadata.
    Finished(serde_json::Value),
}

/// Reads a chunk's or status query's answer.
async fn read_progress(response: reqwest::Response) -> Result<Progress, Failure> {
    let status = response.status();
    if status.as_u16() == RESUME_INCOMPLETE {
        // `Range: bytes=0-n` means n+1 bytes are held; no header, none.
        let held = response
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map_or(0, |last| last + 1);
        return Ok(Progress::Holds(held));
    }
    if status.is_success() {
        let body = response.bytes().await.map_err(reqwest_failure)?;
        let meta = serde_json::from_slice(&body).map_err(|e| {
            Failure::Permanent(format!("the finished upload's metadata is not JSON: {e}"))
        })?;
        return Ok(Progress::Finished(meta));
    }
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        // The session expired or was cancelled: resuming cannot work.
        let (Failure::Permanent(m) | Failure::Transient(m)) =
            response_failure(response, describe).await;
        return Err(Failure::Permanent(format!("upload session is gone: {m}")));
    }
    Err(response_failure(response, describe).await)
}

/// The message of a JSON API error body (`{"error":{"message":…}}`), or the
/// body's start when it is something else.
fn describe(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

struct Client<'a> {
    target: &'a GcsTarget,
    endpoint: Url,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    fn new(target: &'a GcsTarget) -> Result<Client<'a>, UploadError> {
        let bad = |reason: String| UploadError::Config {
            target: TARGET,
            reason,
        };
        if target.chunk_size == 0 || !target.chunk_size.is_multiple_of(GRANULE) {
            return Err(bad(format!(
                "chunk_size {} is not a positive multiple of {GRANULE}",
                target.chunk_size
            )));
        }
        let endpoint = target.endpoint();
        let url = Url::parse(&endpoint).map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad(format!("endpoint {endpoint:?} is not an http(s) URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(target.retry.request_timeout())
            // 308 here means "resume incomplete", never a redirect to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            target,
            endpoint: url,
            http,
        })
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let r = self.http.request(method, url);
        match &self.target.bearer_token {
            Some(t) => r.bearer_auth(t.expose()),
            None => r,
        }
    }

    async fn start_session(&self, name: &str, total: u64) -> Result<Url, Failure> {
        let mut url = self.endpoint.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty()
                .extend(["upload", "storage", "v1", "b", &self.target.bucket, "o"]);
        }
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("name", name);
        let response = self
            .request(Method::POST, url)
            .header("x-upload-content-length", total.to_string())
            .header("x-upload-content-type", "application/octet-stream")
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .map_err(reqwest_failure)?;
        if !response.status().is_success() {
            return Err(response_failure(response, describe).await);
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::Permanent("no session URI in the answer".into()))?;
        let session = Url::parse(location)
            .map_err(|e| Failure::Permanent(format!("session URI {location:?}: {e}")))?;
        if session.origin() != self.endpoint.origin() {
            return Err(Failure::Permanent(format!(
                "session URI {location:?} is not on the configured endpoint {}",
                self.endpoint
            )));
        }
        Ok(session)
    }

    async fn query(&self, session: &Url, total: u64) -> Result<Progress, Failure> {
        let response = self
            .request(Method::PUT, session.clone())
            .header("content-range", format!("bytes */{total}"))
            .body(bytes::Bytes::new())
            .send()
            .await
            .map_err(reqwest_failure)?;
        read_progress(response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_metadata_is_checked() {
        let md5 = [7u8; 16];
        let good = serde_json::json!({"size": "10", "md5Hash": BASE64.encode(md5)});
        assert!(verify(&good, 10, md5).is_ok());
        assert!(verify(&good, 11, md5).is_err());
        assert!(verify(&good, 10, [8u8; 16]).is_err());
        assert!(verify(&serde_json::json!({"size": 10}), 10, md5).is_err());
    }

    #[test]
    fn a_session_finished_short_is_refused() {
        let short = serde_json::json!({"size": "262144"});
        assert!(
            matches!(finished(short, 1 << 20), Err(Failure::Permanent(m)) if m.contains("262144 of 1048576"))
        );
        let whole = serde_json::json!({"size": "1048576"});
        assert!(finished(whole, 1 << 20).is_ok());
    }

    #[test]
    fn json_errors_give_their_message() {
        let body = r#"{"error":{"code":404,"message":"bucket not found"}}"#;
        assert_eq!(describe(body), "bucket not found");
        assert_eq!(describe("plain text"), "plain text");
    }
}
