//! What a handler receives instead of raw headers, bodies, paths and
//! queries: the caller, a JSON body already read into its type, a compose id
//! already a UUID, and each query already its typed parameters. Their
//! rejections are the API's one error shape, so no handler parses a header,
//! a body, a path segment or a query itself.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use kiln_api::error::ErrorKind;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{parse_json, ApiError};
use crate::AppState;

/// The header that names the channel (tenant) of a request.
pub const CHANNEL_HEADER: &str = "x-kiln-channel";

/// Who is asking. Today the caller names its channel (tenant) with
/// `X-Kiln-Channel`, or gets the composer's default; this is where an
/// authenticated identity (and the tenant its credentials carry) will be
/// established, without any handler changing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The channel whose composes and blueprints the caller sees and makes.
    pub channel: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(CHANNEL_HEADER) else {
            return Ok(Caller {
                channel: state.config.default_channel.clone(),
            });
        };
        let s = v.to_str().unwrap_or("");
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Caller {
                channel: s.to_owned(),
            })
        } else {
            Err(ApiError::field(
                ErrorKind::InvalidChannel,
                "X-Kiln-Channel",
                "a channel is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'",
            ))
        }
    }
}

/// A JSON request body read into `T`: `application/json` only, within the
/// body limit, and a field that does not fit is named by its JSON path
/// ([`parse_json`]).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await;
        parse_json(&headers, body).map(JsonBody)
    }
}

/// `page` and `size` of a list query (`?page=0&size=100`; size 1 to 1000);
/// any other parameter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub size: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let (mut page, mut size) = (0i64, 100i64);
        for (k, v) in query_pairs(parts, &["page", "size"])? {
            let n = v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::field(
                    ErrorKind::InvalidQuery,
                    k.as_str(),
                    format!("{v:?} is not a non-negative number"),
                )
            })?;
            if k == "page" {
                page = n;
            } else {
                size = n.clamp(1, 1000);
            }
        }
        Ok(Paging { page, size })
    }
}

/// The query's parameters in order, each of them one of `known`; any other
/// parameter is refused, named.
fn query_pairs(parts: &Parts, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let query = parts.uri.query().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            if known.contains(&k.as_ref()) {
                Ok((k.into_owned(), v.into_owned()))
            } else {
                Err(ApiError::field(
                    ErrorKind::InvalidQuery,
                    k.as_ref(),
                    format!("unknown query parameter (known: {})", known.join(", ")),
                ))
            }
        })
        .collect()
}

/// The compose named by the path's `{id}`: a UUID, or 400 naming `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComposePath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ComposePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Only a route without `{id}` could fail this: a bug, not a request.
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::internal)?;
        Uuid::parse_str(&id).map(ComposePath).map_err(|_| {
            ApiError::field(
                ErrorKind::InvalidComposeId,
                "id",
                format!("{id:?} is not a UUID"),
            )
        })
    }
}

/// `?version=N` of a blueprint read: that version, or the latest without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlueprintVersion(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for BlueprintVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut version = None;
        for (_, v) in query_pairs(parts, &["version"])? {
            version = Some(v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::field(
                    ErrorKind::InvalidQuery,
                    "version",
                    format!("{v:?} is not a version number (1 or more)"),
                )
            })?);
        }
        Ok(BlueprintVersion(version))
    }
}

/// The filters of a distribution read (`?image_type=…&architecture=…`, each
/// repeatable): empty means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistributionFilter {
    pub image_types: Vec<String>,
    pub architectures: Vec<String>,
}

impl DistributionFilter {
    pub fn image_type(&self, name: &str) -> bool {
        self.image_types.is_empty() || self.image_types.iter().any(|t| t == name)
    }

    pub fn architecture(&self, name: &str) -> bool {
        self.architectures.is_empty() || self.architectures.iter().any(|a| a == name)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DistributionFilter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut filter = DistributionFilter::default();
        for (k, v) in query_pairs(parts, &["image_type", "architecture"])? {
            if k == "image_type" {
                filter.image_types.push(v);
            } else {
                filter.architectures.push(v);
            }
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        Request::builder()
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn refused(e: ApiError) -> (u16, String) {
        (e.kind.http_status(), e.field.unwrap_or_default())
    }

    #[tokio::test]
    async fn queries_are_typed_and_unknown_parameters_named() {
        let p = Paging::from_request_parts(&mut parts("/c?page=2&size=5000"), &()).await;
        assert_eq!(
            p.ok(),
            Some(Paging {
                page: 2,
                size: 1000
            })
        );
        let e = Paging::from_request_parts(&mut parts("/c?page=-1"), &())
            .await
            .expect_err("negative page");
        assert_eq!(refused(e), (400, "page".into()));

        let v = BlueprintVersion::from_request_parts(&mut parts("/b?version=3"), &()).await;
        assert_eq!(v.ok(), Some(BlueprintVersion(Some(3))));
        let v = BlueprintVersion::from_request_parts(&mut parts("/b"), &()).await;
        assert_eq!(v.ok(), Some(BlueprintVersion(None)));
        for (uri, field) in [
            ("/b?version=0", "version"),
            ("/b?version=x", "version"),
            ("/b?versio=1", "versio"),
        ] {
            let e = BlueprintVersion::from_request_parts(&mut parts(uri), &())
                .await
                .expect_err(uri);
            assert_eq!(refused(e), (400, field.into()), "{uri}");
        }

        let f = DistributionFilter::from_request_parts(
            &mut parts("/d?image_type=pxe&image_type=tar&architecture=x86_64"),
            &(),
        )
        .await
        .expect("filter");
        assert!(f.image_type("tar") && !f.image_type("qcow2"));
        assert!(f.architecture("x86_64") && !f.architecture("aarch64"));
        let all = DistributionFilter::default();
        assert!(all.image_type("anything") && all.architecture("anything"));
        let e = DistributionFilter::from_request_parts(&mut parts("/d?arch=x86_64"), &())
            .await
            .expect_err("unknown filter");
        assert_eq!(refused(e), (400, "arch".into()));
    }
}
