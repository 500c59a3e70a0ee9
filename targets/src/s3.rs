//! The S3 target, through `object_store`'s low-level multipart API.
//!
//! Credentials: the store is built with a `StaticCredentialProvider` holding
//! the configured key pair. `object_store` takes given credentials before it
//! looks anywhere else, so the environment, profiles and the instance
//! metadata service (169.254.169.254) are never consulted; the builder is
//! also never fed from the environment (`AmazonS3Builder::new`, not `from_env`).
//! `object_store`'s own retries are off: every request goes through kiln's
//! retry loop, which reports retries and treats all targets alike.
//!
//! Upload: one multipart upload, `concurrency` parts in flight, each part
//! retried on its own. An artifact smaller than a part is one part; an empty
//! one is a single PUT (S3 has no empty multipart upload).
//!
//! Verification, without reading the object back: for an unencrypted or
//! SSE-S3 object, S3 returns each part's MD5 as its ETag and the completed
//! object's ETag is `md5(part MD5s concatenated)-N`. kiln computes each
//! part's MD5 as it reads it and compares both, so any byte that reached the
//! storage differently from the artifact fails the upload (a part whose ETag
//! differs is re-sent, as a transport corruption would warrant). Services
//! whose ETags are not MD5s (SSE-KMS, SSE-C) return ETags of another shape;
//! those are logged and not compared. A final HEAD checks the stored size.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use md5::{Digest, Md5};
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AwsCredential, S3ConditionalPut, S3CopyIfNotExists,
};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig, StaticCredentialProvider,
};

use crate::parts::{Digests, Part, PartReader};
use crate::retry::{error_chain, with_retries, Failure, Observer};
use crate::{Event, S3Target, UploadError, UploadedObject};

const TARGET: &str = "s3";
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

pub(crate) async fn upload(
    target: &S3Target,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let store = build(target)?;
    let key = ObjectPath::from(name);
    let url = format!("s3://{}/{name}", target.bucket);
    let digests = Digests {
        part_md5: true,
        whole_md5: false,
    };
    let mut reader = PartReader::open(artifact, target.part_size, digests)?;
    let total = reader.total();
    on_event(Event::Progress { done: 0, total });

    if total == 0 {
        let empty_md5 = hex::encode(Md5::digest(b""));
        let result = with_retries(
            &target.retry,
            TARGET,
            "PUT (empty object)",
            on_event,
            || {
                let (store, key) = (&store, &key);
                async move {
                    store
                        .put(key, PutPayload::new())
                        .await
                        .map_err(store_failure)
                }
            },
        )
        .await?;
        check_etag(result.e_tag.as_deref(), &empty_md5, "object ETag")?;
        let whole = drain(reader).await?;
        return finish(&store, &key, target, url, total, whole, on_event).await;
    }

    let id = with_retries(
        &target.retry,
        TARGET,
        "CreateMultipartUpload",
        on_event,
        || {
            let (store, key) = (&store, &key);
            async move { store.create_multipart(key).await.map_err(store_failure) }
        },
    )
    .await?;

    let sent = send_parts(&store, &key, &id, target, &mut reader, total, on_event).await;
    let (parts, part_md5s) = match sent {
        Ok(p) => p,
        Err(e) => {
            // Best effort, once: the parts stored so far cost money until
            // aborted, and the upload failed anyway.
            if let Err(abort) = store.abort_multipart(&key, &id).await {
                tracing::warn!(error = %error_chain(&abort), "aborting the failed multipart upload");
            }
            return Err(e);
        }
    };
    let whole = reader.finish()?;
    let count = parts.len();
    let result = with_retries(
        &target.retry,
        TARGET,
        "CompleteMultipartUpload",
        on_event,
        || {
            let (store, key, id, parts) = (&store, &key, &id, &parts);
            async move {
                store
                    .complete_multipart(key, id, parts.clone())
                    .await
                    .map_err(store_failure)
            }
        },
    )
    .await?;
    let expected = format!("{}-{count}", hex::encode(Md5::digest(part_md5s.concat())));
    check_etag(result.e_tag.as_deref(), &expected, "multipart ETag")?;
    finish(&store, &key, target, url, total, whole, on_event).await
}

