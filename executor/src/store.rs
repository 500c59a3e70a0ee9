//! The object store: trees addressed by the id of the stage that made them,
//! the source cache addressed by checksum, and the working directories of
//! running builds.
//!
//! ```text
//! STORE/objects/<stage id>/tree        a committed tree, never modified
//! STORE/objects/<stage id>/meta.json   the metadata its stages reported
//! STORE/objects/<stage id>/private-keys.json  the export check's scan of the tree
//! STORE/objects/<stage id>.lock        flock: shared while a build reads it
//! STORE/sources/org.osbuild.files/<checksum>
//! STORE/tmp/<build>/                   one running build's working trees
//! STORE/tmp/<build>.lock               flock held for the build's lifetime
//! ```
//!
//! Crash safety: everything a build writes lives under its own `tmp/<build>`
//! until it is renamed into `objects/` in one step, so a killed build leaves
//! only a tmp directory whose lock nobody holds, which the next build to
//! open the store removes (nothing is ever mounted or attached there: mounts
//! live in the stages' namespaces and die with them). Several builds share
//! a store: ids name identical content, so the second commit of one id is
//! simply dropped.
//!
//! The store is used from inside the build namespace ([`crate::userns`]):
//! its files belong to the subordinate ids of the user that runs the
//! executor, as the trees' owners are.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use serde_json::Value;

pub struct Store {
    root: PathBuf,
}

/// A running build's private directory; removed when dropped.
pub struct WorkDir {
    pub path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// A committed object held open for reading: eviction skips it meanwhile.
pub struct ObjectLease {
    pub tree: PathBuf,
    _lock: File,
}

fn io_err(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens (creating) a store and cleans up after builds that died. The
    /// store's root is made mode 0700: trees, sources and half-built images
    /// are no other host user's to read.
    pub fn open(root: &Path) -> io::Result<Store> {
        for sub in ["objects", "sources/org.osbuild.files", "tmp"] {
            fs::create_dir_all(root.join(sub)).map_err(|e| io_err(&root.join(sub), e))?;
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(root, e))?;
        let root = fs::canonicalize(root)?;
        reachable_by_stages(&root)?;
        let store = Store { root };
        store.clean_stale()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn source_dir(&self) -> PathBuf {
        self.root.join("sources/org.osbuild.files")
    }

    fn object_dir(&self, id: &str) -> PathBuf {
        self.root.join("objects").join(id)
    }

    /// The lock file beside object `id`: readers hold it shared while they
    /// use the object, eviction takes it exclusively.
    fn object_lock(&self, id: &str) -> io::Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path(id))
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.root.join("objects").join(format!("{id}.lock"))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.object_dir(id).join("tree").is_dir()
    }

    /// Takes a read lease on a committed object, marking it recently used.
    pub fn lease(&self, id: &str) -> io::Result<Option<ObjectLease>> {
        if !self.contains(id) {
            return Ok(None);
        }
        let lock = self.object_lock(id)?;
        flock(&lock, FlockOperation::LockShared)?;
        // Evicted between the check and the lock: treat as absent.
        if !self.contains(id) {
            return Ok(None);
        }
        // The lock file's mtime is the object's last use, for LRU eviction.
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        let _ = rustix::fs::futimens(&lock, &now);
        Ok(Some(ObjectLease {
            tree: self.object_dir(id).join("tree"),
            _lock: lock,
        }))
    }

