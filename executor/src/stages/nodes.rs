//! Device nodes without `mknod`. A stage's user namespace cannot make
//! device nodes (the kernel refuses `mknod` there), so `kiln.devices`
//! records each node as a *placeholder*: an empty regular file with the
//! node's owner, group and mode, and an extended attribute
//! [`XATTR`] = `c MAJOR MINOR` or `b MAJOR MINOR`. Stages that change
//! owners and modes act on placeholders as on any file.
//!
//! The stages that write artifacts turn placeholders into device nodes:
//! tar archives and OCI layers get device headers in place of the
//! placeholders ([`tar_headers`]), squashfs gets pseudo definitions
//! ([`squashfs_pseudo`]) and ext4 file systems are fixed with `debugfs`
//! ([`debugfs_script`]). The placeholder file itself is never published.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, Stage};

/// The extended attribute that marks a placeholder.
pub(crate) const XATTR: &str = "user.kiln.device";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Char,
    Block,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Char => 'c',
            Kind::Block => 'b',
        }
    }
}

/// A device node of a tree, from its placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Relative to the tree's root, without a leading `/`: `dev/null`.
    pub path: String,
    pub kind: Kind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// The most a major or minor number can be (Linux's `dev_t`: 12 and 20
/// bits).
const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;

/// A path a device node may have: relative, its components letters,
/// digits and `._+@:-`, none of them `.` or `..`. The archivers write
/// these names into pseudo-file lists, exclusion lists and debugfs
/// scripts, where spaces, quotes or newlines would mean something else.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._+@:-".contains(ch))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path:?}: a device node's path has components of letters, digits and '._+@:-' only"
        ))
    }
}

/// The placeholder's attribute value: `c 1 3`.
fn parse(value: &[u8]) -> Option<(Kind, u32, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut it = text.split(' ');
    let kind = match it.next()? {
        "c" => Kind::Char,
        "b" => Kind::Block,
        _ => return None,
    };
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || major > MAX_MAJOR || minor > MAX_MINOR {
        return None;
    }
    Some((kind, major, minor))
}

fn placeholder_value(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut buf = [0u8; 64];
    match rustix::fs::lgetxattr(path, XATTR, &mut buf) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(rustix::io::Errno::RANGE) => Err(format!(
            "{}: its {XATTR} attribute is not a device node",
            path.display()
        )),
        Err(e) => Err(format!("{}: reading {XATTR}: {e}", path.display())),
    }
}

/// The device nodes recorded in a tree, sorted by path. Only empty
/// regular files are looked at; a marked file whose attribute does not
/// parse, or whose path an archiver could not write, is an error.
pub(crate) fn find(root: &Path) -> Result<Vec<Node>, String> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(child);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let path = entry.path();
            let meta =
                fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() != 0 {
                continue;
            }
            let Some(value) = placeholder_value(&path)? else {
                continue;
            };
            let rel_str = child
                .to_str()
                .ok_or_else(|| format!("{}: a device node's path must be UTF-8", path.display()))?;
            check_path(rel_str)?;
            let (kind, major, minor) = parse(&value).ok_or_else(|| {
                format!(
                    "/{rel_str}: {XATTR} is {:?}, not 'c MAJOR MINOR' or 'b MAJOR MINOR'",
                    String::from_utf8_lossy(&value)
                )
            })?;
            found.push(Node {
                path: rel_str.to_owned(),
                kind,
                major,
                minor,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Records a device node at `path` (relative to `root`) as a placeholder;
/// missing parent directories are made (0755). An existing placeholder is
/// replaced; any other file there is an error.
pub(crate) fn record(root: &Path, node: &Node) -> Result<(), String> {
    check_path(&node.path)?;
    if node.major > MAX_MAJOR || node.minor > MAX_MINOR {
        return Err(format!(
            "/{}: device numbers {}:{} are out of range (major 0-{MAX_MAJOR}, minor 0-{MAX_MINOR})",
            node.path, node.major, node.minor
        ));
    }
    let target = root.join(&node.path);
    let io = |e: std::io::Error| format!("/{}: {e}", node.path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_file() && meta.len() == 0 && placeholder_value(&target)?.is_some() => {
            fs::remove_file(&target).map_err(io)?;
        }
        Ok(_) => {
            return Err(format!(
                "/{}: a file is there already, and it is not a device node",
                node.path
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let file = fs::File::options()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(io)?;
    let value = format!("{} {} {}", node.kind.letter(), node.major, node.minor);
    rustix::fs::fsetxattr(
        &file,
        XATTR,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| format!("/{}: setting {XATTR}: {e}", node.path))?;
    std::os::unix::fs::fchown(&file, Some(node.uid), Some(node.gid)).map_err(io)?;
    // After chown, which clears setuid and setgid bits.
    file.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(io)?;
    Ok(())
}

/// `kiln.devices`: device nodes recorded in the tree (schema:
/// `manifests/stages/kiln.devices.meta.json`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DevicesOptions {
    #[serde(deserialize_with = "some_nodes")]
    nodes: Vec<DeviceOption>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceOption {
    #[serde(deserialize_with = "node_path")]
    path: String,
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(deserialize_with = "major")]
    major: u32,
    #[serde(deserialize_with = "minor")]
    minor: u32,
    #[serde(deserialize_with = "permissions")]
    mode: u32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

fn some_nodes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DeviceOption>, D::Error> {
    let v = Vec::<DeviceOption>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("at least one device node"));
    }
    Ok(v)
}

/// `/dev/null`: absolute, and a path [`check_path`] accepts.
fn node_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let rel = s.strip_prefix('/').ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{s:?}: an absolute path in the tree, like /dev/null"
        ))
    })?;
    check_path(rel).map_err(serde::de::Error::custom)?;
    Ok(rel.to_owned())
}

