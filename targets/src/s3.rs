//! The S3 target, through the official AWS SDK (`aws-sdk-s3`).
//!
//! Credentials: the client is built with `aws_sdk_s3::Config::builder()`
//! alone, never through `aws-config` (which kiln does not depend on): its
//! credentials provider is the configured key pair and nothing else, its
//! region and endpoint are the configured ones. No default provider chain
//! exists in the client, so the environment, profiles, web identity, the
//! container credentials endpoint and the instance metadata service
//! (169.254.169.254) are never consulted. A target without a key pair is
//! refused before any client is built. The SDK's own retries are off: every
//! request goes through kiln's retry loop, which reports retries and treats
//! all targets alike.
//!
//! Upload: one multipart upload, `concurrency` parts in flight, each part
//! retried on its own and sent with its `Content-MD5`, which S3 checks on
//! arrival. An artifact smaller than a part is one part; an empty one is a
//! single PutObject (S3 has no empty multipart upload).
//!
//! Verification, without reading the object back: for an unencrypted or
//! SSE-S3 object, S3 returns each part's MD5 as its ETag and the completed
//! object's ETag is `md5(part MD5s concatenated)-N`. kiln computes each
//! part's MD5 as it reads it and compares both, so any byte that reached the
//! storage differently from the artifact fails the upload (a part whose ETag
//! differs is re-sent, as a transport corruption would warrant). Services
//! whose ETags are not MD5s (SSE-KMS, SSE-C) return ETags of another shape;
//! those are logged and not compared. A final HeadObject checks the stored
//! size.

use std::time::Duration;

use aws_sdk_s3::client::customize::CustomizableOperation;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures::stream::{FuturesUnordered, StreamExt};
use md5::{Digest, Md5};

use crate::parts::{Digests, Part, PartReader};
use crate::retry::{error_chain, with_retries, Failure, Observer};
use crate::{Event, S3Target, UploadError, UploadedObject};

pub(crate) const TARGET: &str = "s3";
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client and what every request of one upload shares.
struct S3 {
    client: Client,
    bucket: String,
    key: String,
    /// Over HTTPS the payload is not hashed into the signature: TLS and the
    /// Content-MD5 and ETag checks guard it (AWS's SDKs do the same for
    /// transfers). Over plain HTTP the signature is all that protects the
    /// body in transit, so it is signed.
    unsigned_payload: bool,
}

pub(crate) async fn upload(
    target: &S3Target,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    if !(MIN_PART..=MAX_PART).contains(&target.part_size) {
        return Err(config_error(format!(
            "part_size {} is outside S3's {MIN_PART}..={MAX_PART} bytes",
            target.part_size
        )));
    }
    if target.concurrency == 0 || target.concurrency > 64 {
        return Err(config_error("concurrency must be 1 to 64".into()));
    }
    let s3 = S3 {
        client: client(target)?,
        bucket: target.bucket.clone(),
        key: name.to_string(),
        unsigned_payload: endpoint_is_https(target)?,
    };
    let url = format!("s3://{}/{name}", target.bucket);
    let digests = Digests {
        part_md5: true,
        whole_md5: false,
    };
    let mut reader = PartReader::open(artifact, target.part_size, digests)?;
    let total = reader.total();
    if total.div_ceil(target.part_size) > MAX_PARTS {
        return Err(config_error(format!(
            "{total} bytes in parts of {} is more than {MAX_PARTS} parts: raise part_size",
            target.part_size
        )));
    }
    on_event(Event::Progress { done: 0, total });

    if total == 0 {
        let empty_md5: [u8; 16] = Md5::digest(b"").into();
        let etag = with_retries(
            &target.retry,
            TARGET,
            "PutObject (empty object)",
            on_event,
            || s3.put_empty(empty_md5),
        )
        .await?;
        check_etag(etag.as_deref(), &hex::encode(empty_md5), "object ETag")?;
        let whole = drain(reader).await?;
        return finish(&s3, target, url, total, whole, on_event).await;
    }

    let upload_id = with_retries(
        &target.retry,
        TARGET,
        "CreateMultipartUpload",
        on_event,
        || s3.create(),
    )
    .await?;

    let sent = send_parts(&s3, &upload_id, target, &mut reader, total, on_event).await;
    let (parts, part_md5s) = match sent {
        Ok(p) => p,
        Err(e) => {
            // Best effort, once: the parts stored so far cost money until
            // aborted, and the upload failed anyway.
            if let Err(abort) = s3.abort(&upload_id).await {
                let reason = match abort {
                    Failure::Transient(m) | Failure::Permanent(m) => m,
                };
                tracing::warn!(error = %reason, "aborting the failed multipart upload");
            }
            return Err(e);
        }
    };
    let whole = reader.finish()?;
    let count = parts.len();
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    let etag = with_retries(
        &target.retry,
        TARGET,
        "CompleteMultipartUpload",
        on_event,
        || s3.complete(&upload_id, completed.clone()),
    )
    .await?;
    let expected = format!("{}-{count}", hex::encode(Md5::digest(part_md5s.concat())));
    check_etag(etag.as_deref(), &expected, "multipart ETag")?;
    finish(&s3, target, url, total, whole, on_event).await
}

