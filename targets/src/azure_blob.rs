//! The Azure Blob target, through the Azure SDK's `azure_storage_blobs`
//! (0.21, the last release of the SDK line that signs with the account key;
//! see README.md for why not its successor `azure_storage_blob`).
//!
//! Three operations: Put Block (parallel, `concurrency` in flight, each
//! retried on its own), Put Block List, and Get Blob Properties to check the
//! committed size. Each block carries the `Content-MD5` kiln computed while
//! reading it, and the service refuses a block whose bytes do not hash to it
//! (`Md5Mismatch`), so every block is checked on arrival without reading the
//! blob back. The whole blob's MD5 is stored as its `Content-MD5` property,
//! so later readers can check it too.
//!
//! `azure_storage_blobs` 0.21 takes a hash for Put Block but never sends it:
//! [`BlockMd5Policy`], a policy in the SDK's own pipeline, adds the header
//! from the MD5 the request's [`Context`] carries, before the SDK signs the
//! request (the Shared Key signature covers `Content-MD5`).
//!
//! The SDK's own retries are off: kiln's retry loop is the only one, so that
//! every retry is reported. Its HTTP client is kiln's (reqwest with rustls and
//! kiln's timeouts). The account key from the configuration is the only
//! credential; nothing is read from the environment and no identity endpoint
//! is ever asked.

use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::headers::CONTENT_MD5;
use azure_core::{
    ClientOptions, Context, Policy, PolicyResult, Request, RetryOptions, TransportOptions,
};
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::{
    BlobBlockType, BlobClient, BlobContentMD5, BlockId, BlockList, ClientBuilder, ContainerClient,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::parts::{Digests, Part, PartReader};
use crate::retry::{error_chain, transient_status, with_retries, Failure, Observer};
use crate::{AzureTarget, Event, UploadError, UploadedObject};

const TARGET: &str = "azure";
const MAX_BLOCK: u64 = 4000 * 1024 * 1024;
const MAX_BLOCKS: u64 = 50_000;

pub(crate) async fn upload(
    target: &AzureTarget,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let container = container_client(target)?;
    let digests = Digests {
        part_md5: true,
        whole_md5: true,
    };
    let mut reader = PartReader::open(artifact, target.block_size, digests)?;
    let total = reader.total();
    if total.div_ceil(target.block_size) > MAX_BLOCKS {
        return Err(UploadError::Config {
            target: TARGET,
            reason: format!(
                "{total} bytes in blocks of {} is more than {MAX_BLOCKS} blocks: raise block_size",
                target.block_size
            ),
        });
    }
    let blob = container.blob_client(name);
    let url = blob.url().map_err(|e| UploadError::Config {
        target: TARGET,
        reason: format!("blob URL for {name:?}: {e}"),
    })?;
    on_event(Event::Progress { done: 0, total });

    let mut ids: Vec<BlockId> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let (mut done, mut more) = (0u64, true);
    while more || !in_flight.is_empty() {
        while more && in_flight.len() < target.concurrency {
            match reader.next().await? {
                Some(part) => {
                    let id = block_id(part.index);
                    ids.push(id.clone());
                    in_flight.push(put_block(target, &blob, id, part, on_event));
                }
                None => more = false,
            }
        }
        if let Some(result) = in_flight.next().await {
            done += result?;
            on_event(Event::Progress { done, total });
        }
    }
    let whole = reader.finish()?;
    let whole_md5 = BlobContentMD5(whole.md5.unwrap_or_default());

    let list = BlockList {
        blocks: ids.into_iter().map(BlobBlockType::new_latest).collect(),
    };
    with_retries(
        &target.retry,
        TARGET,
        "Put Block List",
        on_event,
        || async {
            blob.put_block_list(list.clone())
                .content_md5(whole_md5.clone())
                .await
                .map_err(failure)
        },
    )
    .await?;

    let props = with_retries(
        &target.retry,
        TARGET,
        "Get Blob Properties",
        on_event,
        || async { blob.get_properties().await.map_err(failure) },
    )
    .await?;
    let stored = props.blob.properties.content_length;
    if stored != total {
        return Err(UploadError::Verification {
            target: TARGET,
            what: format!("size of {url}"),
            expected: total.to_string(),
            actual: stored.to_string(),
        });
    }
    on_event(Event::Progress { done: total, total });
    Ok(UploadedObject {
        url: url.to_string(),
        size: total,
        sha256: whole.sha256,
    })
}

async fn put_block(
    target: &AzureTarget,
    blob: &BlobClient,
    id: BlockId,
    part: Part,
    on_event: Observer<'_>,
) -> Result<u64, UploadError> {
    let md5 = BlockMd5(BASE64.encode(part.md5.unwrap_or_default()));
    let operation = format!("Put Block {}", part.index + 1);
    let len = part.data.len() as u64;
    with_retries(&target.retry, TARGET, &operation, on_event, || async {
        let mut context = Context::new();
        context.insert(md5.clone());
        blob.put_block(id.clone(), part.data.clone())
            .context(context)
            .await
            .map_err(failure)
    })
    .await?;
    Ok(len)
}

/// Block ids must all have the same length; 18 bytes encode without padding.
fn block_id(index: usize) -> BlockId {
    BlockId::new(Bytes::from(format!("kiln-block-{index:07}")))
}

/// The base64 MD5 of a Put Block's body, carried to [`BlockMd5Policy`] in
/// the request's [`Context`].
#[derive(Clone, Debug)]
struct BlockMd5(String);

/// Sets `Content-MD5` on requests whose context carries a [`BlockMd5`]. It
/// runs among the per-call policies, before the SDK's authorization policy
/// signs the request.
#[derive(Debug)]
struct BlockMd5Policy;

#[async_trait::async_trait]
impl Policy for BlockMd5Policy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(md5) = ctx.get::<BlockMd5>() {
            request.insert_header(CONTENT_MD5, md5.0.clone());
        }
        match next.split_first() {
            Some((policy, rest)) => policy.send(ctx, request, rest).await,
            None => Err(azure_core::Error::message(
                ErrorKind::Other,
                "no policy after the Content-MD5 policy",
            )),
        }
    }
}