    /// The stage metadata recorded with an object.
    pub fn metadata(&self, id: &str) -> Value {
        fs::read(self.object_dir(id).join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// A new private working directory for one build.
    pub fn work_dir(&self) -> io::Result<WorkDir> {
        let name = uuid::Uuid::new_v4().to_string();
        let lock_path = self.root.join("tmp").join(format!("{name}.lock"));
        let lock = File::create(&lock_path)?;
        flock(&lock, FlockOperation::LockExclusive)?;
        let path = self.root.join("tmp").join(&name);
        fs::create_dir(&path)?;
        Ok(WorkDir {
            path,
            lock_path,
            _lock: lock,
        })
    }

    /// Moves `tree` (inside a work dir of this store) into the store as
    /// object `id`. Returns false when another build committed it first.
    pub fn commit(&self, id: &str, tree: &Path, metadata: &Value) -> io::Result<bool> {
        let staging = tree.with_extension("commit");
        fs::create_dir(&staging)?;
        fs::rename(tree, staging.join("tree"))?;
        fs::write(staging.join("meta.json"), serde_json::to_vec(metadata)?)?;
        match fs::rename(&staging, self.object_dir(id)) {
            Ok(()) => Ok(true),
            Err(e)
                if [rustix::io::Errno::EXIST, rustix::io::Errno::NOTEMPTY]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                remove_tree(&staging)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes working directories whose build is gone.
    fn clean_stale(&self) -> io::Result<()> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                let dir = tmp.join(name.trim_end_matches(".lock"));
                let Ok(lock) = File::options().write(true).open(entry.path()) else {
                    continue;
                };
                if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                    continue; // a live build owns it
                }
                remove_tree(&dir)?;
                fs::remove_file(entry.path())?;
            } else if !tmp.join(format!("{name}.lock")).exists() {
                // A directory whose lock file is already gone.
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Evicts least recently used objects, then source files, until the
    /// store fits in `max` bytes. Objects leased by running builds stay.
    pub fn evict_to(&self, max: u64) -> io::Result<u64> {
        let mut total = disk_usage(&self.root);
        if total <= max {
            return Ok(total);
        }
        let mut objects: Vec<(i64, String)> = Vec::new();
        for entry in fs::read_dir(self.root.join("objects"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") || !entry.path().is_dir() {
                continue;
            }
            let used = fs::metadata(self.root.join("objects").join(format!("{name}.lock")))
                .or_else(|_| entry.metadata())
                .map(|m| m.mtime())
                .unwrap_or(0);
            objects.push((used, name));
        }
        objects.sort();
        for (_, id) in objects {
            if total <= max {
                break;
            }
            let lock = self.object_lock(&id)?;
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue;
            }
            let dir = self.object_dir(&id);
            let size = disk_usage(&dir);
            // Rename first so that a concurrent lookup never sees half a tree.
            let doomed = self.root.join("tmp").join(format!("evict-{id}"));
            fs::rename(&dir, &doomed)?;
            remove_tree(&doomed)?;
            let _ = fs::remove_file(self.lock_path(&id));
            total = total.saturating_sub(size);
        }
        if total > max {
            let mut files: Vec<(i64, PathBuf, u64)> = Vec::new();
            for entry in fs::read_dir(self.source_dir())? {
                let entry = entry?;
                let m = entry.metadata()?;
                files.push((m.atime().max(m.mtime()), entry.path(), m.blocks() * 512));
            }
            files.sort();
            for (_, path, size) in files {
                if total <= max {
                    break;
                }
                fs::remove_file(&path)?;
                total = total.saturating_sub(size);
            }
        }
        Ok(total)
    }
}

/// Stages bind their trees from the store by path, in a user namespace
/// where only the build namespace's root (the subordinate ids) is anyone:
/// the store's root becomes that root's (a worker made it as itself), and
/// every directory above it must let others through (`o+x`), as home
/// directories and /var/lib do. Anything else is an error that says so.
fn reachable_by_stages(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(root).map_err(|e| io_err(root, e))?;
    if m.uid() != 0 {
        std::os::unix::fs::chown(root, Some(0), Some(0)).map_err(|e| io_err(root, e))?;
    }
    for dir in root.ancestors().skip(1) {
        let m = fs::metadata(dir).map_err(|e| io_err(dir, e))?;
        if m.uid() != 0 && m.permissions().mode() & 0o001 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: the stages' sandboxes reach the store through this directory, \
                     which lets no other user through: `chmod o+x {}`, or put the store \
                     elsewhere",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes a directory takes on disk, hard links counted once.
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Removes a tree, including read-only directories a stage left behind.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) => {
            // Directories without write permission (or immutable bits set by
            // a stage) stop remove_dir_all; make them writable and retry.
            let _ = std::process::Command::new("chmod")
                .arg("-R")
                .arg("u+rwX")
                .arg(path)
                .status();
            fs::remove_dir_all(path)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_is_only_its_owners() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&root).unwrap();
        let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    use super::*;

    #[test]
    fn a_dead_builds_work_dir_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A live build's directory survives another build opening the store.
        let live = store.work_dir().unwrap();
        fs::write(live.path.join("half-written"), b"x").unwrap();
        // A dead build: its directory and lock file exist, nobody holds the lock.
        let dead = dir.path().join("tmp/dead-build");
        fs::create_dir_all(dead.join("tree/etc")).unwrap();
        fs::write(dir.path().join("tmp/dead-build.lock"), b"").unwrap();
        let _other = Store::open(dir.path()).unwrap();
        assert!(live.path.join("half-written").exists());
        assert!(!dead.exists());
        assert!(!dir.path().join("tmp/dead-build.lock").exists());
        let path = live.path.clone();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn commit_is_atomic_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let work = store.work_dir().unwrap();
        for n in 0..2 {
            let tree = work.path.join(format!("tree{n}"));
            fs::create_dir_all(tree.join("etc")).unwrap();
            fs::write(tree.join("etc/hostname"), format!("{n}\n")).unwrap();
            let first = store
                .commit("sha256:x", &tree, &serde_json::json!({"n": n}))
                .unwrap();
            assert_eq!(first, n == 0);
        }
        let lease = store.lease("sha256:x").unwrap().unwrap();
        assert_eq!(
            fs::read_to_string(lease.tree.join("etc/hostname")).unwrap(),
            "0\n"
        );
        assert_eq!(store.metadata("sha256:x"), serde_json::json!({"n": 0}));
    }

    #[test]
    fn eviction_drops_the_least_recently_used_object_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let work = store.work_dir().unwrap();
        for id in ["old", "new"] {
            let tree = work.path.join(id);
            fs::create_dir_all(&tree).unwrap();
            fs::write(tree.join("blob"), vec![7u8; 1 << 20]).unwrap();
            store.commit(id, &tree, &Value::Null).unwrap();
            drop(store.lease(id).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let before = disk_usage(store.root());
        store.evict_to(before - 1).unwrap();
        assert!(!store.contains("old"));
        assert!(store.contains("new"));
    }
}