impl S3 {
    async fn put_empty(&self, md5: [u8; 16]) -> Result<Option<String>, Failure> {
        let op = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_length(0)
            .content_md5(BASE64.encode(md5))
            .body(ByteStream::from_static(b""))
            .customize();
        let out = self.signed(op).send().await.map_err(sdk_failure)?;
        Ok(out.e_tag)
    }

    /// `op`, with its payload left out of the signature over HTTPS.
    fn signed<O: PayloadSigning>(&self, op: O) -> O {
        if self.unsigned_payload {
            op.unsigned()
        } else {
            op
        }
    }

    async fn create(&self) -> Result<String, Failure> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(sdk_failure)?;
        out.upload_id
            .ok_or_else(|| Failure::Permanent("the answer carries no UploadId".into()))
    }

    async fn put_part(
        &self,
        upload_id: &str,
        part: &Part,
        md5: [u8; 16],
    ) -> Result<Option<String>, Failure> {
        let op = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(part_number(part.index))
            .content_length(part.data.len() as i64)
            .content_md5(BASE64.encode(md5))
            // `Bytes` clones share the buffer: a retry costs no copy.
            .body(ByteStream::from(part.data.clone()))
            .customize();
        let out = self.signed(op).send().await.map_err(sdk_failure)?;
        Ok(out.e_tag)
    }

    async fn complete(
        &self,
        upload_id: &str,
        parts: CompletedMultipartUpload,
    ) -> Result<Option<String>, Failure> {
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(sdk_failure)?;
        Ok(out.e_tag)
    }

    async fn abort(&self, upload_id: &str) -> Result<(), Failure> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(sdk_failure)?;
        Ok(())
    }

    async fn size(&self) -> Result<Option<i64>, Failure> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(sdk_failure)?;
        Ok(out.content_length)
    }
}

/// S3's 1-based part number. `upload` refuses artifacts of more than
/// `MAX_PARTS` parts before it starts, so the number fits.
fn part_number(index: usize) -> i32 {
    (index + 1) as i32
}

/// Uploads every part, `concurrency` at a time; returns the completed parts
/// and their MD5s in part order.
async fn send_parts(
    s3: &S3,
    upload_id: &str,
    target: &S3Target,
    reader: &mut PartReader,
    total: u64,
    on_event: Observer<'_>,
) -> Result<(Vec<CompletedPart>, Vec<[u8; 16]>), UploadError> {
    let mut parts: Vec<Option<CompletedPart>> = Vec::new();
    let mut md5s: Vec<[u8; 16]> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0u64;
    let mut more = true;
    while more || !in_flight.is_empty() {
        while more && in_flight.len() < target.concurrency {
            match reader.next().await? {
                Some(part) => {
                    let md5 = part.md5.unwrap_or_default();
                    md5s.push(md5);
                    parts.push(None);
                    in_flight.push(send_part(s3, upload_id, target, part, md5, on_event));
                }
                None => more = false,
            }
        }
        if let Some(result) = in_flight.next().await {
            let (index, len, part) = result?;
            parts[index] = Some(part);
            done += len;
            on_event(Event::Progress { done, total });
        }
    }
    let parts = parts.into_iter().flatten().collect::<Vec<_>>();
    Ok((parts, md5s))
}

