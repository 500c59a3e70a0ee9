//! The local directory target.
//!
//! The artifact is copied into a hidden temporary file in the target
//! directory itself (so that the final rename stays on one filesystem and is
//! atomic), synced, renamed over the final name, and the directory is synced
//! so that the rename survives a crash. Until the rename nothing is visible
//! under the final name; on any failure the temporary file is removed.
//!
//! Verification: the bytes written are hashed as they are read from the
//! artifact; the copy is then read back from the target and hashed again
//! before the rename, so a short or corrupted write is never published.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::parts::{Digests, PartReader};
use crate::retry::Observer;
use crate::{Event, LocalTarget, UploadError, UploadedObject};

const CHUNK: u64 = 8 * 1024 * 1024;

pub(crate) async fn upload(
    target: &LocalTarget,
    artifact: &Path,
    name: &str,
    on_event: Observer<'_>,
) -> Result<UploadedObject, UploadError> {
    let dir = target.path.clone();
    let final_path = dir.join(name);
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| local("creating a temporary file in", &dir, e))?;
    // From here on, dropping `temp` (on any error) deletes the file.
    let (mut file, temp_path) = temp.into_parts();
    let mut reader = PartReader::open(artifact, CHUNK, Digests::default())?;
    let total = reader.total();
    on_event(Event::Progress { done: 0, total });
    while let Some(part) = reader.next().await? {
        let len = part.data.len() as u64;
        file = blocking(move || {
            let r = file.write_all(&part.data);
            r.map(|()| file)
        })
        .await
        .map_err(|e| local("writing", &temp_path, e))?;
        on_event(Event::Progress {
            done: part.offset + len,
            total,
        });
    }
    let whole = reader.finish()?;

    let check_path: PathBuf = temp_path.to_path_buf();
    let written = blocking(move || {
        file.sync_all()?;
        drop(file);
        sha256_of(&check_path)
    })
    .await
    .map_err(|e| local("syncing and re-reading", &temp_path, e))?;
    if written.1 != total || written.0 != whole.sha256 {
        return Err(UploadError::Verification {
            target: "local",
            what: format!("{} (size, sha256)", temp_path.display()),
            expected: format!("{total} bytes, {}", whole.sha256),
            actual: format!("{} bytes, {}", written.1, written.0),
        });
    }

    let dest = final_path.clone();
    let dir_for_sync = dir.clone();
    blocking(move || {
        temp_path
            .persist(&dest)
            .map_err(|e| std::io::Error::new(e.error.kind(), e.error))?;
        // The rename is only durable once the directory is synced.
        File::open(&dir_for_sync)?.sync_all()
    })
    .await
    .map_err(|e| local("renaming into", &final_path, e))?;

    let absolute = std::path::absolute(&final_path).unwrap_or(final_path);
    Ok(UploadedObject {
        url: file_url(&absolute),
        size: total,
        sha256: whole.sha256,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn local(operation: &'static str, path: &Path, e: std::io::Error) -> UploadError {
    UploadError::Local {
        operation,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// `file://` URL of an absolute path, with the bytes URLs may not carry escaped.
fn file_url(path: &Path) -> String {
    match url::Url::from_file_path(path) {
        Ok(u) => u.to_string(),
        Err(()) => format!("file://{}", path.display()),
    }
}
