//! A token or client secret: kept out of every debug print and error.

use serde::{Deserialize, Serialize};

/// A bearer token, refresh token, device code or client secret. It has no
/// `Display`, and its `Debug` shows only that it is there; the one way to
/// the text is [`Secret::expose`], called where it is sent or stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Text from the provider (an error description, a subject, a user code)
/// as it may be printed on a terminal: control characters, which could move
/// the cursor or rewrite earlier lines, become `?`, and it is cut at 300
/// characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_in_a_debug_print() {
        let s = Secret::new("eyJhbGciOi.secret.value");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"eyJhbGciOi.secret.value\""
        );
    }

    #[test]
    fn provider_text_cannot_drive_the_terminal() {
        assert_eq!(printable("bad\x1b[2Jclient\n"), "bad?[2Jclient?");
        assert_eq!(printable(&"x".repeat(400)).chars().count(), 301);
    }
}
