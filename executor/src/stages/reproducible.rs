//! `kiln.reproducible`: the last stage of a tree that becomes an image.
//! A build leaves the time it ran in the tree: package tools' logs
//! (`dpkg.log`, `alternatives.log`, dnf's), caches keyed by inode and time
//! (ldconfig's `aux-cache`), and the wall-clock time of every file it
//! wrote. The stage removes the files it is given, then clamps every time
//! in the tree to the pipeline's source epoch: a modification time after
//! the epoch becomes the epoch (a package's older times stay, they come
//! from its inputs), and the access time becomes the modification time.
//! What remains is the change time, which only the kernel sets; the stages
//! that make file systems from the tree set it themselves.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use serde::Deserialize;
use serde_json::{json, Value};

use super::identity::{open_tree, remove_files};
use super::{Ctx, Stage};

/// Options of `kiln.reproducible` (schema: `manifests/stages/kiln.reproducible.meta.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// Files or links removed when present (never directories).
    #[serde(default)]
    remove: Vec<String>,
    /// Clamp the tree's times to the pipeline's source epoch (default true).
    #[serde(default = "yes", rename = "clamp-times")]
    clamp_times: bool,
}

fn yes() -> bool {
    true
}

pub(crate) struct Reproducible;

impl Stage for Reproducible {
    const NAME: &'static str = "kiln.reproducible";
    type Options = Options;

    fn run(ctx: &Ctx, o: Options) -> Result<Value, String> {
        let tree = open_tree(ctx)?;
        // First: a removal changes its directory's times.
        let removed = remove_files(&tree, &o.remove)?;
        let mut clamped = 0;
        if o.clamp_times {
            let epoch = ctx
                .args
                .source_epoch
                .ok_or("clamp-times needs the pipeline's source-epoch, and it has none")?;
            let epoch =
                i64::try_from(epoch).map_err(|_| format!("source-epoch {epoch}: too large"))?;
            clamped = clamp_times(ctx.tree(), epoch)?;
            println!("{clamped} times after the source epoch {epoch} clamped to it");
        }
        Ok(json!({"removed": removed, "clamped": clamped}))
    }
}

/// The (seconds, nanoseconds) a time becomes: itself when not after the
/// epoch, the epoch otherwise.
pub(crate) fn clamp(secs: i64, nanos: i64, epoch: i64) -> (i64, i64) {
    if secs < epoch || (secs == epoch && nanos == 0) {
        (secs, nanos)
    } else {
        (epoch, 0)
    }
}

/// Calls `f` with every entry below `root` (not `root` itself) and its
/// metadata, without following links.
pub(crate) fn each_entry(
    root: &Path,
    f: &mut dyn FnMut(&Path, &Metadata) -> Result<(), String>,
) -> Result<(), String> {
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.is_dir() {
                todo.push(path.clone());
            }
            f(&path, &meta)?;
        }
    }
    Ok(())
}

/// Sets every entry's modification time below and including `root` to
/// its clamped value and its access time to the same, without following
/// links; returns how many modification times moved. Directories last,
/// after the walk has read them: reading a directory moves its access time.
fn clamp_times(root: &Path, epoch: i64) -> Result<u64, String> {
    let mut moved = 0;
    let mut dirs = Vec::new();
    each_entry(root, &mut |path, meta| {
        if meta.is_dir() {
            dirs.push(path.to_owned());
        } else {
            moved += u64::from(set_clamped(path, meta, epoch)?);
        }
        Ok(())
    })?;
    dirs.push(root.to_owned());
    for dir in &dirs {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        moved += u64::from(set_clamped(dir, &meta, epoch)?);
    }
    Ok(moved)
}

/// Whether the modification time moved.
fn set_clamped(path: &Path, meta: &Metadata, epoch: i64) -> Result<bool, String> {
    let (secs, nanos) = clamp(meta.mtime(), meta.mtime_nsec(), epoch);
    let time = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: time,
            last_modification: time,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("{}: setting its times: {e}", path.display()))?;
    Ok((secs, nanos) != (meta.mtime(), meta.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_after_the_epoch_become_it_and_earlier_ones_stay() {
        assert_eq!(clamp(100, 5, 200), (100, 5));
        assert_eq!(clamp(200, 0, 200), (200, 0));
        assert_eq!(clamp(200, 1, 200), (200, 0));
        assert_eq!(clamp(300, 7, 200), (200, 0));
    }

    #[test]
    fn clamping_sets_links_themselves_and_never_what_they_point_to() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "host file").unwrap();
        let before = std::fs::metadata(&victim).unwrap().mtime();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("etc")).unwrap();
        std::fs::write(tree.path().join("etc/file"), "x").unwrap();
        std::os::unix::fs::symlink(&victim, tree.path().join("etc/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.path().join("dir-link")).unwrap();

        // Everything here was made now, after the epoch: the file, the
        // two links, etc and the root.
        assert_eq!(clamp_times(tree.path(), 1_000_000).unwrap(), 5);
        for p in ["", "etc", "etc/file", "etc/link", "dir-link"] {
            let m = std::fs::symlink_metadata(tree.path().join(p)).unwrap();
            assert_eq!((m.mtime(), m.atime()), (1_000_000, 1_000_000), "{p}");
        }
        assert_eq!(std::fs::metadata(&victim).unwrap().mtime(), before);
        assert_ne!(
            std::fs::metadata(outside.path()).unwrap().mtime(),
            1_000_000
        );
    }
}
