//! The Google Cloud Storage target, through googleapis' `google-cloud-storage`
//! (the JSON API's resumable upload: `POST …/upload/storage/v1/b/{bucket}/o
//! ?uploadType=resumable`, then `chunk_size` chunks `PUT` to the session URI
//! with `Content-Range`, each answered `308` until the last).
//!
//! The crate reads the artifact through [`Source`], which hands it kiln's
//! parts (one part per chunk, so a chunk is asked for only once the session
//! confirmed the one before: that is what kiln reports as progress). The
//! crate computes the object's CRC32C and MD5 as the bytes go by, sends the
//! CRC32C with the last chunk for the service to check, and compares both
//! with the finished object's; kiln then compares the object's `md5Hash` and
//! `size` with the MD5 and size it computed reading the artifact.
//!
//! Retries: the crate's own are off, so kiln's retry loop is the only one.
//! After a transient failure the upload starts again from its first byte in a
//! new session. The crate cannot resume a session against fake-gcs-server:
//! it asks the session what it holds (`PUT` with `Content-Range: bytes */*`),
//! and fake-gcs-server finalises the object with what it has instead of
//! answering `308` (`fake_gcs_server_finalises_an_object_when_asked_what_it_holds`
//! in `tests/gcs.rs`).
//!
//! Credentials: the configured bearer token, or anonymous credentials when
//! there is none. Never Application Default Credentials: no metadata server,
//! no environment, no key file. Their headers also carry `Host` with the
//! endpoint's port, which the crate leaves out ([`WithHost`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use google_cloud_auth::credentials::{
    anonymous, CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model::Object;
use google_cloud_storage::streaming_source::{SizeHint, StreamingSource};
use tokio::sync::{Mutex, Notify};

use crate::parts::{Digests, PartReader, Whole};
use crate::retry::{error_chain, transient_status, with_retries, Failure, Observer};
use crate::{Event, GcsTarget, UploadError, UploadedObject};

const TARGET: &str = "gcs";
const GRANULE: u64 = 256 * 1024;

pub(crate) async fn upload(
    target: &GcsTarget,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let client = client(target).await?;
    let bucket = format!("projects/_/buckets/{}", target.bucket);
    // Progress never goes back, also when an attempt starts over.
    let reported = AtomicU64::new(0);
    let outcome = with_retries(
        &target.retry,
        TARGET,
        "resumable upload",
        on_event,
        || async {
            // An artifact that cannot be read is not retried: it comes out
            // as the attempt's value, not as a failure.
            let reader = match PartReader::open(artifact, target.chunk_size, digests()) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let names = (bucket.as_str(), name);
            attempt(&client, target, names, reader, &reported, on_event).await
        },
    )
    .await?;
    let (object, total, whole) = outcome?;
    verify(&object, total, whole.md5.unwrap_or_default())?;
    on_event(Event::Progress { done: total, total });
    Ok(UploadedObject {
        url: format!("gs://{}/{name}", target.bucket),
        size: total,
        sha256: whole.sha256,
    })
}

fn digests() -> Digests {
    Digests {
        part_md5: false,
        whole_md5: true,
    }
}

type Attempt = Result<(Object, u64, Whole), UploadError>;

type WriteFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = google_cloud_storage::Result<Object>> + Send + 'a>,
>;

/// One upload in one session. A storage failure is a [`Failure`] for the
/// retry loop; an artifact that changed or could not be read is the
/// attempt's value.
async fn attempt(
    client: &Storage,
    target: &GcsTarget,
    (bucket, name): (&str, &str),
    reader: PartReader,
    reported: &AtomicU64,
    on_event: Observer<'_>,
) -> Result<Attempt, Failure> {
    let total = reader.total();
    if reported.load(Ordering::SeqCst) == 0 {
        on_event(Event::Progress { done: 0, total });
    }
    let shared = Arc::new(Shared {
        reader: Mutex::new(Some(reader)),
        error: std::sync::Mutex::new(None),
        confirmed: AtomicU64::new(0),
        pulled: Notify::new(),
    });
    let source = Source {
        shared: shared.clone(),
        total,
    };
    let chunk = usize::try_from(target.chunk_size).unwrap_or(usize::MAX);
    // Boxed as a trait object: the crate's future is deep enough that, left
    // in the caller's future type, the worker's `job::run` overflows the
    // compiler's query depth computing its layout.
    let mut write: WriteFuture<'_> = Box::pin(
        client
            .write_object(bucket, name, source)
            .set_content_type("application/octet-stream")
            .with_resumable_upload_threshold(0usize)
            .with_resumable_upload_buffer_size(chunk)
            .compute_md5()
            .with_retry_policy(NeverRetry)
            .send_buffered(),
    );
    // The crate takes no per-request timeout: a chunk that takes longer than
    // `request_timeout_secs` (no chunk asked for in that time) fails the attempt.
    let timeout = target.retry.request_timeout();
    let result = loop {
        tokio::select! {
            r = &mut write => break r,
            _ = shared.pulled.notified() => {
                let done = shared.confirmed.load(Ordering::SeqCst);
                if done > reported.fetch_max(done, Ordering::SeqCst) {
                    on_event(Event::Progress { done, total });
                }
            }
            _ = tokio::time::sleep(timeout) => {
                return Err(Failure::Transient(format!(
                    "no answer to a request within {} s", timeout.as_secs()
                )));
            }
        }
    };
    if let Some(e) = shared.take_error() {
        return Ok(Err(e));
    }
    let object = result.map_err(failure)?;
    // The crate stops asking once it has `total` bytes: reading on to the
    // end checks the artifact did not grow, and completes its digests.
    let Some(mut reader) = shared.reader.lock().await.take() else {
        return Err(Failure::Permanent("the artifact's reader is gone".into()));
    };
    let whole = match reader.next().await {
        Ok(None) => reader.finish(),
        // The crate finished the object before it had read all of it.
        Ok(Some(part)) => Err(UploadError::Verification {
            target: TARGET,
            what: "bytes read before the object was finished".into(),
            expected: total.to_string(),
            actual: part.offset.to_string(),
        }),
        Err(e) => Err(e),
    };
    Ok(whole.map(|whole| (object, total, whole)))
}

