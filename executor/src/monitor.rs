//! Progress and log records for whoever runs the build: osbuild's
//! `JSONSeqMonitor` (RFC 7464 records on a file descriptor), or short
//! human lines on stderr.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where the build stands: which pipeline of how many, which stage.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub pipeline: Option<(String, Option<String>)>,
    pub stage: Option<(String, String)>,
    pub pipeline_index: usize,
    pub pipeline_count: usize,
    pub stage_index: usize,
    pub stage_count: usize,
}

pub struct Monitor {
    seq: Option<Mutex<File>>,
    human: bool,
}

impl Monitor {
    /// `fd`: the descriptor of `--monitor-fd` when `--monitor JSONSeqMonitor`.
    pub fn new(fd: Option<i32>, human: bool) -> std::io::Result<Monitor> {
        let seq = match fd {
            Some(fd) => {
                // Fail early on a descriptor that is not open.
                // SAFETY: the borrow lasts for this one call, and fcntl on a
                // closed descriptor is an error, not undefined behaviour.
                rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
                // SAFETY: the caller passed this descriptor for us to own.
                Some(Mutex::new(unsafe { File::from_raw_fd(fd) }))
            }
            None => None,
        };
        Ok(Monitor { seq, human })
    }

    fn context(pos: &Position) -> Value {
        let mut ctx = json!({"origin": "org.osbuild"});
        if let Some((name, id)) = &pos.pipeline {
            let mut p = json!({"name": name, "id": id});
            if let Some((sname, sid)) = &pos.stage {
                p["stage"] = json!({"name": sname, "id": sid});
            }
            ctx["pipeline"] = p;
        }
        ctx
    }

    fn progress(pos: &Position) -> Value {
        let mut prog = json!({"name": "pipelines/sources", "total": pos.pipeline_count, "done": pos.pipeline_index});
        if let Some((name, _)) = &pos.pipeline {
            prog["progress"] = json!({"name": format!("pipeline: {name}"), "total": pos.stage_count, "done": pos.stage_index});
        }
        prog
    }

    fn write(&self, record: &Value) {
        if let Some(seq) = &self.seq {
            let mut buf = vec![0x1e];
            buf.extend(record.to_string().into_bytes());
            buf.push(b'\n');
            if let Ok(mut f) = seq.lock() {
                // A reader that went away must not fail the build.
                let _ = f.write_all(&buf);
            }
        }
    }

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    /// A log line (a stage's output, or the executor's own message).
    pub fn log(&self, pos: &Position, message: &str) {
        if self.human {
            eprintln!("{message}");
        }
        self.write(&json!({
            "message": message,
            "context": Self::context(pos),
            "progress": Self::progress(pos),
            "timestamp": Self::now(),
        }));
    }

    /// An event worth a human line too (pipeline or stage start, sources).
    pub fn event(&self, pos: &Position, message: &str) {
        self.log(pos, message);
    }

    /// A finished stage.
    pub fn result(&self, pos: &Position, result: &Value) {
        self.write(&json!({
            "message": "",
            "result": result,
            "context": Self::context(pos),
            "progress": Self::progress(pos),
            "timestamp": Self::now(),
        }));
    }
}