/// Creates the target's container; one that exists already is fine. For
/// setup tools and tests: uploads never create containers.
pub async fn create_container(target: &AzureTarget) -> Result<(), UploadError> {
    let r = async {
        let container = container_client(target)?;
        with_retries(
            &target.retry,
            TARGET,
            "Create Container",
            &|_| {},
            || async {
                match container.create().await.map_err(failure) {
                    Err(Failure::Permanent(m)) if m.contains("ContainerAlreadyExists") => Ok(()),
                    other => other.map(drop),
                }
            },
        )
        .await
    }
    .await;
    r.map_err(|e| e.redact(&[target.key.expose()]))
}

/// Reads a whole blob, for checking what an upload stored.
pub async fn read_blob(target: &AzureTarget, name: &str) -> Result<Bytes, UploadError> {
    let r = async {
        let blob = container_client(target)?.blob_client(name);
        with_retries(&target.retry, TARGET, "Get Blob", &|_| {}, || async {
            blob.get_content().await.map(Bytes::from).map_err(failure)
        })
        .await
    }
    .await;
    r.map_err(|e| e.redact(&[target.key.expose()]))
}

/// The SDK's client for the target's container: the configured endpoint and
/// account key, kiln's HTTP client, no SDK retries.
fn container_client(target: &AzureTarget) -> Result<ContainerClient, UploadError> {
    let bad = |reason: String| UploadError::Config {
        target: TARGET,
        reason,
    };
    if target.block_size == 0 || target.block_size > MAX_BLOCK {
        return Err(bad(format!("block_size must be 1 to {MAX_BLOCK} bytes")));
    }
    if target.concurrency == 0 || target.concurrency > 64 {
        return Err(bad("concurrency must be 1 to 64".into()));
    }
    if target.key.expose().trim().is_empty() {
        // Shared Key is kiln's only Azure credential: no identity
        // endpoint, environment variable or connection string stands in.
        return Err(bad(
            "key is empty: an Azure target needs its account key in the configuration \
             (kiln never looks for credentials in the environment or a managed identity endpoint)"
                .into(),
        ));
    }
    // The SDK decodes the key only when it signs; a bad one fails here, and
    // the decode error never quotes the key.
    BASE64
        .decode(target.key.expose())
        .map_err(|e| bad(format!("key is not base64: {e}")))?;
    let endpoint = target.endpoint();
    let base =
        url::Url::parse(&endpoint).map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(bad(format!("endpoint {endpoint:?} is not an http(s) URL")));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(target.retry.request_timeout())
        .build()
        .map_err(|e| bad(format!("building the HTTP client: {e}")))?;
    let mut options = ClientOptions::new(TransportOptions::new(Arc::new(http)));
    options
        .per_call_policies_mut()
        .push(Arc::new(BlockMd5Policy));
    let location = CloudLocation::Custom {
        account: target.account.clone(),
        uri: endpoint,
    };
    let credentials =
        StorageCredentials::access_key(target.account.clone(), target.key.expose().to_string());
    Ok(ClientBuilder::with_location(location, credentials)
        .client_options(options)
        .retry(RetryOptions::none())
        .container_client(target.container.clone()))
}