/// Uploads every part, `concurrency` at a time; returns the part ids and
/// MD5s in part order.
async fn send_parts(
    store: &AmazonS3,
    key: &ObjectPath,
    id: &String,
    target: &S3Target,
    reader: &mut PartReader,
    total: u64,
    on_event: Observer<'_>,
) -> Result<(Vec<PartId>, Vec<[u8; 16]>), UploadError> {
    let mut ids: Vec<Option<PartId>> = Vec::new();
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
                    ids.push(None);
                    in_flight.push(send_part(store, key, id, target, part, md5, on_event));
                }
                None => more = false,
            }
        }
        if let Some(result) = in_flight.next().await {
            let (index, len, part_id) = result?;
            ids[index] = Some(part_id);
            done += len;
            on_event(Event::Progress { done, total });
        }
    }
    let ids = ids.into_iter().flatten().collect::<Vec<_>>();
    Ok((ids, md5s))
}

async fn send_part(
    store: &AmazonS3,
    key: &ObjectPath,
    id: &String,
    target: &S3Target,
    part: Part,
    md5: [u8; 16],
    on_event: Observer<'_>,
) -> Result<(usize, u64, PartId), UploadError> {
    let operation = format!("UploadPart {}", part.index + 1);
    let expected = hex::encode(md5);
    let payload = PutPayload::from(part.data.clone());
    let part_id = with_retries(&target.retry, TARGET, &operation, on_event, || {
        let (payload, expected) = (payload.clone(), &expected);
        async move {
            let part_id = store
                .put_part(key, id, part.index, payload)
                .await
                .map_err(store_failure)?;
            let etag = part_id.content_id.trim_matches('"');
            if looks_like_md5(etag) && !etag.eq_ignore_ascii_case(expected) {
                // The storage received other bytes than were sent: send again.
                return Err(Failure::Transient(format!(
                    "part ETag {etag} is not the MD5 {expected} of the bytes sent"
                )));
            }
            Ok(part_id)
        }
    })
    .await?;
    Ok((part.index, part.data.len() as u64, part_id))
}

async fn drain(mut reader: PartReader) -> Result<crate::parts::Whole, UploadError> {
    while reader.next().await?.is_some() {}
    reader.finish()
}

async fn finish(
    store: &AmazonS3,
    key: &ObjectPath,
    target: &S3Target,
    url: String,
    total: u64,
    whole: crate::parts::Whole,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let meta = with_retries(&target.retry, TARGET, "HeadObject", on_event, || async {
        store.head(key).await.map_err(store_failure)
    })
    .await?;
    if meta.size != total {
        return Err(UploadError::Verification {
            target: TARGET,
            what: format!("size of {url}"),
            expected: total.to_string(),
            actual: meta.size.to_string(),
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

/// The store kiln's own uploads use: part size and concurrency checked,
/// `object_store`'s retries off (kiln retries each request itself).
fn build(target: &S3Target) -> Result<AmazonS3, UploadError> {
    if !(MIN_PART..=MAX_PART).contains(&target.part_size) {
        return Err(config_error(format!(
            "part_size {} is outside S3's {MIN_PART}..={MAX_PART} bytes",
            target.part_size
        )));
    }
    if target.concurrency == 0 || target.concurrency > 64 {
        return Err(config_error("concurrency must be 1 to 64".into()));
    }
    builder(target)?
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: target.retry.request_timeout(),
        })
        .build()
        .map_err(|e| config_error(error_chain(&e)))
}

/// The bucket of `target` as an [`ObjectStore`] whose writes can be
/// create-only, for callers that must never overwrite (kiln-boot's boot
/// image store):
///
/// - `put_opts` with `PutMode::Create` sends `If-None-Match: *`
///   (`S3ConditionalPut::ETagMatch`); an existing key fails with
///   `object_store::Error::AlreadyExists`.
/// - `copy_if_not_exists` is `S3CopyIfNotExists::Multipart`: a multipart
///   upload of the destination whose one part is an UploadPartCopy of the
///   source, completed with `If-None-Match: *`. CopyObject itself has no
///   destination precondition that S3 servers agree on (s3s-fs ignores
///   `If-None-Match` on it, and `x-amz-copy-source-if-none-match` is a test
///   of the *source's* ETag), so this is the one form that is refused rather
///   than silently overwriting. S3 copies at most 5 GiB in one part.
///
/// Credentials are the configured key pair only, and the builder is never fed
/// from the environment: no profile, environment variable or instance
/// metadata service is consulted. `object_store` retries transient failures
/// itself here, following `target.retry`: 5xx, 429 and 408 answers and
/// connections that failed before the request was sent; a conditional PUT
/// that timed out is not resent. A retried create whose first attempt did
/// land is refused as `AlreadyExists`: a false refusal, never an overwrite.
/// `part_size` and `concurrency` are for [`crate::upload`] and not used.
pub fn s3_object_store(target: &S3Target) -> Result<Arc<dyn ObjectStore>, UploadError> {
    let retry = &target.retry;
    let attempts = retry.max_attempts.max(1);
    let store = builder(target)?
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: retry.backoff(1),
                max_backoff: Duration::from_millis(retry.max_backoff_ms),
                base: 2.0,
            },
            max_retries: (attempts - 1) as usize,
            retry_timeout: retry.request_timeout().saturating_mul(attempts),
        })
        .build()
        .map_err(|e| config_error(error_chain(&e)).redact(&[target.secret_access_key.expose()]))?;
    Ok(Arc::new(store))
}

