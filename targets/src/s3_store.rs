//! `s3_object_store`: an S3 target's bucket as an `object_store` store, for
//! kiln-boot's boot image store. kiln-boot is written against the
//! `ObjectStore` trait (its other stores are a local directory and memory),
//! so this stays on `object_store`; kiln's own uploads go through the AWS SDK
//! ([`crate::s3`]).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AwsCredential, S3ConditionalPut, S3CopyIfNotExists};
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, RetryConfig, StaticCredentialProvider,
};

use crate::retry::error_chain;
use crate::s3::{config_error, endpoint_is_https, require_key_pair};
use crate::{S3Target, UploadError};

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

/// Endpoint, region, bucket, static credentials and HTTP options: what every
/// store of `target` shares.
fn builder(target: &S3Target) -> Result<AmazonS3Builder, UploadError> {
    let bad = config_error;
    require_key_pair(target)?;
    let allow_http = !endpoint_is_https(target)?;
    let endpoint = url::Url::parse(&target.endpoint)
        .map_err(|e| bad(format!("endpoint {:?}: {e}", target.endpoint)))?;
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
        key_id: target.access_key_id.trim().to_string(),
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
