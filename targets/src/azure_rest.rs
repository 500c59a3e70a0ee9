//! The Azure Blob target, on the Blob service's REST API with Shared Key
//! authorization.
//!
//! Why not `object_store`: its Azure client sends blocks without
//! `Content-MD5`, and that header is how the service itself verifies each
//! block on arrival (it refuses a block whose bytes do not hash to it with
//! `Md5Mismatch`). Speaking REST directly keeps that end-to-end check without
//! reading the blob back, and it is three requests: Put Block (parallel,
//! `concurrency` in flight, each retried on its own), Put Block List, and Get
//! Blob Properties to check the committed size. The whole blob's MD5 is
//! stored as its `Content-MD5` property, so later readers can check it too.
//!
//! The account key is the only credential used; nothing is read from the
//! environment and no identity endpoint is ever asked.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::{Method, Response};
use sha2::Sha256;
use url::Url;

use crate::parts::{Digests, Part, PartReader};
use crate::retry::{reqwest_failure, response_failure, with_retries, Failure, Observer};
use crate::{AzureTarget, Event, UploadError, UploadedObject};

const TARGET: &str = "azure";
const API_VERSION: &str = "2021-08-06";
const MAX_BLOCK: u64 = 4000 * 1024 * 1024;
const MAX_BLOCKS: u64 = 50_000;

