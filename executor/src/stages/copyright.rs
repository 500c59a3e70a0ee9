//! The licenses a Debian package declares: the `License:` of each `Files:`
//! paragraph of its machine-readable copyright file
//! (`/usr/share/doc/<package>/copyright`, copyright-format 1.0). dpkg's
//! database declares none; a copyright file in another form declares
//! nothing a program can read, and the package's SBOM entry then says
//! NOASSERTION.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// More than any copyright file needs; a bigger one is read this far.
const MAX_BYTES: u64 = 1 << 20;

/// The tree, for [`declared`].
pub(super) fn open_tree(tree: &Path) -> Result<OwnedFd, String> {
    rustix::fs::open(
        tree,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", tree.display()))
}

/// The licenses `package`'s copyright file declares, joined with `AND`,
/// as the file spells them (Debian's short names, e.g. `GPL-2+`). Links
/// resolve inside the tree; only a regular file is read (never a FIFO or
/// a device a package script left there).
pub(super) fn declared(tree: &OwnedFd, package: &str) -> Option<String> {
    let plain = !package.is_empty()
        && !package.starts_with('.')
        && package
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    if !plain {
        return None;
    }
    let fd = rustix::fs::openat2(
        tree,
        format!("usr/share/doc/{package}/copyright").as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    licenses(&String::from_utf8_lossy(&bytes))
}

/// The `License:` first lines of the `Files:` paragraphs, in order, each
/// once; `None` for a file that is not copyright-format 1.0 or names none.
fn licenses(text: &str) -> Option<String> {
    // Paragraphs of (field name in lower case, first line of the value).
    let mut paragraphs: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if paragraphs.last().is_some_and(|p| !p.is_empty()) {
                paragraphs.push(Vec::new());
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some((name, value)), Some(p)) = (line.split_once(':'), paragraphs.last_mut()) {
            p.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let field = |p: &[(String, String)], name: &str| {
        p.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let header = paragraphs.first()?;
    let format = field(header, "format")?;
    if !format.contains("copyright-format") && !format.contains("dep5") {
        return None;
    }
    let mut found: Vec<String> = Vec::new();
    for p in &paragraphs[1..] {
        if field(p, "files").is_none() {
            continue;
        }
        if let Some(l) = field(p, "license").filter(|l| !l.is_empty()) {
            if !found.contains(&l) {
                found.push(l);
            }
        }
    }
    match found.len() {
        0 => None,
        1 => found.pop(),
        _ => Some(
            found
                .iter()
                .map(|l| {
                    if l.contains(' ') {
                        format!("({l})")
                    } else {
                        l.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_paragraphs_licenses_once_each() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: less\n\
License: ignored (header)\n\
\n\
Files: *\n\
Copyright: 1984-2023 Mark Nudelman\n\
License: GPL-3+ or BSD-2-clause\n\
 Less is dual licensed.\n\
\n\
Files: debian/*\n\
Copyright: Someone\n\
License: GPL-2+\n\
\n\
Files: lesskey.c\n\
License: GPL-2+\n\
\n\
License: GPL-2+\n\
 On Debian systems, see /usr/share/common-licenses/GPL-2.\n";
        assert_eq!(
            licenses(text).as_deref(),
            Some("(GPL-3+ or BSD-2-clause) AND GPL-2+")
        );
        let one = "Format: http://dep.debian.net/deps/dep5\n\nFiles: *\nLicense: Expat\n";
        assert_eq!(licenses(one).as_deref(), Some("Expat"));
        // Free-form copyright files declare nothing a program can read.
        assert_eq!(
            licenses("This is the Debian prepackaged version of bash.\n\nLicense: GPL-3\n"),
            None
        );
        assert_eq!(
            licenses(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            ),
            None
        );
    }

    #[test]
    fn only_regular_files_inside_the_tree_are_read() {
        let tree = tempfile::tempdir().unwrap();
        let doc = tree.path().join("usr/share/doc");
        for p in ["a", "b", "c"] {
            std::fs::create_dir_all(doc.join(p)).unwrap();
        }
        std::fs::write(
            doc.join("a/copyright"),
            "Format: copyright-format/1.0\n\nFiles: *\nLicense: MIT\n",
        )
        .unwrap();
        // An absolute link resolves inside the tree, to a's file.
        std::os::unix::fs::symlink("/usr/share/doc/a/copyright", doc.join("b/copyright")).unwrap();
        // A FIFO is not read (nor waited on).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            doc.join("c/copyright").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let fd = open_tree(tree.path()).unwrap();
        assert_eq!(declared(&fd, "a").as_deref(), Some("MIT"));
        assert_eq!(declared(&fd, "b").as_deref(), Some("MIT"));
        assert_eq!(declared(&fd, "c"), None);
        assert_eq!(declared(&fd, "missing"), None);
        assert_eq!(declared(&fd, "../a"), None);
    }
}