async fn send_part(
    s3: &S3,
    upload_id: &str,
    target: &S3Target,
    part: Part,
    md5: [u8; 16],
    on_event: Observer<'_>,
) -> Result<(usize, u64, CompletedPart), UploadError> {
    let operation = format!("UploadPart {}", part.index + 1);
    let expected = hex::encode(md5);
    let etag = with_retries(&target.retry, TARGET, &operation, on_event, || {
        let (part, expected) = (&part, &expected);
        async move {
            let etag = s3.put_part(upload_id, part, md5).await?;
            let Some(etag) = etag else {
                return Err(Failure::Permanent(
                    "the answer carries no ETag, which CompleteMultipartUpload needs".into(),
                ));
            };
            let bare = etag.trim_matches('"');
            if looks_like_md5(bare) && !bare.eq_ignore_ascii_case(expected) {
                // The storage received other bytes than were sent: send again.
                return Err(Failure::Transient(format!(
                    "part ETag {bare} is not the MD5 {expected} of the bytes sent"
                )));
            }
            Ok(etag)
        }
    })
    .await?;
    let completed = CompletedPart::builder()
        .part_number(part_number(part.index))
        .e_tag(etag)
        .build();
    Ok((part.index, part.data.len() as u64, completed))
}

async fn drain(mut reader: PartReader) -> Result<crate::parts::Whole, UploadError> {
    while reader.next().await?.is_some() {}
    reader.finish()
}

async fn finish(
    s3: &S3,
    target: &S3Target,
    url: String,
    total: u64,
    whole: crate::parts::Whole,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let size = with_retries(&target.retry, TARGET, "HeadObject", on_event, || s3.size()).await?;
    if size != i64::try_from(total).ok() {
        return Err(UploadError::Verification {
            target: TARGET,
            what: format!("size of {url}"),
            expected: total.to_string(),
            actual: size.map_or_else(|| "no size".to_string(), |s| s.to_string()),
        });
    }
    on_event(Event::Progress { done: total, total });
    Ok(UploadedObject {
        url,
        size: total,
        sha256: whole.sha256,
    })
}

fn check_etag(etag: Option<&str>, expected: &str, what: &str) -> Result<(), UploadError> {
    let Some(etag) = etag.map(|e| e.trim_matches('"')) else {
        tracing::warn!(what, "the storage returned no ETag: not verified");
        return Ok(());
    };
    let md5_part = etag.split('-').next().unwrap_or(etag);
    if !looks_like_md5(md5_part) {
        tracing::warn!(
            what,
            etag,
            "ETag is not an MD5 (encrypted object?): not verified"
        );
        return Ok(());
    }
    if !etag.eq_ignore_ascii_case(expected) {
        return Err(UploadError::Verification {
            target: TARGET,
            what: what.to_string(),
            expected: expected.to_string(),
            actual: etag.to_string(),
        });
    }
    Ok(())
}