fn config_error(reason: String) -> UploadError {
    UploadError::Config {
        target: TARGET,
        reason,
    }
}

/// Endpoint, region, bucket, static credentials and HTTP options: what every
/// store of `target` shares.
fn builder(target: &S3Target) -> Result<AmazonS3Builder, UploadError> {
    let bad = config_error;
    if target.access_key_id.is_empty() || target.secret_access_key.expose().is_empty() {
        return Err(bad(
            "access_key_id and secret_access_key are required".into()
        ));
    }
    let endpoint = url::Url::parse(&target.endpoint)
        .map_err(|e| bad(format!("endpoint {:?}: {e}", target.endpoint)))?;
    let allow_http = match endpoint.scheme() {
        "https" => false,
        "http" => true,
        other => return Err(bad(format!("endpoint scheme {other:?} is not http(s)"))),
    };
    let endpoint = if target.path_style {
        target.endpoint.trim_end_matches('/').to_string()
    } else {
        // object_store expects a virtual-hosted endpoint to name the bucket.
        let host = endpoint.host_str().unwrap_or_default();
        let mut u = endpoint.clone();
        u.set_host(Some(&format!("{}.{host}", target.bucket)))
            .map_err(|e| bad(format!("bucket as a host name: {e}")))?;
        u.as_str().trim_end_matches('/').to_string()
    };
    let credentials = StaticCredentialProvider::new(AwsCredential {
        key_id: target.access_key_id.clone(),
        secret_key: target.secret_access_key.expose().to_string(),
        token: None,
    });
    let options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(target.retry.request_timeout());
    Ok(AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region(&target.region)
        .with_bucket_name(&target.bucket)
        .with_credentials(Arc::new(credentials))
        .with_virtual_hosted_style_request(!target.path_style)
        // Over TLS the payload's SHA-256 in the signature would only repeat
        // what TLS and the ETag check already guard, at the cost of hashing
        // every byte once more (AWS's SDKs skip it on HTTPS too); over plain
        // HTTP the signature is all that protects the body in transit.
        .with_unsigned_payload(!allow_http)
        .with_client_options(options))
}

/// Sorts an `object_store` error into worth-retrying or not. Its own typed
/// variants (not found, denied, unauthenticated, precondition) are final. A
/// generic error is transient when its cause is a network failure (an
/// `HttpError`, reqwest or I/O error: connect, request, timeout, cut body) or an HTTP status of 5xx, 429 or 408 — `object_store` keeps the
/// status in a type it does not export, so it is read from the message, whose
/// format (`status code: NNN`) is `object_store`'s `Display` for it.
fn store_failure(e: object_store::Error) -> Failure {
    use object_store::Error as E;
    let message = error_chain(&e);
    match &e {
        E::Generic { .. } => {}
        _ => return Failure::Permanent(message),
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        // `HttpError` hides behind a `transparent` wrapper that skips it in
        // the chain; its own causes, reqwest's and the OS's errors, show.
        if c.downcast_ref::<object_store::client::HttpError>()
            .is_some()
            || c.downcast_ref::<reqwest::Error>().is_some()
            || c.downcast_ref::<std::io::Error>().is_some()
        {
            return Failure::Transient(message);
        }
        cause = c.source();
    }
    if let Some(at) = message.find("status code: ") {
        let code = message[at + 13..].get(..3).unwrap_or("");
        return if code.starts_with('5') || code == "429" || code == "408" {
            Failure::Transient(message)
        } else {
            Failure::Permanent(message)
        };
    }
    // "Server returned error response": S3 answers some failures of
    // CompleteMultipartUpload with 200 and an error body, to be retried.
    if message.contains("error response") {
        return Failure::Transient(message);
    }
    Failure::Permanent(message)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