/// An SDK error as a [`Failure`]: `HTTP {status}: {code}: {message}` for an
/// answer of the service (transient for 5xx, 429 and 408), the error's
/// causes for a request that got no answer (transient), and permanent
/// otherwise.
fn failure(e: azure_core::Error) -> Failure {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let status = reqwest::StatusCode::from_u16(*status as u16)
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            let mut message = format!("HTTP {status}");
            let code = error_code
                .clone()
                .or_else(|| e.as_http_error()?.error_code().map(str::to_string));
            if let Some(code) = code {
                message.push_str(&format!(": {code}"));
            }
            // The first line only: the rest is a request id and a time.
            if let Some(text) = e.as_http_error().and_then(|h| h.error_message()) {
                message.push_str(&format!(": {}", text.lines().next().unwrap_or("").trim()));
            }
            if transient_status(status) {
                Failure::Transient(message)
            } else {
                Failure::Permanent(message)
            }
        }
        ErrorKind::Io => Failure::Transient(error_chain(&e)),
        _ => Failure::Permanent(error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length_and_no_padding() {
        let ids: Vec<String> = [0, 7, 49_999]
            .iter()
            .map(|&i| BASE64.encode(block_id(i).bytes()))
            .collect();
        assert!(ids
            .iter()
            .all(|i| i.len() == ids[0].len() && !i.contains('=')));
        assert_ne!(ids[0], ids[1]);
    }

    /// The Content-MD5 that [`BlockMd5Policy`] adds reaches Azurite, is
    /// covered by the signature, and is checked: a block whose bytes do not
    /// hash to it is refused, the same block with its own MD5 is stored.
    #[tokio::test]
    async fn blocks_are_checked_against_their_md5_on_arrival() {
        use md5::{Digest as _, Md5};
        let server = kiln_testsupport::storage::AzuriteServer::start().expect("azurite");
        let target = AzureTarget {
            account: server.account.clone(),
            key: crate::Secret::new(server.key.clone()),
            container: "md5check".into(),
            endpoint: Some(server.endpoint()),
            block_size: 1024,
            concurrency: 1,
            retry: crate::RetryPolicy {
                max_attempts: 1,
                ..crate::RetryPolicy::default()
            },
        };
        create_container(&target).await.expect("container");
        let blob = container_client(&target).expect("client").blob_client("b");
        let data = Bytes::from_static(b"the bytes of one block");
        let part = |md5: [u8; 16]| Part {
            index: 0,
            offset: 0,
            data: data.clone(),
            md5: Some(md5),
        };
        let err = put_block(&target, &blob, block_id(0), part([0u8; 16]), &|_| {})
            .await
            .expect_err("a block with a wrong MD5 must be refused");
        let text = err.to_string();
        // Azure says `Md5Mismatch`; Azurite `InvalidOperation: Provided contentMD5 doesn't match.`
        assert!(
            text.contains("HTTP 400")
                && (text.contains("Md5Mismatch") || text.contains("contentMD5 doesn't match")),
            "{text}"
        );
        let md5: [u8; 16] = Md5::digest(&data).into();
        let sent = put_block(&target, &blob, block_id(0), part(md5), &|_| {})
            .await
            .unwrap_or_else(|e| panic!("the block with its MD5: {e}\n{}", server.log()));
        assert_eq!(sent, data.len() as u64);
    }
}
