//! The export check: no private key material leaves the executor unless
//! the manifest says it is meant to be there. Package scripts generate
//! keys (openssh-server's host keys, ssl-cert's snakeoil key) that every
//! node booting the image would share; the manifest's `kiln.identity.clean`
//! stage removes the known ones, and this check refuses whatever else a
//! tree still holds.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Files up to this size are read for PEM blocks: keys are a few KiB, and
/// reading kernel modules and firmware would only cost time.
const MAX_SCANNED: u64 = 1 << 20;

/// Private key material found in a tree, by absolute path in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    pub path: String,
    pub kind: FindingKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FindingKind {
    /// A file named as OpenSSH names host keys.
    HostKeyName,
    /// A PEM private key block in the file's bytes (which may be an
    /// archive holding a key file).
    PemBlock,
}

/// OpenSSH's host key names: `ssh_host_<type>_key` (the `.pub` halves are public).
fn is_host_key_name(name: &str) -> bool {
    name.strip_prefix("ssh_host_")
        .and_then(|rest| rest.strip_suffix("_key"))
        .is_some_and(|kind| !kind.is_empty())
}

/// A PEM block whose label ends in `PRIVATE KEY` (PKCS#1/#8, SEC1,
/// OpenSSH, encrypted PKCS#8, PGP's `PRIVATE KEY BLOCK`) followed by a
/// base64 body. The body is required: programs that write keys carry the
/// bare armour line as a string constant.
pub fn holds_private_key(data: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let finder = memchr::memmem::Finder::new(BEGIN);
    let mut at = 0;
    while let Some(i) = finder.find(&data[at..]) {
        let rest = &data[at + i + BEGIN.len()..];
        at += i + BEGIN.len();
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let label = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        let Some(label) = label.strip_suffix(b"-----") else {
            continue;
        };
        let is_private = label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK");
        if !is_private
            || !label
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ')
        {
            continue;
        }
        if body_follows(&rest[end..]) {
            return true;
        }
    }
    false
}

/// After the armour line: optional `Name: value` headers and blank lines,
/// then a line of at least 16 base64 characters.
fn body_follows(after: &[u8]) -> bool {
    for line in after.split(|&b| b == b'\n').skip(1).take(8) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.contains(&b':') {
            continue;
        }
        return line.len() >= 16
            && line
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    }
    false
}

/// Every private key in `tree`, found by name (`ssh_host_*_key`) or by
/// content. Links are not followed: only what the tree itself holds counts.
pub fn scan(tree: &Path) -> std::io::Result<Vec<Finding>> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut findings = Vec::new();
    let mut dirs = vec![(tree.to_path_buf(), String::new())];
    while let Some((dir, shown)) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{shown}/{name}");
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push((entry.path(), path));
            } else if kind.is_file() {
                if is_host_key_name(&name) {
                    findings.push(Finding {
                        path,
                        kind: FindingKind::HostKeyName,
                    });
                } else if entry.metadata()?.len() <= MAX_SCANNED {
                    files.push((entry.path(), path));
                }
            }
        }
    }
    let by_content: Vec<std::io::Result<Option<Finding>>> = files
        .into_par_iter()
        .map(|(file, path)| {
            let mut data = Vec::new();
            fs::File::open(&file)?
                .take(MAX_SCANNED)
                .read_to_end(&mut data)?;
            Ok(holds_private_key(&data).then_some(Finding {
                path,
                kind: FindingKind::PemBlock,
            }))
        })
        .collect();
    for f in by_content {
        findings.extend(f?);
    }
    findings.sort();
    Ok(findings)
}

/// [`scan`] of a committed store object's tree, remembered beside it
/// (`objects/<id>/private-keys.json`): the tree never changes, so a
/// rebuild from the store does not read it again.
pub fn scan_object(tree: &Path) -> std::io::Result<Vec<Finding>> {
    let cache = tree.with_file_name("private-keys.json");
    if let Ok(found) = fs::read(&cache)
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        return Ok(found);
    }
    let found = scan(tree)?;
    let tmp = cache.with_extension(format!("json.tmp{}", std::process::id()));
    let written = serde_json::to_vec(&found)
        .map_err(std::io::Error::other)
        .and_then(|d| fs::write(&tmp, d))
        .and_then(|_| fs::rename(&tmp, &cache));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn pem_private_keys_are_found_and_armour_strings_are_not() {
        assert!(holds_private_key(KEY.as_bytes()));
        let legacy = "x\n-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\nMIIEowIBAAKCAQEAw2x8\r\n";
        assert!(holds_private_key(legacy.as_bytes()));
        assert!(holds_private_key(
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGRmZ2gBCAC5yQ1xAbCdEf\n"
        ));
        // What ssh-keygen's binary holds: the armour as a C string.
        assert!(!holds_private_key(
            b"\0-----BEGIN OPENSSH PRIVATE KEY-----\n\0-----END OPENSSH PRIVATE KEY-----\n\0"
        ));
        assert!(!holds_private_key(
            b"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n"
        ));
        assert!(!holds_private_key(
            b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0B\n"
        ));
        assert!(!holds_private_key(
            b"-----BEGIN private key-----\nMIIBIjANBgkqhkiG9w0B\n"
        ));
    }

    #[test]
    fn scan_finds_host_keys_by_name_and_keys_by_content_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("etc/ssh")).unwrap();
        fs::create_dir_all(t.join("srv")).unwrap();
        fs::write(t.join("etc/ssh/ssh_host_ed25519_key"), "whatever").unwrap();
        fs::write(
            t.join("etc/ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAA",
        )
        .unwrap();
        fs::write(t.join("srv/site.pem"), KEY).unwrap();
        std::os::unix::fs::symlink("/etc/ssh/ssh_host_ed25519_key", t.join("srv/link")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("k"), KEY).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.join("srv/out")).unwrap();
        let found = scan(t).unwrap();
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/etc/ssh/ssh_host_ed25519_key", "/srv/site.pem"]);
    }

    #[test]
    fn an_objects_scan_is_remembered_beside_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/k.pem"), KEY).unwrap();
        let first = scan_object(&tree).unwrap();
        assert_eq!(first.len(), 1);
        assert!(dir.path().join("private-keys.json").is_file());
        // The remembered answer is what a second scan returns.
        fs::remove_file(tree.join("etc/k.pem")).unwrap();
        assert_eq!(scan_object(&tree).unwrap(), first);
        assert!(scan(&tree).unwrap().is_empty());
    }
}
