//! What a handler receives instead of raw headers, bodies, paths and
//! queries: the caller, a JSON body already read into its type, a compose id
//! already a UUID, and each query already its typed parameters. Their
//! rejections are the API's one error shape, so no handler parses a header,
//! a body, a path segment or a query itself.

use axum::body::Bytes;
use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use kiln_api::error::ErrorKind;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{parse_json, ApiError};
use crate::auth::{valid_tenant, AuthError, Identity, Scope};
use crate::AppState;

/// The header an admin names another tenant with.
pub const CHANNEL_HEADER: &str = "x-kiln-channel";

/// What a handler needs its caller to be allowed: one marker type per
/// [`Scope`], named in the handler's `Caller<…>`.
pub trait Need: Send + Sync {
    const SCOPE: Scope;
}

/// Reading composes, blueprints and distributions; depsolving.
#[derive(Debug)]
pub struct Read;
/// Submitting, canceling and deleting composes.
#[derive(Debug)]
pub struct Compose;
/// Storing and deleting blueprints.
#[derive(Debug)]
pub struct WriteBlueprints;

impl Need for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Need for Compose {
    const SCOPE: Scope = Scope::Compose;
}
impl Need for WriteBlueprints {
    const SCOPE: Scope = Scope::Blueprint;
}

/// Who is asking, authenticated (by [`authenticate`]) and allowed what the
/// handler needs (`N`); 403 otherwise, before the handler reads anything
/// else of the request.
#[derive(Debug)]
pub struct Caller<N: Need = Read> {
    /// The channel (tenant) whose composes and blueprints the caller sees
    /// and makes: the token's tenant, or the one an admin names with
    /// `X-Kiln-Channel`.
    pub channel: String,
    /// The token's subject, for the record.
    pub subject: Option<String>,
    need: PhantomData<N>,
}

impl<N: Need> Caller<N> {
    /// Who the caller is, as records of what it asked for name it.
    pub fn requester(&self) -> kiln_api::boot::Requester {
        kiln_api::boot::Requester {
            tenant: self.channel.clone(),
            subject: self.subject.clone(),
        }
    }

    /// The same caller, for a function that needs less.
    pub fn reader(&self) -> Caller<Read> {
        Caller {
            channel: self.channel.clone(),
            subject: self.subject.clone(),
            need: PhantomData,
        }
    }
}

impl<N: Need> FromRequestParts<AppState> for Caller<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        let identity = parts
            .extensions
            .get::<Identity>()
            .ok_or_else(|| ApiError::internal("a route outside authentication"))?;
        if !identity.has(N::SCOPE) {
            return Err(ApiError::insufficient_scope(N::SCOPE));
        }
        let channel = match parts.headers.get(CHANNEL_HEADER) {
            None => identity.tenant.clone(),
            Some(_) if !identity.has(Scope::Admin) => {
                return Err(ApiError::field(
                    ErrorKind::InsufficientScope,
                    "X-Kiln-Channel",
                    format!(
                        "acting in another tenant needs the scope {}",
                        Scope::Admin.name()
                    ),
                ))
            }
            Some(v) => match v.to_str() {
                Ok(s) if valid_tenant(s) => s.to_owned(),
                _ => {
                    return Err(ApiError::field(
                        ErrorKind::InvalidChannel,
                        "X-Kiln-Channel",
                        "a channel is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'",
                    ))
                }
            },
        };
        Ok(Caller {
            channel,
            subject: identity.subject.clone(),
            need: PhantomData,
        })
    }
}

/// Establishes the caller of every protected route: with `[auth]`, the
/// bearer token's identity (401 without a valid one); without, the one
/// tenant. The identity goes into the request's extensions for [`Caller`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let identity = match &state.auth {
        None => Identity::unauthenticated(&state.config.default_channel),
        Some(verifier) => {
            let token = bearer(req.headers()).map_err(|e| ApiError::unauthenticated(&e))?;
            verifier
                .verify(token)
                .await
                .map_err(|e| ApiError::unauthenticated(&e))?
        }
    };
    let tenant = crate::metrics::RequestTenant(identity.tenant.clone());
    req.extensions_mut().insert(identity);
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(tenant);
    Ok(resp)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Invalid(
            "the Authorization header is not \"Bearer <token>\"".into(),
        )),
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

impl Paging {
    /// Takes `page` or `size` from one query pair.
    fn read(&mut self, k: &str, v: &str) -> Result<(), ApiError> {
        let n = v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::field(
                ErrorKind::InvalidQuery,
                k,
                format!("{v:?} is not a non-negative number"),
            )
        })?;
        if k == "page" {
            self.page = n;
        } else {
            self.size = n.clamp(1, 1000);
        }
        Ok(())
    }
}

impl Default for Paging {
    fn default() -> Paging {
        Paging { page: 0, size: 100 }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut paging = Paging::default();
        for (k, v) in query_pairs(parts, &["page", "size"])? {
            paging.read(&k, &v)?;
        }
        Ok(paging)
    }
}

/// The request id of this request ([`super::request_id::assign`] made or
/// checked it), for the jobs the request makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqId(pub kiln_api::request_id::RequestId);

impl<S: Send + Sync> FromRequestParts<S> for ReqId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Always there behind the router's layer; a handler called
        // otherwise still gets an id of its own.
        Ok(ReqId(
            parts
                .extensions
                .get::<kiln_api::request_id::RequestId>()
                .cloned()
                .unwrap_or_else(kiln_api::request_id::RequestId::generate),
        ))
    }
}

/// The boot history's query: paging, and `?node=<xname>` for one node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub paging: Paging,
    pub node: Option<kiln_api::nodes::Xname>,
}

impl<S: Send + Sync> FromRequestParts<S> for HistoryQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut q = HistoryQuery {
            paging: Paging::default(),
            node: None,
        };
        for (k, v) in query_pairs(parts, &["page", "size", "node"])? {
            if k == "node" {
                let x = kiln_api::nodes::Xname::parse("node", &v)
                    .map_err(|e| ApiError::field(ErrorKind::InvalidQuery, "node", e.to_string()))?;
                q.node = Some(x);
            } else {
                q.paging.read(&k, &v)?;
            }
        }
        Ok(q)
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

/// The compose (or boot change) named by the path's `{id}`: a UUID, or
/// 400 naming `id`.
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
