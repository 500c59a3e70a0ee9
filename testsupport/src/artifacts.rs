//! Reading back what kiln builds: the file tree inside each kind of
//! artifact (tar, OCI archive, squashfs, initrd, raw and qcow2 disks),
//! unpacked with the host's own tools, and a scan of such a tree for
//! private key material that is independent of the executor's own check
//! (grep and find rather than kiln's code).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(script: &str) -> Result<String> {
    run(Command::new("sh").arg("-c").arg(script))
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Unpacks `artifact` into `into` (which must exist), choosing the tool by
/// the file's contents. Returns a word naming what it was.
pub fn unpack(artifact: &Path, into: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 8];
    {
        use std::io::Read;
        let mut f =
            std::fs::File::open(artifact).map_err(|e| format!("{}: {e}", artifact.display()))?;
        let _ = f.read(&mut magic);
    }
    let (a, d) = (quoted(artifact), quoted(into));
    let cpio = |decompress: &str| {
        sh(&format!(
            "cd {d} && {decompress} {a} | cpio -idm --quiet --no-absolute-filenames"
        ))
    };
    if magic.starts_with(b"hsqs") {
        run(Command::new("unsquashfs")
            .args(["-quiet", "-no-progress", "-f", "-d"])
            .arg(into)
            .arg(artifact))?;
        Ok("squashfs")
    } else if magic.starts_with(b"QFI\xfb") {
        let raw = into.with_extension("from-qcow2.raw");
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(artifact)
            .arg(&raw))?;
        let r = unpack_disk(&raw, into);
        let _ = std::fs::remove_file(&raw);
        r.map(|_| "qcow2 disk")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        cpio("zstd -dc").map(|_| "zstd cpio")
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        cpio("gzip -dc").map(|_| "gzip cpio")
    } else if magic.starts_with(b"070701") {
        cpio("cat").map(|_| "cpio")
    } else if is_tar(artifact) {
        let members = run(Command::new("tar").arg("-tf").arg(artifact))?;
        if members
            .lines()
            .any(|l| l.trim_start_matches("./") == "oci-layout")
        {
            unpack_oci(artifact, into)?;
            Ok("oci archive")
        } else {
            run(Command::new("tar")
                .arg("-xf")
                .arg(artifact)
                .arg("-C")
                .arg(into))?;
            Ok("tar")
        }
    } else if magic_at(artifact, 510, &[0x55, 0xaa]) {
        unpack_disk(artifact, into)?;
        Ok("raw disk")
    } else {
        Err(format!(
            "{}: not an artifact kind I can unpack",
            artifact.display()
        ))
    }
}

fn is_tar(path: &Path) -> bool {
    magic_at(path, 257, b"ustar")
}

fn magic_at(path: &Path, offset: u64, want: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut buf = vec![0u8; want.len()];
    f.seek(SeekFrom::Start(offset)).is_ok() && f.read_exact(&mut buf).is_ok() && buf == want
}

/// Every layer of an OCI archive, in one tree: each blob that is a tar
/// (layers; the config and manifests are JSON) is extracted in turn.
fn unpack_oci(archive: &Path, into: &Path) -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(tmp.path()))?;
    let blobs = tmp.path().join("blobs/sha256");
    let mut layers = 0;
    for entry in std::fs::read_dir(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))? {
        let blob = entry.map_err(|e| e.to_string())?.path();
        if run(Command::new("tar").arg("-tf").arg(&blob)).is_ok() {
            run(Command::new("tar")
                .arg("-xf")
                .arg(&blob)
                .arg("-C")
                .arg(into))?;
            layers += 1;
        }
    }
    if layers == 0 {
        return Err(format!("{}: no layer", archive.display()));
    }
    Ok(())
}

/// Each ext2/3/4 partition of a partitioned raw disk, copied out with
/// debugfs's `rdump` into `into/pN`. Other file systems are named in the error.
fn unpack_disk(raw: &Path, into: &Path) -> Result<()> {
    let table = run(Command::new("sfdisk").args(["--dump"]).arg(raw))?;
    let mut found = 0;
    for line in table.lines().filter(|l| l.contains("start=")) {
        let field = |k: &str| -> Option<u64> {
            line.split(',')
                .find_map(|f| f.split_once('=').filter(|(n, _)| n.trim().ends_with(k)))
                .and_then(|(_, v)| v.trim().parse().ok())
        };
        let (Some(start), Some(size)) = (field("start"), field("size")) else {
            continue;
        };
        found += 1;
        let part = into.with_extension(format!("p{found}.img"));
        run(Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", part.display()))
            .args(["bs=512", "conv=sparse", "status=none"])
            .arg(format!("skip={start}"))
            .arg(format!("count={size}")))?;
        let kind = run(Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "TYPE"])
            .arg(&part))
        .unwrap_or_default();
        let result = match kind.trim() {
            "ext2" | "ext3" | "ext4" => {
                let dest = into.join(format!("p{found}"));
                std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
                run(Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump / {}", dest.display()))
                    .arg(&part))
                .map(|_| ())
            }
            // The BIOS boot partition of a GPT disk holds no file system.
            "" => Ok(()),
            other => Err(format!("partition {found}: {other} is not unpacked")),
        };
        let _ = std::fs::remove_file(&part);
        result?;
    }
    if found == 0 {
        return Err(format!("{}: no partition", raw.display()));
    }
    Ok(())
}

/// Paths under `tree` that hold private key material: files named
/// `ssh_host_*_key`, and files with a line ending in `PRIVATE KEY-----`
/// followed by a line of base64 (the bare armour line alone, as programs
/// carry it, does not count). Links are not followed.
pub fn private_keys(tree: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> =
        run(Command::new("find")
            .arg(tree)
            .args(["-type", "f", "-name", "ssh_host_*_key"]))?
        .lines()
        .map(PathBuf::from)
        .collect();
    // grep exits 1 when nothing matches.
    let listed = Command::new("grep")
        .args([
            "-rlaE",
            "--",
            "-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----\r?$",
        ])
        .arg(tree)
        .output()
        .map_err(|e| format!("grep: {e}"))?;
    for candidate in String::from_utf8_lossy(&listed.stdout).lines() {
        let data = std::fs::read(candidate).map_err(|e| format!("{candidate}: {e}"))?;
        let text = String::from_utf8_lossy(&data);
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        while let Some(line) = lines.next() {
            if !(line.starts_with("-----BEGIN ") && line.contains("PRIVATE KEY")) {
                continue;
            }
            let body = lines
                .by_ref()
                .find(|l| !l.is_empty() && !l.contains(':'))
                .unwrap_or_default();
            let base64 = body.len() >= 16
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            if base64 {
                out.push(PathBuf::from(candidate));
                break;
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out
        .into_iter()
        .map(|p| Path::new("/").join(p.strip_prefix(tree).unwrap_or(&p)))
        .collect())
}

/// Unpacks each artifact into a directory of its own under a temporary
/// directory and scans it: `(artifact, kind, keys found)` per artifact.
pub fn scan_artifacts(artifacts: &[PathBuf]) -> Result<Vec<(PathBuf, &'static str, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for a in artifacts {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let tree = tmp.path().join("tree");
        std::fs::create_dir(&tree).map_err(|e| e.to_string())?;
        let kind = unpack(a, &tree)?;
        out.push((a.clone(), kind, private_keys(&tree)?));
    }
    Ok(out)
}
