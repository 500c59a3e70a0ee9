//! The one error shape of the compose API, and the catalog of its errors.
//!
//! As in the reference, an error is an object reference (`id`, `kind`, `href`)
//! with a `code`, a human `reason` and the `operation_id` of the request; kiln
//! puts the offending field in `details.field` and names it in `reason` too.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::API_PREFIX;

/// A kind of error: a stable id, an HTTP status and a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidJson,
    UnknownField,
    InvalidField,
    BodyTooLarge,
    UnsupportedMediaType,
    UnknownDistribution,
    UnknownArchitecture,
    UnknownImageType,
    InvalidCustomization,
    InvalidRepository,
    InvalidUploadTarget,
    InvalidComposeId,
    ComposeNotFound,
    ComposeUnfinished,
    InvalidChannel,
    DistributionNotFound,
    ErrorNotFound,
    ResourceNotFound,
    MethodNotAllowed,
    InvalidQuery,
    Unsolvable,
    RepositoryUnavailable,
    LeaseNotFound,
    JobCanceled,
    RepositoryNotAllowed,
    Unauthenticated,
    InsufficientScope,
    AuthUnavailable,
    BootNotGranted,
    CertificateRevoked,
    BootChangeStarted,
    BootChangeNotFound,
    Internal,
}

impl ErrorKind {
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidJson,
        ErrorKind::UnknownField,
        ErrorKind::InvalidField,
        ErrorKind::BodyTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::UnknownDistribution,
        ErrorKind::UnknownArchitecture,
        ErrorKind::UnknownImageType,
        ErrorKind::InvalidCustomization,
        ErrorKind::InvalidRepository,
        ErrorKind::InvalidUploadTarget,
        ErrorKind::InvalidComposeId,
        ErrorKind::ComposeNotFound,
        ErrorKind::ComposeUnfinished,
        ErrorKind::InvalidChannel,
        ErrorKind::DistributionNotFound,
        ErrorKind::ErrorNotFound,
        ErrorKind::ResourceNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::InvalidQuery,
        ErrorKind::Unsolvable,
        ErrorKind::RepositoryUnavailable,
        ErrorKind::LeaseNotFound,
        ErrorKind::JobCanceled,
        ErrorKind::RepositoryNotAllowed,
        ErrorKind::Unauthenticated,
        ErrorKind::InsufficientScope,
        ErrorKind::AuthUnavailable,
        ErrorKind::BootNotGranted,
        ErrorKind::CertificateRevoked,
        ErrorKind::BootChangeStarted,
        ErrorKind::BootChangeNotFound,
        ErrorKind::Internal,
    ];

    /// The stable numeric id (never reused).
    pub fn id(self) -> u32 {
        match self {
            ErrorKind::InvalidJson => 1,
            ErrorKind::UnknownField => 2,
            ErrorKind::InvalidField => 3,
            ErrorKind::BodyTooLarge => 4,
            ErrorKind::UnsupportedMediaType => 5,
            ErrorKind::UnknownDistribution => 6,
            ErrorKind::UnknownArchitecture => 7,
            ErrorKind::UnknownImageType => 8,
            ErrorKind::InvalidCustomization => 9,
            ErrorKind::InvalidRepository => 10,
            ErrorKind::InvalidUploadTarget => 11,
            ErrorKind::InvalidComposeId => 12,
            ErrorKind::ComposeNotFound => 13,
            ErrorKind::ComposeUnfinished => 14,
            ErrorKind::InvalidChannel => 15,
            ErrorKind::DistributionNotFound => 16,
            ErrorKind::ErrorNotFound => 17,
            ErrorKind::ResourceNotFound => 18,
            ErrorKind::MethodNotAllowed => 19,
            ErrorKind::InvalidQuery => 20,
            ErrorKind::Unsolvable => 21,
            ErrorKind::RepositoryUnavailable => 22,
            ErrorKind::LeaseNotFound => 23,
            ErrorKind::JobCanceled => 24,
            ErrorKind::RepositoryNotAllowed => 25,
            ErrorKind::Unauthenticated => 26,
            ErrorKind::InsufficientScope => 27,
            ErrorKind::AuthUnavailable => 28,
            ErrorKind::BootNotGranted => 29,
            ErrorKind::CertificateRevoked => 30,
            ErrorKind::BootChangeStarted => 31,
            ErrorKind::BootChangeNotFound => 32,
            ErrorKind::Internal => 1000,
        }
    }

    pub fn from_id(id: u32) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.id() == id)
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::ComposeNotFound
            | ErrorKind::DistributionNotFound
            | ErrorKind::ErrorNotFound
            | ErrorKind::ResourceNotFound
            | ErrorKind::LeaseNotFound
            | ErrorKind::BootChangeNotFound => 404,
            ErrorKind::ComposeUnfinished
            | ErrorKind::JobCanceled
            | ErrorKind::BootChangeStarted => 409,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RepositoryNotAllowed
            | ErrorKind::InsufficientScope
            | ErrorKind::BootNotGranted
            | ErrorKind::CertificateRevoked => 403,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::AuthUnavailable => 503,
            ErrorKind::RepositoryUnavailable => 502,
            ErrorKind::Internal => 500,
            _ => 400,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "Request body is not valid JSON",
            ErrorKind::UnknownField => "Request has a field kiln does not know",
            ErrorKind::InvalidField => "Request field is missing or has the wrong type",
            ErrorKind::BodyTooLarge => "Request body is too large",
            ErrorKind::UnsupportedMediaType => "Request body must be application/json",
            ErrorKind::UnknownDistribution => "Unknown distribution",
            ErrorKind::UnknownArchitecture => "Architecture not supported by the distribution",
            ErrorKind::UnknownImageType => {
                "Image type not supported for the distribution and architecture"
            }
            ErrorKind::InvalidCustomization => "Invalid customization",
            ErrorKind::InvalidRepository => "Invalid repository",
            ErrorKind::InvalidUploadTarget => "Invalid upload target",
            ErrorKind::InvalidComposeId => "Compose id is not a UUID",
            ErrorKind::ComposeNotFound => "Compose not found",
            ErrorKind::ComposeUnfinished => "Compose has not finished: cancel it first",
            ErrorKind::InvalidChannel => "Invalid channel",
            ErrorKind::DistributionNotFound => "Distribution not found",
            ErrorKind::ErrorNotFound => "Error id not found",
            ErrorKind::ResourceNotFound => "Resource not found",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::InvalidQuery => "Invalid query parameter",
            ErrorKind::Unsolvable => "The packages cannot be installed together",
            ErrorKind::RepositoryUnavailable => "A repository could not be read or verified",
            ErrorKind::LeaseNotFound => {
                "No job is leased under this token (taken back, or already finished)"
            }
            ErrorKind::JobCanceled => "The job was canceled: stop working on it",
            ErrorKind::RepositoryNotAllowed => {
                "The repository is outside the composer's repository policy"
            }
            ErrorKind::Unauthenticated => "A valid bearer token is needed",
            ErrorKind::InsufficientScope => "The token does not grant this",
            ErrorKind::AuthUnavailable => "The token issuer's keys cannot be read",
            ErrorKind::BootNotGranted => "Boot delivery outside the tenant's boot grants",
            ErrorKind::CertificateRevoked => "The worker's certificate is no longer valid",
            ErrorKind::BootChangeStarted => "The boot change has started or ended",
            ErrorKind::BootChangeNotFound => "Boot change not found",
            ErrorKind::Internal => "Internal server error",
        }
    }

    pub fn code(self) -> String {
        format!("IMAGE-BUILDER-COMPOSER-{}", self.id())
    }

    pub fn href(self) -> String {
        format!("{API_PREFIX}/errors/{}", self.id())
    }
}

