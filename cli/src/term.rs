//! Text from the network on a terminal: build logs, reasons and package
//! names come from workers, package databases and composers, and a control
//! character among them (an escape sequence) could drive the terminal that
//! shows them. Each one is shown as `?`; tabs stay.

use std::borrow::Cow;

/// `text` with every control character but tab as `?`.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_are_shown_as_question_marks() {
        assert_eq!(shown("plain\ttext é"), "plain\ttext é");
        assert!(matches!(shown("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            shown("\u{1b}]0;owned\u{7}\u{1b}[2J\r\n\u{9b}1m"),
            "?]0;owned??[2J???1m"
        );
    }
}