fn bounded<'de, D: serde::Deserializer<'de>>(d: D, max: u32, what: &str) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > max {
        return Err(serde::de::Error::custom(format!(
            "{what} {v} is above {max}"
        )));
    }
    Ok(v)
}

fn major<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, MAX_MAJOR, "major")
}

fn minor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, MAX_MINOR, "minor")
}

fn permissions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, 0o7777, "mode")
}

pub(super) struct Devices;

impl Stage for Devices {
    const NAME: &'static str = "kiln.devices";
    type Options = DevicesOptions;

    fn run(ctx: &Ctx, o: DevicesOptions) -> Result<Value, String> {
        for d in o.nodes {
            record(
                ctx.tree(),
                &Node {
                    path: d.path,
                    kind: d.kind,
                    major: d.major,
                    minor: d.minor,
                    mode: d.mode,
                    uid: d.uid,
                    gid: d.gid,
                    mtime: 0,
                },
            )?;
        }
        Ok(Value::Null)
    }
}

/// The tar format the device headers are written in (the archive's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TarFlavour {
    /// GNU and old GNU: long names in `L` entries.
    Gnu,
    /// POSIX (pax): long names in an extended header.
    Pax,
    /// ustar: names up to 255 bytes, split at a `/`.
    Ustar,
}

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) -> Result<(), String> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return Err(format!(
            "{value} does not fit a {digits}-digit tar header field"
        ));
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// One 512-byte header. `name` and `prefix` must fit their fields.
fn header(
    flavour: TarFlavour,
    name: &str,
    prefix: &str,
    typeflag: u8,
    size: u64,
    node: Option<&Node>,
    mtime: i64,
) -> Result<[u8; BLOCK], String> {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let (mode, uid, gid) = node.map_or((0o644, 0, 0), |n| (n.mode, n.uid, n.gid));
    octal(&mut h[100..108], u64::from(mode))?;
    octal(&mut h[108..116], u64::from(uid))?;
    octal(&mut h[116..124], u64::from(gid))?;
    octal(&mut h[124..136], size)?;
    octal(&mut h[136..148], mtime.max(0) as u64)?;
    h[156] = typeflag;
    match flavour {
        TarFlavour::Gnu => h[257..265].copy_from_slice(b"ustar  \0"),
        TarFlavour::Pax | TarFlavour::Ustar => h[257..265].copy_from_slice(b"ustar\x0000"),
    }
    if let Some(n) = node {
        octal(&mut h[329..337], u64::from(n.major))?;
        octal(&mut h[337..345], u64::from(n.minor))?;
    }
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    Ok(h)
}

/// An entry whose data is `data` (a long name, a pax record), padded.
fn with_data(out: &mut Vec<u8>, head: [u8; BLOCK], data: &[u8]) {
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    out.resize(out.len() + pad, 0);
}

/// A pax record: `LEN key=value\n`, where LEN counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

