//! Every failure of the compose API leaves as the one JSON error shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_api::error::{Error, ErrorDetails, ErrorKind, FieldError};
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub reason: String,
    pub field: Option<String>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 (RFC 6750).
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            reason: reason.into(),
            field: None,
            challenge: None,
        }
    }

    pub fn field(
        kind: ErrorKind,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> ApiError {
        let field = field.into();
        ApiError {
            kind,
            reason: if field.is_empty() {
                message.to_string()
            } else {
                format!("{field}: {message}")
            },
            field: Some(field),
            challenge: None,
        }
    }

    /// A request without a usable token: 401 with the Bearer challenge
    /// (`error="invalid_token"` when there was a token), or 503 when the
    /// issuer's keys cannot be read.
    pub fn unauthenticated(e: &crate::auth::AuthError) -> ApiError {
        use crate::auth::AuthError;
        let (kind, challenge) = match e {
            AuthError::Missing => (
                ErrorKind::Unauthenticated,
                r#"Bearer realm="kiln""#.to_owned(),
            ),
            AuthError::Invalid(m) => (
                ErrorKind::Unauthenticated,
                format!(
                    r#"Bearer realm="kiln", error="invalid_token", error_description="{}""#,
                    m.replace(['"', '\\'], "'")
                ),
            ),
            AuthError::Unavailable(_) => (ErrorKind::AuthUnavailable, String::new()),
        };
        ApiError {
            kind,
            reason: e.to_string(),
            field: None,
            challenge: Some(challenge).filter(|c| !c.is_empty()),
        }
    }

    /// 403 for a caller whose token lacks `scope`.
    pub fn insufficient_scope(scope: crate::auth::Scope) -> ApiError {
        ApiError {
            kind: ErrorKind::InsufficientScope,
            reason: format!("this needs the scope {}", scope.name()),
            field: None,
            challenge: Some(format!(
                r#"Bearer realm="kiln", error="insufficient_scope", scope="{}""#,
                scope.name()
            )),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorKind::Internal, format!("internal error: {e}"))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::field(e.kind, e.field, e.message)
    }
}

impl From<crate::plan::PlanError> for ApiError {
    fn from(e: crate::plan::PlanError) -> ApiError {
        match e {
            crate::plan::PlanError::Request(e) => e.into(),
            crate::plan::PlanError::Jobs(e) => ApiError::internal(e),
        }
    }
}

/// A repository's or a solve's error, as the API tells it.
impl From<crate::repos::RepoError> for ApiError {
    fn from(e: crate::repos::RepoError) -> ApiError {
        use crate::repos::RepoError;
        match e {
            RepoError::Request(e) => e.into(),
            RepoError::Unsolvable(e) => ApiError::new(ErrorKind::Unsolvable, e.to_string()),
            RepoError::Unavailable(e) => {
                ApiError::new(ErrorKind::RepositoryUnavailable, e.to_string())
            }
            e @ RepoError::Internal { .. } => ApiError::internal(e),
        }
    }
}

impl From<kiln_queue::QueueError> for ApiError {
    fn from(e: kiln_queue::QueueError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let operation_id = uuid::Uuid::new_v4().to_string();
        let status = StatusCode::from_u16(self.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(operation_id, reason = %self.reason, "request failed");
        } else {
            tracing::debug!(operation_id, reason = %self.reason, "request refused");
        }
        let mut body = Error::new(self.kind, self.reason, &operation_id);
        if let Some(f) = self.field {
            body.details = Some(ErrorDetails { field: Some(f) });
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(c) = self
            .challenge
            .and_then(|c| header::HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        response
    }
}

/// Reads a JSON request body into `T`, naming the field at fault when it
/// does not fit: unknown fields, missing fields, wrong types, bad JSON,
/// oversized bodies and other media types each get their own error.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("request body must be application/json, not {content_type:?}"),
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::BodyTooLarge,
                "request body is larger than the composer accepts (max_body_bytes)",
            )
        } else {
            ApiError::new(
                ErrorKind::InvalidJson,
                format!("reading the request body: {rejection}"),
            )
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidJson,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(
            ErrorKind::InvalidJson,
            format!("request body is not valid JSON: {inner}"),
        );
    }
    let message = inner.to_string();
    let base = if path == "." { String::new() } else { path };
    // A type that checks what it reads (an upload target) names the field
    // below the path serde was at, and the error's kind.
    if let Some(e) = FieldError::from_serde(&strip_position(&message)) {
        let field = match (base.is_empty(), e.field.is_empty()) {
            (_, true) => base,
            (true, false) => e.field,
            (false, false) => format!("{base}.{}", e.field),
        };
        return ApiError::field(e.kind, field, e.message);
    }
    let join = |name: &str| {
        // For unknown fields the path already ends with the field's name.
        if base.is_empty() {
            name.to_owned()
        } else if base == name || base.ends_with(&format!(".{name}")) {
            base.clone()
        } else {
            format!("{base}.{name}")
        }
    };
    // serde names the field inside backquotes: "unknown field `x`, expected …".
    let quoted = message.split('`').nth(1).unwrap_or("").to_owned();
    let clean = strip_position(&message);
    if message.starts_with("unknown field") {
        ApiError::field(ErrorKind::UnknownField, join(&quoted), clean)
    } else if message.starts_with("missing field") {
        ApiError::field(ErrorKind::InvalidField, join(&quoted), clean)
    } else {
        ApiError::field(ErrorKind::InvalidField, base, clean)
    }
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
