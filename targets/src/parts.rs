//! Reads an artifact once, in parts, hashing as it goes.
//!
//! Reading and hashing run on the blocking pool, one part ahead of the
//! caller, so that the next part is ready by the time an upload slot frees up
//! and the hashing does not stall the tasks driving the uploads.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::task::JoinHandle;

use crate::UploadError;

/// One part of the artifact.
pub(crate) struct Part {
    /// 0-based.
    pub index: usize,
    pub offset: u64,
    pub data: Bytes,
    /// MD5 of `data`, when asked for.
    pub md5: Option<[u8; 16]>,
}

/// Which digests besides the whole artifact's SHA-256 to compute.
#[derive(Clone, Copy, Default)]
pub(crate) struct Digests {
    pub part_md5: bool,
    pub whole_md5: bool,
}

/// The state a read carries from part to part.
struct State {
    file: File,
    sha256: Sha256,
    md5: Option<Md5>,
    offset: u64,
    index: usize,
}

type ReadResult = Result<(State, Option<Part>), UploadError>;

pub(crate) struct PartReader {
    path: PathBuf,
    total: u64,
    part_size: u64,
    digests: Digests,
    pending: Option<JoinHandle<ReadResult>>,
    finished: Option<State>,
}

/// What the whole read found.
pub(crate) struct Whole {
    pub sha256: String,
    pub md5: Option<[u8; 16]>,
}

/// Opens an artifact for reading only if `path` itself is a regular file:
/// a symbolic link is not followed (`O_NOFOLLOW`, so it cannot be swapped
/// in between a check and the open), and a directory, device or pipe is
/// refused. What a build exported is data a package script could have
/// shaped; an upload must never read the build host's files through it.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a symbolic link, which is never followed",
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

impl PartReader {
    pub(crate) fn open(path: &Path, part_size: u64, digests: Digests) -> Result<Self, UploadError> {
        let file = open_regular(path).map_err(|e| artifact(path, format!("opening: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| artifact(path, format!("reading metadata: {e}")))?;
        let state = State {
            file,
            sha256: Sha256::new(),
            md5: digests.whole_md5.then(Md5::new),
            offset: 0,
            index: 0,
        };
        let mut reader = PartReader {
            path: path.to_owned(),
            total: meta.len(),
            part_size: part_size.max(1),
            digests,
            pending: None,
            finished: None,
        };
        reader.start(state);
        Ok(reader)
    }

    /// The artifact's size when it was opened; a change is an error.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    fn start(&mut self, state: State) {
        let path = self.path.clone();
        let (total, part_size, digests) = (self.total, self.part_size, self.digests);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_part(state, &path, total, part_size, digests)
        }));
    }

    /// The next part, or `None` after the last.
    pub(crate) async fn next(&mut self) -> Result<Option<Part>, UploadError> {
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        let (state, part) = pending
            .await
            .map_err(|e| artifact(&self.path, format!("reader task failed: {e}")))??;
        match part {
            Some(p) => {
                self.start(state);
                Ok(Some(p))
            }
            None => {
                self.finished = Some(state);
                Ok(None)
            }
        }
    }

    /// The digests of the whole artifact, once [`next`](Self::next) has returned `None`.
    pub(crate) fn finish(self) -> Result<Whole, UploadError> {
        let state = self
            .finished
            .ok_or_else(|| artifact(&self.path, "finished before its last part".into()))?;
        Ok(Whole {
            sha256: hex::encode(state.sha256.finalize()),
            md5: state.md5.map(|m| m.finalize().into()),
        })
    }
}

fn read_part(
    mut state: State,
    path: &Path,
    total: u64,
    part_size: u64,
    digests: Digests,
) -> ReadResult {
    let remaining = total - state.offset;
    if remaining == 0 {
        // The size was taken at open: a file that grew since is not the
        // artifact that was built, and must not be half-uploaded.
        let mut probe = [0u8; 1];
        let extra = state
            .file
            .read(&mut probe)
            .map_err(|e| artifact(path, format!("reading at {}: {e}", state.offset)))?;
        if extra != 0 {
            return Err(artifact(
                path,
                format!("grew beyond {total} bytes while being uploaded"),
            ));
        }
        return Ok((state, None));
    }
    let len = remaining.min(part_size) as usize;
    let mut buf = vec![0u8; len];
    state.file.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            artifact(
                path,
                format!("shrank below {total} bytes while being uploaded"),
            )
        } else {
            artifact(path, format!("reading at {}: {e}", state.offset))
        }
    })?;
    state.sha256.update(&buf);
    if let Some(m) = state.md5.as_mut() {
        m.update(&buf);
    }
    let md5 = digests.part_md5.then(|| Md5::digest(&buf).into());
    let part = Part {
        index: state.index,
        offset: state.offset,
        data: Bytes::from(buf),
        md5,
    };
    state.offset += len as u64;
    state.index += 1;
    Ok((state, Some(part)))
}

fn artifact(path: &Path, reason: String) -> UploadError {
    UploadError::Artifact {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[tokio::test]
    async fn parts_cover_the_file_and_digests_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let digests = Digests {
            part_md5: true,
            whole_md5: true,
        };
        let mut r = PartReader::open(&path, 4096, digests).expect("open");
        let mut seen = Vec::new();
        while let Some(p) = r.next().await.expect("read") {
            assert_eq!(p.offset as usize, seen.len());
            assert_eq!(p.md5, Some(Md5::digest(&p.data).into()));
            seen.extend_from_slice(&p.data);
        }
        assert_eq!(seen, data);
        let whole = r.finish().expect("finish");
        assert_eq!(whole.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(whole.md5, Some(Md5::digest(&data).into()));
    }

    #[tokio::test]
    async fn a_file_that_shrinks_while_read_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, vec![1u8; 10_000]).expect("write");
        let mut r = PartReader::open(&path, 4096, Digests::default()).expect("open");
        assert!(r.next().await.expect("first part").is_some());
        std::fs::write(&path, vec![1u8; 100]).expect("truncate");
        // The part after the first was already being read: drain until the error.
        let mut err = None;
        for _ in 0..3 {
            match r.next().await {
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        let err = err.expect("an error");
        assert!(err.contains("shrank below 10000 bytes"), "{err}");
    }
}
