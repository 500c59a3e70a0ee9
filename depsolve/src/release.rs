//! Debian `Release`/`InRelease` files: OpenPGP verification with `gpgv`
//! against a keyring file, and the SHA256 list that every fetched index
//! is checked against.

use std::collections::HashMap;
use std::path::Path;

use crate::error::DepsolveError;

/// The checksummed files a Release lists: path -> (size, sha256).
#[derive(Debug, Default)]
pub struct Release {
    pub files: HashMap<String, (u64, String)>,
    /// `Valid-Until`, if the archive sets one (protects against replays).
    pub valid_until: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl Release {
    pub fn parse(file: &str, text: &str) -> Result<Release, DepsolveError> {
        let mut files = HashMap::new();
        let mut in_sha256 = false;
        let mut valid_until = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("Valid-Until:") {
                // Debian writes "UTC" where RFC 2822 wants "+0000".
                let v = v.trim().replace(" UTC", " +0000");
                valid_until = Some(chrono::DateTime::parse_from_rfc2822(&v).map_err(|e| {
                    DepsolveError::BadRelease {
                        file: file.to_string(),
                        detail: format!("bad Valid-Until '{}': {e}", v),
                    }
                })?);
            }
            if !line.starts_with(' ') {
                in_sha256 = line.trim_end() == "SHA256:";
                continue;
            }
            if !in_sha256 {
                continue;
            }
            let mut w = line.split_whitespace();
            let (Some(hash), Some(size), Some(path)) = (w.next(), w.next(), w.next()) else {
                return Err(DepsolveError::BadRelease {
                    file: file.to_string(),
                    detail: format!("malformed SHA256 line '{}'", line.trim()),
                });
            };
            let size = size.parse().map_err(|_| DepsolveError::BadRelease {
                file: file.to_string(),
                detail: format!("bad size in '{}'", line.trim()),
            })?;
            files.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
        }
        if files.is_empty() {
            return Err(DepsolveError::BadRelease {
                file: file.to_string(),
                detail: "no SHA256 checksums".into(),
            });
        }
        Ok(Release { files, valid_until })
    }
}

fn sig_err(file: &str, detail: impl Into<String>) -> DepsolveError {
    DepsolveError::Signature {
        file: file.to_string(),
        detail: detail.into(),
    }
}

/// Runs gpgv; `Ok(())` only for a good signature by a key in `keyring`.
async fn gpgv(file: &str, keyring: &Path, args: &[&Path]) -> Result<(), DepsolveError> {
    let out = tokio::process::Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg("--status-fd")
        .arg("1")
        .args(args)
        .output()
        .await
        .map_err(|e| sig_err(file, format!("cannot run gpgv (install gnupg/gpgv): {e}")))?;
    let status = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && status.lines().any(|l| l.starts_with("[GNUPG:] VALIDSIG")) {
        return Ok(());
    }
    let reason = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .filter(|l| {
            l.starts_with("BADSIG")
                || l.starts_with("NO_PUBKEY")
                || l.starts_with("ERRSIG")
                || l.starts_with("NODATA")
                || l.starts_with("EXPKEYSIG")
                || l.starts_with("REVKEYSIG")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(sig_err(
        file,
        if reason.is_empty() {
            format!(
                "gpgv rejected it with keyring {}: {}",
                keyring.display(),
                stderr.trim()
            )
        } else {
            format!("{reason} (keyring {})", keyring.display())
        },
    ))
}

/// Verifies an inline-signed `InRelease` and returns the signed text only
/// (never text outside the signature).
pub async fn verify_inline(
    file: &str,
    data: &[u8],
    keyring: &Path,
) -> Result<String, DepsolveError> {
    let dir = tempfile::tempdir().map_err(|e| sig_err(file, format!("temp dir: {e}")))?;
    let input = dir.path().join("InRelease");
    let output = dir.path().join("Release");
    tokio::fs::write(&input, data)
        .await
        .map_err(|e| sig_err(file, e.to_string()))?;
    gpgv(file, keyring, &[Path::new("--output"), &output, &input]).await?;
    let text = tokio::fs::read(&output)
        .await
        .map_err(|e| sig_err(file, e.to_string()))?;
    String::from_utf8(text).map_err(|_| sig_err(file, "signed text is not UTF-8"))
}

/// Verifies `Release` against its detached `Release.gpg`.
pub async fn verify_detached(
    file: &str,
    data: &[u8],
    signature: &[u8],
    keyring: &Path,
) -> Result<(), DepsolveError> {
    let dir = tempfile::tempdir().map_err(|e| sig_err(file, format!("temp dir: {e}")))?;
    let d = dir.path().join("Release");
    let s = dir.path().join("Release.gpg");
    tokio::fs::write(&d, data)
        .await
        .map_err(|e| sig_err(file, e.to_string()))?;
    tokio::fs::write(&s, signature)
        .await
        .map_err(|e| sig_err(file, e.to_string()))?;
    gpgv(file, keyring, &[&s, &d]).await
}

/// The text of a clear-signed message without checking it (`trusted=yes`).
pub fn strip_clearsign(text: &str) -> String {
    let Some(rest) = text.strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----") else {
        return text.to_string();
    };
    let body = rest.split_once("\n\n").map_or("", |(_, b)| b);
    let body = body
        .split("-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or("");
    body.lines()
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_section() {
        let text = "Origin: Debian\nMD5Sum:\n abc 10 main/binary-amd64/Packages\nSHA256:\n ABCDEF 123 main/binary-amd64/Packages.xz\n 0011 5 main/binary-amd64/Release\n";
        let r = Release::parse("Release", text).unwrap();
        assert_eq!(
            r.files["main/binary-amd64/Packages.xz"],
            (123, "abcdef".to_string())
        );
        assert!(!r.files.contains_key("main/binary-amd64/Packages"));
        let e = Release::parse("dists/x/Release", "Origin: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dists/x/Release"));
    }

    #[test]
    fn reads_valid_until() {
        let text = "Valid-Until: Sat, 01 Jun 2024 10:00:00 UTC\nSHA256:\n 00 1 main/binary-amd64/Packages\n";
        let r = Release::parse("R", text).unwrap();
        assert_eq!(
            r.valid_until.unwrap().to_rfc3339(),
            "2024-06-01T10:00:00+00:00"
        );
        let bad = text.replace("Sat, 01 Jun", "Someday");
        assert!(Release::parse("dists/x/InRelease", &bad)
            .unwrap_err()
            .to_string()
            .contains("dists/x/InRelease"));
    }

    #[test]
    fn strips_clearsign_armour() {
        let t = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: x\n- -dash\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(strip_clearsign(t), "Origin: x\n-dash");
    }
}
