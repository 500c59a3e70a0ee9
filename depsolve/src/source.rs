//! Repository source lines, read like apt's one-line format:
//! `deb [signed-by=/path/key.gpg] URL SUITE COMPONENT...` or `rpm URL`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::DepsolveError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Deb,
    Rpm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// Archive root, without a trailing slash (http, https or file).
    pub url: String,
    /// Debian suite (`bookworm`); empty for rpm.
    pub suite: String,
    pub components: Vec<String>,
    /// Keyring for this source's signature (`signed-by=`).
    pub signed_by: Option<PathBuf>,
    /// `trusted=yes`: do not check the signature (checksums still are).
    pub trusted: bool,
    /// `check-valid-until=no` turns off the Release expiry check (for
    /// archived snapshots), as in apt.
    pub check_valid_until: bool,
}

impl FromStr for Source {
    type Err = DepsolveError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = |detail: &str| DepsolveError::BadSource {
            line: line.to_string(),
            detail: detail.to_string(),
        };
        let mut rest = line.trim();
        let (kind_word, after) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected 'deb URL SUITE COMPONENT...' or 'rpm URL'"))?;
        let kind = match kind_word {
            "deb" => SourceKind::Deb,
            "rpm" => SourceKind::Rpm,
            other => {
                return Err(bad(&format!(
                    "unknown source type '{other}' (expected deb or rpm)"
                )))
            }
        };
        rest = after.trim_start();
        let mut signed_by = None;
        let mut trusted = false;
        let mut check_valid_until = true;
        if let Some(opts) = rest.strip_prefix('[') {
            let (opts, after) = opts
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in options"))?;
            for opt in opts.split_whitespace() {
                match opt.split_once('=') {
                    Some(("signed-by", v)) => signed_by = Some(PathBuf::from(v)),
                    Some(("trusted", v)) => trusted = v == "yes",
                    Some(("check-valid-until", v)) => check_valid_until = v != "no",
                    Some(("arch", _)) => {}
                    _ => return Err(bad(&format!("unsupported option '{opt}'"))),
                }
            }
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let url = words
            .next()
            .ok_or_else(|| bad("missing URL"))?
            .trim_end_matches('/')
            .to_string();
        if !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("file://"))
        {
            return Err(bad("URL must start with http://, https:// or file://"));
        }
        let (suite, components) = match kind {
            SourceKind::Deb => {
                let suite = words
                    .next()
                    .ok_or_else(|| bad("missing suite"))?
                    .to_string();
                let components: Vec<String> = words.map(String::from).collect();
                if components.is_empty() && !suite.ends_with('/') {
                    return Err(bad("missing component"));
                }
                (suite, components)
            }
            SourceKind::Rpm => {
                if words.next().is_some() {
                    return Err(bad("rpm sources take only a URL"));
                }
                (String::new(), Vec::new())
            }
        };
        Ok(Source {
            kind,
            url,
            suite,
            components,
            signed_by,
            trusted,
            check_valid_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb_lines() {
        let s: Source =
            "deb [signed-by=/k.gpg] http://deb.debian.org/debian/ bookworm main contrib"
                .parse()
                .unwrap();
        assert_eq!(s.kind, SourceKind::Deb);
        assert_eq!(s.url, "http://deb.debian.org/debian");
        assert_eq!(s.suite, "bookworm");
        assert_eq!(s.components, vec!["main", "contrib"]);
        assert_eq!(s.signed_by, Some(PathBuf::from("/k.gpg")));
        let t: Source = "deb [trusted=yes] file:///srv/repo stable main"
            .parse()
            .unwrap();
        assert!(t.trusted);
    }

    #[test]
    fn rejects_bad_lines_with_the_reason() {
        for (line, why) in [
            ("deb ftp://x bookworm main", "URL must start"),
            ("deb http://x bookworm", "missing component"),
            ("foo http://x", "unknown source type"),
            ("deb [bogus] http://x s main", "unsupported option"),
        ] {
            let e = line.parse::<Source>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(line), "{e}");
        }
        let r: Source = "rpm file:///repo".parse().unwrap();
        assert_eq!(r.kind, SourceKind::Rpm);
    }
}