fn looks_like_md5(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn config_error(reason: String) -> UploadError {
    UploadError::Config {
        target: TARGET,
        reason,
    }
}

/// Refuses a target without a complete key pair. kiln has no other source of
/// S3 credentials, and an unsigned request would be anonymous, which no
/// bucket kiln writes to should accept.
pub(crate) fn require_key_pair(target: &S3Target) -> Result<(), UploadError> {
    let missing = match (
        target.access_key_id.trim().is_empty(),
        target.secret_access_key.expose().is_empty(),
    ) {
        (false, false) => return Ok(()),
        (true, true) => "access_key_id and secret_access_key are",
        (true, false) => "access_key_id is",
        (false, true) => "secret_access_key is",
    };
    Err(config_error(format!(
        "{missing} empty: an S3 target needs its key pair in the configuration \
         (kiln never looks for credentials in the environment, profiles or a metadata service)"
    )))
}

/// Parses the endpoint: `true` for HTTPS, `false` for plain HTTP.
pub(crate) fn endpoint_is_https(target: &S3Target) -> Result<bool, UploadError> {
    let endpoint = url::Url::parse(&target.endpoint)
        .map_err(|e| config_error(format!("endpoint {:?}: {e}", target.endpoint)))?;
    match endpoint.scheme() {
        "https" => Ok(true),
        "http" => Ok(false),
        other => Err(config_error(format!(
            "endpoint scheme {other:?} is not http(s)"
        ))),
    }
}

/// The SDK client for `target`, every part of it given explicitly: the
/// static key pair, region, endpoint and addressing style, an HTTP client on
/// rustls with ring, tokio's sleep and the system clock, the target's
/// timeouts, and no retries of the SDK's own.
fn client(target: &S3Target) -> Result<Client, UploadError> {
    require_key_pair(target)?;
    endpoint_is_https(target)?;
    let credentials = Credentials::new(
        target.access_key_id.trim(),
        target.secret_access_key.expose(),
        None,
        None,
        "kiln-target-config",
    );
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(target.retry.request_timeout())
        .operation_timeout(target.retry.request_timeout())
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .region(Region::new(target.region.clone()))
        .endpoint_url(target.endpoint.trim_end_matches('/'))
        .force_path_style(target.path_style)
        .http_client(http)
        .sleep_impl(TokioSleep::new())
        .time_source(SystemTimeSource::new())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        // Only the checksums an operation requires: parts carry Content-MD5,
        // which the ETag checks build on; CRC32 trailers on top would hash
        // every byte once more for nothing kiln compares.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Ok(Client::from_conf(config))
}

/// Sorts an SDK error into worth-retrying or not, keeping the storage's own
/// code and message. Connection failures, timeouts and responses that could
/// not be read are transient; a request the SDK could not build, or that the
/// HTTP client refused as the caller's mistake, is not. A service error is
/// transient on 5xx, 429 and 408 (and on the codes S3 uses for throttling and
/// internal failures, which it may send with a 200: CompleteMultipartUpload).
fn sdk_failure<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let err = context.err();
            let mut message = format!("HTTP {status}");
            for field in [err.code(), err.message()].into_iter().flatten() {
                message.push_str(": ");
                message.push_str(field);
            }
            let transient_code = matches!(
                err.code(),
                Some("InternalError" | "SlowDown" | "RequestTimeout" | "ServiceUnavailable")
            );
            if status >= 500 || status == 429 || status == 408 || transient_code {
                Failure::Transient(message)
            } else {
                Failure::Permanent(message)
            }
        }
        SdkError::DispatchFailure(d) if d.is_user() => Failure::Permanent(error_chain(&e)),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(error_chain(&e))
        }
        _ => Failure::Permanent(error_chain(&e)),
    }
}

/// The operations that carry a payload, whose hash the signature may leave
/// out (the SDK offers it per operation type).
trait PayloadSigning {
    fn unsigned(self) -> Self;
}

impl<E, B> PayloadSigning for CustomizableOperation<PutObjectOutput, E, B> {
    fn unsigned(self) -> Self {
        self.disable_payload_signing()
    }
}

impl<E, B> PayloadSigning for CustomizableOperation<UploadPartOutput, E, B> {
    fn unsigned(self) -> Self {
        self.disable_payload_signing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RetryPolicy, Secret};

    #[test]
    fn etags_are_compared_only_when_they_are_md5s() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert!(check_etag(Some(&format!("\"{md5}\"")), md5, "x").is_ok());
        assert!(check_etag(Some("\"ffffffffffffffffffffffffffffffff\""), md5, "x").is_err());
        let multi = format!("{md5}-3");
        assert!(check_etag(Some(&multi), &multi, "x").is_ok());
        assert!(check_etag(Some(&format!("{md5}-4")), &multi, "x").is_err());
        // SSE-KMS style ETags cannot be checked.
        assert!(check_etag(Some("kms-opaque"), md5, "x").is_ok());
    }

    #[test]
    fn a_missing_key_pair_is_refused_by_name() {
        let mut t = S3Target {
            endpoint: "http://127.0.0.1:1".into(),
            region: "r".into(),
            bucket: "b".into(),
            access_key_id: String::new(),
            secret_access_key: Secret::new("s"),
            path_style: true,
            part_size: MIN_PART,
            concurrency: 1,
            retry: RetryPolicy::default(),
        };
        let text = require_key_pair(&t).map_err(|e| e.to_string()).err();
        assert!(
            text.as_deref()
                .is_some_and(|t| t.contains("access_key_id is empty")),
            "{text:?}"
        );
        t.access_key_id = "AK".into();
        t.secret_access_key = Secret::new("");
        let text = require_key_pair(&t).map_err(|e| e.to_string()).err();
        assert!(
            text.as_deref()
                .is_some_and(|t| t.contains("secret_access_key is empty")),
            "{text:?}"
        );
        t.secret_access_key = Secret::new("s");
        assert!(require_key_pair(&t).is_ok());
    }
}