/// The error object of every failed request.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Error {
    pub id: String,
    pub kind: String,
    pub href: String,
    pub code: String,
    pub reason: String,
    pub operation_id: String,
    /// `{"field": "<json path>"}` when a field of the request was at fault.
    pub details: Option<ErrorDetails>,
}

/// What an error says beyond its reason.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetails {
    /// The JSON path (or header name) of the field at fault.
    pub field: Option<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, reason: impl Into<String>, operation_id: &str) -> Error {
        Error {
            id: kind.id().to_string(),
            kind: "Error".into(),
            href: kind.href(),
            code: kind.code(),
            reason: reason.into(),
            operation_id: operation_id.into(),
            details: None,
        }
    }

    /// The catalog entry, as `GET /errors/{id}` returns it.
    pub fn catalog(kind: ErrorKind) -> Error {
        Error::new(kind, kind.title(), "")
    }
}

/// `GET /errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorList {
    pub kind: String,
    pub page: i64,
    pub size: i64,
    pub total: i64,
    pub items: Vec<Error>,
}

/// A problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorKind,
    /// JSON path of the field, e.g. `customizations.users[0].name`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(
        kind: ErrorKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> FieldError {
        FieldError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The reason sentence: the field first, then what is wrong with it.
    pub fn reason(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// How a [`FieldError`] travels through serde, whose errors are text:
/// `` `field`: message (IMAGE-BUILDER-COMPOSER-<id>) ``.
const SERDE_CODE: &str = " (IMAGE-BUILDER-COMPOSER-";

impl FieldError {
    /// This error as a deserializer's error, for a type that checks what it
    /// reads (an upload target). The field is relative to where the
    /// deserializer was; [`FieldError::from_serde`] reads it back.
    pub fn into_serde<E: serde::de::Error>(self) -> E {
        E::custom(format_args!(
            "`{}`: {}{SERDE_CODE}{})",
            self.field,
            self.message,
            self.kind.id()
        ))
    }

    /// The error [`FieldError::into_serde`] wrote, from the message of the
    /// deserializer's error (without serde_json's position suffix).
    pub fn from_serde(message: &str) -> Option<FieldError> {
        let (rest, id) = message.strip_suffix(')')?.rsplit_once(SERDE_CODE)?;
        let kind = ErrorKind::from_id(id.parse().ok()?)?;
        let (field, message) = rest.strip_prefix('`')?.split_once("`: ")?;
        Some(FieldError::new(kind, field, message))
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_survives_serde() {
        let e = FieldError::new(
            ErrorKind::InvalidUploadTarget,
            "upload_options.nodes.xnames[1]",
            "nodes.xnames[1]: \"a: b\" is not a node xname (expected x…)",
        );
        let de: serde_json::Error = e.clone().into_serde();
        assert_eq!(FieldError::from_serde(&de.to_string()), Some(e));
        let empty = FieldError::new(ErrorKind::InvalidUploadTarget, "", "unknown field `x`");
        let text = empty.clone().into_serde::<serde_json::Error>().to_string();
        assert_eq!(FieldError::from_serde(&text), Some(empty));
        assert_eq!(FieldError::from_serde("missing field `region`"), None);
    }
}
