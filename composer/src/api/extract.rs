//! What a handler receives instead of raw headers and bodies: the caller,
//! and a JSON body already read into its type. Their rejections are the
//! API's one error shape, so no handler parses a header or a body itself.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use kiln_api::error::ErrorKind;
use serde::de::DeserializeOwned;

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
        let query = parts.uri.query().unwrap_or("");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let n = || {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::field(
                        ErrorKind::InvalidQuery,
                        k.to_string(),
                        format!("{v:?} is not a non-negative number"),
                    )
                })
            };
            match k.as_ref() {
                "page" => page = n()?,
                "size" => size = n()?.clamp(1, 1000),
                other => {
                    return Err(ApiError::field(
                        ErrorKind::InvalidQuery,
                        other,
                        "unknown query parameter",
                    ));
                }
            }
        }
        Ok(Paging { page, size })
    }
}