/// What the crate's reads of the artifact share with the attempt driving them.
struct Shared {
    /// Taken by the attempt once the crate is done with it.
    reader: Mutex<Option<PartReader>>,
    /// A read error, kept whole (the crate would only pass on its text).
    error: std::sync::Mutex<Option<UploadError>>,
    /// Bytes the session holds: the offset of the chunk last asked for.
    confirmed: AtomicU64,
    pulled: Notify,
}

impl Shared {
    fn take_error(&self) -> Option<UploadError> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// The artifact as the crate reads it: kiln's parts, in order.
struct Source {
    shared: Arc<Shared>,
    total: u64,
}

/// A read error as the crate carries it; the error itself stays in [`Shared`].
#[derive(Debug, thiserror::Error)]
#[error("reading the artifact failed")]
struct ReadFailed;

impl StreamingSource for Source {
    type Error = ReadFailed;

    async fn next(&mut self) -> Option<Result<Bytes, ReadFailed>> {
        let next = match self.shared.reader.lock().await.as_mut() {
            Some(reader) => reader.next().await,
            None => Ok(None),
        };
        let (offset, item) = match next {
            Ok(Some(part)) => (part.offset, Some(Ok(part.data))),
            Ok(None) => (self.total, None),
            Err(e) => {
                if let Ok(mut slot) = self.shared.error.lock() {
                    *slot = Some(e);
                }
                return Some(Err(ReadFailed));
            }
        };
        self.shared.confirmed.fetch_max(offset, Ordering::SeqCst);
        self.shared.pulled.notify_one();
        item
    }

    async fn size_hint(&self) -> Result<SizeHint, ReadFailed> {
        Ok(SizeHint::with_exact(self.total))
    }
}

fn verify(object: &Object, total: u64, md5: [u8; 16]) -> Result<(), UploadError> {
    let mismatch = |what: &str, expected: String, actual: String| UploadError::Verification {
        target: TARGET,
        what: what.to_string(),
        expected,
        actual,
    };
    if u64::try_from(object.size).ok() != Some(total) {
        return Err(mismatch(
            "object size",
            total.to_string(),
            object.size.to_string(),
        ));
    }
    let expected = BASE64.encode(md5);
    // Composite objects have no MD5; an upload never makes one.
    let actual = object
        .checksums
        .as_ref()
        .map(|c| BASE64.encode(&c.md5_hash))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "none".into());
    if actual != expected {
        return Err(mismatch("object md5Hash", expected, actual));
    }
    Ok(())
}

/// The crate's client for the target: the configured endpoint, explicit
/// credentials, no retries of its own.
async fn client(target: &GcsTarget) -> Result<Storage, UploadError> {
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
    let url = url::Url::parse(&endpoint).map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad(format!("endpoint {endpoint:?} is not an http(s) URL")));
    }
    let credentials: Credentials = match &target.bearer_token {
        Some(token) => BearerToken::new(token.expose())
            .map_err(|e| bad(format!("bearer_token: {e}")))?
            .into(),
        None => anonymous::Builder::new().build(),
    };
    let host = url[url::Position::BeforeHost..url::Position::AfterPort].to_string();
    let credentials: Credentials = WithHost::new(credentials, &host)
        .map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?
        .into();
    // The crate's reqwest 0.13 is built without a TLS crypto provider of its
    // own: the process needs one (ring, as for the rest of kiln) before the
    // client is built. One already installed stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Storage::builder()
        .with_endpoint(endpoint)
        .with_credentials(credentials)
        .with_retry_policy(NeverRetry)
        .build()
        .await
        .map_err(|e| bad(format!("building the client: {}", error_chain(&e))))
}

