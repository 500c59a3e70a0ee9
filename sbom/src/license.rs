//! A package's declared license as SPDX can carry it: an SPDX expression
//! as it is, anything else (rpm's `GPLv2+`, `BSD with advertising`) under
//! a `LicenseRef-` id of this document, with the text as the package
//! declares it.

use kiln_api::sbom::ExtractedLicensingInfo;

/// The `licenseDeclared` value for `declared`, and the extracted licensing
/// info it needs when it is not an SPDX expression.
pub(crate) fn declared(declared: &str) -> (String, Option<ExtractedLicensingInfo>) {
    let text = declared.trim();
    if text.is_empty() || text == "(none)" {
        return (kiln_api::sbom::NOASSERTION.into(), None);
    }
    // References to licenses of other documents (or ones this document
    // does not define) would not resolve: only list licenses pass as they are.
    let refers = text.contains("LicenseRef-") || text.contains("DocumentRef-");
    if !refers && spdx::Expression::parse(text).is_ok() {
        return (text.to_owned(), None);
    }
    let id = license_ref(text);
    let info = ExtractedLicensingInfo {
        license_id: id.clone(),
        extracted_text: text.to_owned(),
        name: text.to_owned(),
    };
    (id, Some(info))
}

/// `LicenseRef-` + the text with every character SPDX ids do not allow
/// replaced by `-`, + a short digest of the text, so that two texts that
/// differ only in such characters get different ids.
fn license_ref(text: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let mut id: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    id.push('-');
    id.push_str(&digest[..8]);
    format!("LicenseRef-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_pass_and_the_rest_is_extracted() {
        for ok in [
            "MIT",
            "GPL-2.0-or-later AND BSD-3-Clause",
            "(MIT OR Apache-2.0)",
        ] {
            assert_eq!(declared(ok), (ok.to_owned(), None), "{ok}");
        }
        assert_eq!(declared("").0, "NOASSERTION");
        assert_eq!(declared("(none)").0, "NOASSERTION");
        let (id, info) = declared("GPLv2+ and BSD with advertising");
        assert!(
            id.starts_with("LicenseRef-GPLv2--and-BSD-with-advertising-"),
            "{id}"
        );
        let info = info.unwrap();
        assert_eq!(info.license_id, id);
        assert_eq!(info.extracted_text, "GPLv2+ and BSD with advertising");
        // Same text, same id; texts differing only in replaced characters differ.
        assert_eq!(declared("GPLv2+").0, declared("GPLv2+").0);
        assert_ne!(declared("GPLv2+").0, declared("GPLv2/").0);
        // A reference this document does not define is not passed through.
        assert!(declared("LicenseRef-mine")
            .0
            .starts_with("LicenseRef-LicenseRef-mine-"));
    }
}
