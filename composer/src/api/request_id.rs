//! Every compose API request has a request id: the caller's `X-Request-Id`
//! when it is a sane token ([`RequestId::parse`]), otherwise a fresh UUID (a
//! header that is not one is ignored, never echoed). [`assign`] puts it in
//! the request's extensions before anything else sees the request, so the
//! trace span of the request ([`span`]) and the handlers
//! ([`super::extract::ReqId`]) read the same id, and sets it on every
//! response, errors included. The jobs a request makes carry it (§5), and
//! so on to the worker and the executor.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use kiln_api::request_id::{RequestId, HEADER};

/// The request's id, from its header or made here; on the response too.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    // Always a valid header value: the id is visible ASCII only.
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

/// The trace span of one request: every log line of the request is in it,
/// and carries its `request_id`.
pub fn span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(RequestId::as_str)
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
        request_id = %id,
    )
}