/// Credentials that also set `Host` to the endpoint's host *and port*.
///
/// The crate derives its `Host` header from the endpoint without the port
/// (`google-cloud-gax-internal`'s `host::header` takes `authority().host()`),
/// so against an endpoint on any port but the scheme's default it sends a
/// `Host` naming another address. fake-gcs-server builds the resumable
/// session URI from `Host`: `POST http://127.0.0.1:PORT/upload/storage/v1/b/
/// images/o?uploadType=resumable` sent with `Host: 127.0.0.1` is answered
/// `Location: http://127.0.0.1/upload/…` (port 80), and the first chunk's
/// `PUT` fails with "connection refused" (`tests/gcs.rs`,
/// `the_crates_host_header_alone_sends_chunks_to_the_wrong_port`). The
/// credentials' headers are the one place the crate lets a caller set a
/// header on every request, replacing its own, so the right `Host` goes
/// there.
struct WithHost {
    inner: Credentials,
    host: http::HeaderValue,
}

impl WithHost {
    fn new(inner: Credentials, host: &str) -> Result<WithHost, http::header::InvalidHeaderValue> {
        Ok(WithHost {
            inner,
            host: http::HeaderValue::from_str(host)?,
        })
    }
}

impl std::fmt::Debug for WithHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithHost")
            .field("inner", &self.inner)
            .field("host", &self.host)
            .finish()
    }
}

impl CredentialsProvider for WithHost {
    async fn headers(
        &self,
        extensions: http::Extensions,
    ) -> Result<CacheableResource<http::HeaderMap>, CredentialsError> {
        Ok(match self.inner.headers(extensions).await? {
            CacheableResource::NotModified => CacheableResource::NotModified,
            CacheableResource::New {
                entity_tag,
                mut data,
            } => {
                data.insert(http::header::HOST, self.host.clone());
                CacheableResource::New { entity_tag, data }
            }
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        self.inner.universe_domain().await
    }
}

/// A fixed OAuth2 access token, sent as `Authorization: Bearer`.
struct BearerToken {
    headers: http::HeaderMap,
    tag: EntityTag,
}

impl BearerToken {
    fn new(token: &str) -> Result<BearerToken, http::header::InvalidHeaderValue> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(BearerToken {
            headers,
            tag: EntityTag::new(),
        })
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl CredentialsProvider for BearerToken {
    async fn headers(
        &self,
        extensions: http::Extensions,
    ) -> Result<CacheableResource<http::HeaderMap>, CredentialsError> {
        // The token never changes: headers the caller holds are current.
        if extensions.get::<EntityTag>() == Some(&self.tag) {
            return Ok(CacheableResource::NotModified);
        }
        Ok(CacheableResource::New {
            entity_tag: self.tag.clone(),
            data: self.headers.clone(),
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

/// A crate error as a [`Failure`]: `HTTP {status}: {message}` for an answer
/// of the service (transient for 5xx, 429 and 408), the error's causes for a
/// request that got no answer or timed out (transient), permanent otherwise.
fn failure(e: google_cloud_storage::Error) -> Failure {
    if let Some(code) = e.http_status_code() {
        let status = reqwest::StatusCode::from_u16(code)
            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        let detail = e
            .status()
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                e.http_payload()
                    .map(|b| describe(&String::from_utf8_lossy(b)))
            })
            .unwrap_or_default();
        let message = if detail.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {detail}")
        };
        return if transient_status(status) {
            Failure::Transient(message)
        } else {
            Failure::Permanent(message)
        };
    }
    if e.is_io() || e.is_connect() || e.is_transport() || e.is_timeout() {
        Failure::Transient(error_chain(&e))
    } else {
        Failure::Permanent(error_chain(&e))
    }
}

/// The message of a JSON API error body (`{"error":{"message":…}}`), or the
/// body's start when it is something else.
fn describe(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_objects_are_checked() {
        let md5 = [7u8; 16];
        let good = Object::new().set_size(10).set_checksums(
            google_cloud_storage::model::ObjectChecksums::new()
                .set_md5_hash(Bytes::copy_from_slice(&md5)),
        );
        assert!(verify(&good, 10, md5).is_ok());
        assert!(verify(&good, 11, md5).is_err());
        assert!(verify(&good, 10, [8u8; 16]).is_err());
        assert!(verify(&Object::new().set_size(10), 10, md5).is_err());
    }

    #[tokio::test]
    async fn the_bearer_token_is_sent_and_never_shown() {
        let token = BearerToken::new("ya29.secret").expect("token");
        assert!(!format!("{token:?}").contains("ya29"));
        let Ok(CacheableResource::New { data, entity_tag }) =
            token.headers(http::Extensions::new()).await
        else {
            panic!("expected headers");
        };
        assert_eq!(data[http::header::AUTHORIZATION], "Bearer ya29.secret");
        let mut current = http::Extensions::new();
        current.insert(entity_tag);
        assert!(matches!(
            token.headers(current).await,
            Ok(CacheableResource::NotModified)
        ));
    }

    #[test]
    fn json_errors_give_their_message() {
        let body = r#"{"error":{"code":404,"message":"bucket not found"}}"#;
        assert_eq!(describe(body), "bucket not found");
        assert_eq!(describe("plain text"), "plain text");
    }
}