/// The longest start of `s` of at most `max` bytes that ends at a
/// character boundary.
fn head_of(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Tar entries for device nodes, each named `name` (the member name the
/// archive would have given the placeholder), without the end-of-archive
/// blocks: they go where the placeholders' entries would have gone.
pub(crate) fn tar_headers(
    flavour: TarFlavour,
    nodes: &[(String, &Node)],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (name, node) in nodes {
        let typeflag = match node.kind {
            Kind::Char => b'3',
            Kind::Block => b'4',
        };
        let entry = |name: &str, prefix: &str| {
            header(flavour, name, prefix, typeflag, 0, Some(node), node.mtime)
        };
        if name.len() <= 100 {
            out.extend_from_slice(&entry(name, "")?);
            continue;
        }
        // A long name: GNU's `L` entry or pax's `x` header carries it, and
        // the node's own header has it cut short; ustar splits it.
        let (ext_name, ext_type, data) = match flavour {
            TarFlavour::Gnu => {
                let mut data = name.as_bytes().to_vec();
                data.push(0);
                ("././@LongLink".to_owned(), b'L', data)
            }
            TarFlavour::Pax => {
                let base = name.rsplit('/').next().unwrap_or(name);
                (
                    format!("./PaxHeaders/{}", head_of(base, 80)),
                    b'x',
                    pax_record("path", name).into_bytes(),
                )
            }
            TarFlavour::Ustar => {
                // PREFIX/NAME, the prefix up to 155 bytes, the name 100.
                let split = name
                    .char_indices()
                    .filter(|(i, c)| *c == '/' && *i <= 155 && name.len() - i - 1 <= 100)
                    .map(|(i, _)| i)
                    .next()
                    .ok_or_else(|| {
                        format!("{name}: too long for a ustar header (use the posix format)")
                    })?;
                out.extend_from_slice(&entry(&name[split + 1..], &name[..split])?);
                continue;
            }
        };
        let ext = header(
            flavour,
            &ext_name,
            "",
            ext_type,
            data.len() as u64,
            None,
            node.mtime,
        )?;
        with_data(&mut out, ext, &data);
        out.extend_from_slice(&entry(head_of(name, 100), "")?);
    }
    Ok(out)
}

/// mksquashfs pseudo definitions (`-pf`), one line per node, with the
/// placeholder's time: `dev/null C TIME 666 0 0 1 3`.
pub(crate) fn squashfs_pseudo(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "{} {} {} {:o} {} {} {} {}\n",
                n.path,
                n.kind.letter().to_ascii_uppercase(),
                n.mtime.max(0),
                n.mode,
                n.uid,
                n.gid,
                n.major,
                n.minor
            )
        })
        .collect()
}

