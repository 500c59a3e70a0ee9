//! What workers report about running jobs, kept in the database so that
//! every composer sharing it sees it: each job's phase and progress (one
//! row, replaced), its log lines (chunks, bounded per job), and once the job
//! has ended its whole log, compressed. PostgreSQL announces each report
//! with `NOTIFY`; SQLite, owned by one process, in process.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{QueueError, Result};

/// The most bytes of log lines kept per job: beyond it the oldest chunks
/// go, and the stored log says how many lines it lost.
pub const LOG_MAX_BYTES: i64 = 4 << 20;

/// The `NOTIFY` payload limit is 8000 bytes: a report whose lines do not
/// fit is announced without them, and listeners read its chunk.
pub(crate) const NOTIFY_MAX_BYTES: usize = 7800;

/// A running job's phase and progress as its worker last reported them
/// (opaque here: the composer types them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    pub job: Uuid,
    pub phase: Option<Value>,
    pub progress: Option<Value>,
    pub updated_at: DateTime<Utc>,
}

/// One report of a worker on a running job, as every subscriber hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub job: Uuid,
    pub compose: Option<Uuid>,
    /// The report's new log lines (possibly none).
    #[serde(default)]
    pub lines: Vec<String>,
    /// Set when the lines were left out of the announcement: the chunk to
    /// read them from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<i64>,
}

impl LiveEvent {
    /// The `NOTIFY` payload: the whole event when it fits, else without its
    /// lines and naming the chunk that holds them.
    pub(crate) fn payload(&self, chunk: i64) -> Result<String> {
        let whole = serde_json::to_string(self).map_err(corrupt)?;
        if whole.len() <= NOTIFY_MAX_BYTES {
            return Ok(whole);
        }
        serde_json::to_string(&LiveEvent {
            lines: Vec::new(),
            chunk: Some(chunk),
            ..self.clone()
        })
        .map_err(corrupt)
    }
}

/// A job's log: sealed (compressed, once the job ended) or still growing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogText {
    /// The lines, each ending in a newline.
    pub text: String,
    /// How many lines `text` holds.
    pub lines: i64,
    /// How many earlier lines were dropped to keep the log bounded.
    pub dropped: i64,
    /// False while the job may still add lines.
    pub sealed: bool,
}

/// The bytes a chunk of lines counts against [`LOG_MAX_BYTES`].
pub(crate) fn chunk_bytes(lines: &[String]) -> i64 {
    lines.iter().map(|l| l.len() as i64 + 1).sum()
}

/// The chunks' lines in order as one text.
pub(crate) fn join_chunks(chunks: &[Vec<String>]) -> (String, i64) {
    let mut text = String::new();
    let mut n = 0;
    for line in chunks.iter().flatten() {
        text.push_str(line);
        text.push('\n');
        n += 1;
    }
    (text, n)
}

/// A sealed log's stored form: zstd.
pub(crate) fn compress(text: &str) -> Result<Vec<u8>> {
    zstd::encode_all(text.as_bytes(), 3).map_err(|e| QueueError::Corrupt(e.to_string()))
}

pub(crate) fn decompress(body: &[u8]) -> Result<String> {
    let bytes =
        zstd::decode_all(body).map_err(|e| QueueError::Corrupt(format!("stored log: {e}")))?;
    String::from_utf8(bytes).map_err(|e| QueueError::Corrupt(format!("stored log: {e}")))
}

pub(crate) fn parse_lines(column: &str) -> Result<Vec<String>> {
    serde_json::from_str(column).map_err(corrupt)
}

fn corrupt(e: serde_json::Error) -> QueueError {
    QueueError::Corrupt(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_report_is_announced_without_its_lines() {
        let small = LiveEvent {
            job: Uuid::nil(),
            compose: None,
            lines: vec!["a".into()],
            chunk: None,
        };
        let p: LiveEvent = serde_json::from_str(&small.payload(3).unwrap()).unwrap();
        assert_eq!(p, small);
        let big = LiveEvent {
            lines: vec!["x".repeat(5000), "y".repeat(5000)],
            ..small
        };
        let p: LiveEvent = serde_json::from_str(&big.payload(3).unwrap()).unwrap();
        assert!(p.lines.is_empty());
        assert_eq!(p.chunk, Some(3));
    }

    #[test]
    fn logs_round_trip_through_compression() {
        let (text, n) = join_chunks(&[vec!["one".into(), "two".into()], vec!["three".into()]]);
        assert_eq!((text.as_str(), n), ("one\ntwo\nthree\n", 3));
        assert_eq!(decompress(&compress(&text).unwrap()).unwrap(), text);
        assert_eq!(chunk_bytes(&["ab".into(), "c".into()]), 5);
    }
}