pub(crate) async fn upload(
    target: &AzureTarget,
    artifact: &std::path::Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let az = Client::new(target)?;
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
    let blob = az.blob_url(name);
    on_event(Event::Progress { done: 0, total });

    let mut ids: Vec<String> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let (mut done, mut more) = (0u64, true);
    while more || !in_flight.is_empty() {
        while more && in_flight.len() < target.concurrency {
            match reader.next().await? {
                Some(part) => {
                    let id = block_id(part.index);
                    ids.push(id.clone());
                    in_flight.push(put_block(&az, &blob, id, part, on_event));
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
    let whole_md5 = BASE64.encode(whole.md5.unwrap_or_default());

    let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for id in &ids {
        list.push_str(&format!("<Latest>{id}</Latest>"));
    }
    list.push_str("</BlockList>");
    let list = Bytes::from(list);
    let mut commit_url = blob.clone();
    commit_url
        .query_pairs_mut()
        .append_pair("comp", "blocklist");
    let headers = [
        ("content-type", "application/xml".to_string()),
        ("x-ms-blob-content-md5", whole_md5),
    ];
    with_retries(&target.retry, TARGET, "Put Block List", on_event, || {
        az.send(Method::PUT, &commit_url, &headers, list.clone(), None)
    })
    .await?;

    let props = with_retries(
        &target.retry,
        TARGET,
        "Get Blob Properties",
        on_event,
        || az.send(Method::HEAD, &blob, &[], Bytes::new(), None),
    )
    .await?;
    let stored = props
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if stored != Some(total) {
        return Err(UploadError::Verification {
            target: TARGET,
            what: format!("size of {blob}"),
            expected: total.to_string(),
            actual: stored.map_or("nothing".into(), |s| s.to_string()),
        });
    }
    on_event(Event::Progress { done: total, total });
    Ok(UploadedObject {
        url: blob.to_string(),
        size: total,
        sha256: whole.sha256,
    })
}

async fn put_block(
    az: &Client<'_>,
    blob: &Url,
    id: String,
    part: Part,
    on_event: Observer<'_>,
) -> Result<u64, UploadError> {
    let mut url = blob.clone();
    url.query_pairs_mut()
        .append_pair("comp", "block")
        .append_pair("blockid", &id);
    let md5 = BASE64.encode(part.md5.unwrap_or_default());
    let operation = format!("Put Block {}", part.index + 1);
    let len = part.data.len() as u64;
    with_retries(&az.target.retry, TARGET, &operation, on_event, || {
        az.send(Method::PUT, &url, &[], part.data.clone(), Some(&md5))
    })
    .await?;
    Ok(len)
}

/// Block ids must all have the same length; 18 bytes encode without padding.
fn block_id(index: usize) -> String {
    BASE64.encode(format!("kiln-block-{index:07}"))
}

/// Creates the target's container; one that exists already is fine. For
/// setup tools and tests: uploads never create containers.
pub async fn create_container(target: &AzureTarget) -> Result<(), UploadError> {
    let az = Client::new(target)?;
    let mut url = az.container_url();
    url.query_pairs_mut().append_pair("restype", "container");
    let r = with_retries(
        &target.retry,
        TARGET,
        "Create Container",
        &|_| {},
        || async {
            match az.send(Method::PUT, &url, &[], Bytes::new(), None).await {
                Err(Failure::Permanent(m)) if m.contains("ContainerAlreadyExists") => Ok(()),
                other => other.map(drop),
            }
        },
    )
    .await;
    r.map_err(|e| e.redact(&[target.key.expose()]))
}

/// Reads a whole blob, for checking what an upload stored.
pub async fn read_blob(target: &AzureTarget, name: &str) -> Result<Bytes, UploadError> {
    let az = Client::new(target)?;
    let url = az.blob_url(name);
    let r = with_retries(&target.retry, TARGET, "Get Blob", &|_| {}, || async {
        let resp = az.send(Method::GET, &url, &[], Bytes::new(), None).await?;
        resp.bytes().await.map_err(reqwest_failure)
    })
    .await;
    r.map_err(|e| e.redact(&[target.key.expose()]))
}

struct Client<'a> {
    target: &'a AzureTarget,
    key: Vec<u8>,
    base: Url,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    fn new(target: &'a AzureTarget) -> Result<Client<'a>, UploadError> {
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
        // The decode error never quotes the key.
        let key = BASE64
            .decode(target.key.expose())
            .map_err(|e| bad(format!("key is not base64: {e}")))?;
        let endpoint = target.endpoint();
        let base = Url::parse(&endpoint).map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(format!("endpoint {endpoint:?} is not an http(s) URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(target.retry.request_timeout())
            .build()
            .map_err(|e| bad(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            target,
            key,
            base,
            http,
        })
    }

    fn container_url(&self) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.target.container);
        }
        url
    }

    fn blob_url(&self, name: &str) -> Url {
        let mut url = self.container_url();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(name.split('/'));
        }
        url
    }

    /// Sends a signed request; a response other than 2xx is a [`Failure`]
    /// carrying the service's error code and message.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Bytes,
        content_md5: Option<&str>,
    ) -> Result<Response, Failure> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut ms_headers: Vec<(String, String)> = vec![
            ("x-ms-date".into(), date),
            ("x-ms-version".into(), API_VERSION.into()),
        ];
        let mut content_type = String::new();
        for (k, v) in headers {
            if k.starts_with("x-ms-") {
                ms_headers.push((k.to_string(), v.clone()));
            } else if *k == "content-type" {
                content_type = v.clone();
            }
        }
        ms_headers.sort();
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let signature = self.sign(
            &method,
            url,
            &length,
            content_md5.unwrap_or(""),
            &content_type,
            &ms_headers,
        );
        let mut request = self.http.request(method.clone(), url.clone());
        for (k, v) in &ms_headers {
            request = request.header(k.as_str(), v.as_str());
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if let Some(md5) = content_md5 {
            request = request.header("content-md5", md5);
        }
        if method != Method::GET && method != Method::HEAD {
            request = request.body(body);
        }
        let response = request
            .header(
                "authorization",
                format!("SharedKey {}:{signature}", self.target.account),
            )
            .send()
            .await
            .map_err(reqwest_failure)?;
        if response.status().is_success() {
            return Ok(response);
        }
        // HEAD answers carry no body: the code is in a header.
        if let Some(code) = response.headers().get("x-ms-error-code") {
            let code = code.to_str().unwrap_or("").to_string();
            let f = response_failure(response, describe).await;
            return Err(match f {
                Failure::Permanent(m) if !m.contains(&code) => {
                    Failure::Permanent(format!("{m} ({code})"))
                }
                Failure::Transient(m) if !m.contains(&code) => {
                    Failure::Transient(format!("{m} ({code})"))
                }
                f => f,
            });
        }
        Err(response_failure(response, describe).await)
    }

    /// Shared Key signature (Blob service, version 2015-02-21 and later:
    /// an empty Content-Length for an empty body).
    fn sign(
        &self,
        method: &Method,
        url: &Url,
        length: &str,
        md5: &str,
        content_type: &str,
        ms_headers: &[(String, String)],
    ) -> String {
        let mut s = format!("{method}\n\n\n{length}\n{md5}\n{content_type}\n\n\n\n\n\n\n");
        for (k, v) in ms_headers {
            s.push_str(&format!("{k}:{}\n", v.trim()));
        }
        s.push_str(&format!("/{}{}", self.target.account, url.path()));
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        for (k, v) in params {
            s.push_str(&format!("\n{k}:{v}"));
        }
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(s.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

/// `Code: Message` from an Azure error body, first line of the message only
/// (the rest is a request id and a time).
fn describe(body: &str) -> String {
    let tag = |name: &str| -> Option<String> {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => {
            let first = message.lines().next().unwrap_or("").trim();
            format!("{code}: {first}")
        }
        (Some(code), None) => code,
        _ => body.chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length_and_no_padding() {
        let ids: Vec<String> = [0, 7, 49_999].iter().map(|&i| block_id(i)).collect();
        assert!(ids
            .iter()
            .all(|i| i.len() == ids[0].len() && !i.contains('=')));
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn error_bodies_keep_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code>\
            <Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        assert_eq!(
            describe(body),
            "AuthenticationFailed: Server failed to authenticate the request."
        );
    }
}