/// A path as a mksquashfs `-regex` exclusion: each component a whole-name
/// extended regular expression.
pub(crate) fn squashfs_exclude(node: &Node) -> String {
    node.path
        .split('/')
        .map(|c| {
            let mut out = String::from("^");
            for ch in c.chars() {
                if ".[]{}()\\*+?^$|".contains(ch) {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('$');
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The nodes' times clamped to the pipeline's source epoch, as tar's
/// `--clamp-mtime` does for the files around them.
pub(crate) fn clamp_mtimes(nodes: &mut [Node], epoch: Option<u64>) {
    if let Some(e) = epoch {
        let e = i64::try_from(e).unwrap_or(i64::MAX);
        for n in nodes {
            n.mtime = n.mtime.min(e);
        }
    }
}

/// A debugfs script that replaces each placeholder of a file system made
/// from the tree with its device node: its owner, group, mode and time.
pub(crate) fn debugfs_script(nodes: &[Node]) -> String {
    let mut s = String::new();
    for n in nodes {
        let (dir, name) = n.path.rsplit_once('/').unwrap_or(("", &n.path));
        let kind_bits = match n.kind {
            Kind::Char => 0o020000,
            Kind::Block => 0o060000,
        };
        let time = n.mtime.max(0);
        s.push_str(&format!(
            "cd /{dir}\nrm {name}\nmknod {name} {} {} {}\nsif {name} mode 0{:o}\n\
             sif {name} uid {}\nsif {name} gid {}\n",
            n.kind.letter(),
            n.major,
            n.minor,
            kind_bits | n.mode,
            n.uid,
            n.gid,
        ));
        for field in ["mtime", "ctime", "atime", "crtime"] {
            s.push_str(&format!("sif {name} {field} @{time}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str) -> Node {
        Node {
            path: path.into(),
            kind: Kind::Char,
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: 0,
            gid: 5,
            mtime: 1_700_000_000,
        }
    }

    #[test]
    fn attribute_values_parse_strictly() {
        assert_eq!(parse(b"c 1 3"), Some((Kind::Char, 1, 3)));
        assert_eq!(parse(b"b 8 1"), Some((Kind::Block, 8, 1)));
        for bad in [
            &b"c 1"[..],
            b"x 1 3",
            b"c 1 3 4",
            b"c -1 3",
            b"c 4096 0",
            b"c 1  3",
            b"",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn paths_an_archiver_could_misread_are_refused() {
        assert!(check_path("dev/null").is_ok());
        assert!(check_path("dev/disk/by-id/nvme-x_1:2").is_ok());
        for bad in [
            "",
            "/dev/null",
            "dev//null",
            "dev/../etc",
            "dev/a b",
            "dev/a\nb",
            "dev/\"q\"",
            "dev/./n",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn placeholders_are_found_and_replaced_and_other_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let mut null = node("dev/null");
        null.uid = uid;
        null.gid = gid;
        record(root, &null).unwrap();
        let mut sda = node("dev/sda");
        (sda.kind, sda.major, sda.minor, sda.mode, sda.uid, sda.gid) =
            (Kind::Block, 8, 0, 0o660, uid, gid);
        record(root, &sda).unwrap();
        // Recording again replaces the placeholder.
        null.mode = 0o600;
        record(root, &null).unwrap();
        // Not placeholders: a non-empty file with the attribute, a plain file.
        fs::write(root.join("dev/full"), "x").unwrap();
        rustix::fs::setxattr(
            root.join("dev/full"),
            XATTR,
            b"c 1 7",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::write(root.join("dev/plain"), "").unwrap();
        let found = find(root).unwrap();
        let paths: Vec<(&str, Kind, u32, u32, u32)> = found
            .iter()
            .map(|n| (n.path.as_str(), n.kind, n.major, n.minor, n.mode))
            .collect();
        assert_eq!(
            paths,
            [
                ("dev/null", Kind::Char, 1, 3, 0o600),
                ("dev/sda", Kind::Block, 8, 0, 0o660)
            ]
        );
        // A file that is not a placeholder is never replaced.
        let err = record(root, &node("dev/plain")).unwrap_err();
        assert!(err.contains("not a device node"), "{err}");
        // A placeholder whose attribute does not parse fails the search.
        fs::write(root.join("dev/bad"), "").unwrap();
        rustix::fs::setxattr(
            root.join("dev/bad"),
            XATTR,
            b"c one 3",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let err = find(root).unwrap_err();
        assert!(err.contains("/dev/bad") && err.contains("c one 3"), "{err}");
    }

    #[test]
    fn tar_headers_are_read_back_by_gnu_tar() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("./dev/{}/ttyX", "d".repeat(120));
        let mut n1 = node("dev/null");
        n1.uid = 7;
        let n2 = node("dev/long");
        for (flavour, format) in [
            (TarFlavour::Gnu, "gnu"),
            (TarFlavour::Pax, "posix"),
            (TarFlavour::Ustar, "ustar"),
        ] {
            let mut bytes = tar_headers(
                flavour,
                &[("./dev/null".to_owned(), &n1), (long.clone(), &n2)],
            )
            .unwrap();
            bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
            let path = dir.path().join(format!("{format}.tar"));
            fs::write(&path, &bytes).unwrap();
            let out = std::process::Command::new("tar")
                .args(["--numeric-owner", "-tvf"])
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{format}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{format}: {text}");
            assert!(
                lines[0].starts_with("crw-rw-rw- 7/5")
                    && lines[0].contains("1,3")
                    && lines[0].ends_with(" ./dev/null"),
                "{format}: {text}"
            );
            assert!(lines[1].ends_with(&format!(" {long}")), "{format}: {text}");
        }
    }

    #[test]
    fn squashfs_exclusions_match_whole_names() {
        assert_eq!(squashfs_exclude(&node("dev/tty.S0")), "^dev$/^tty\\.S0$");
        assert_eq!(
            squashfs_pseudo(&[node("dev/null")]),
            "dev/null C 1700000000 666 0 5 1 3\n"
        );
    }
}
