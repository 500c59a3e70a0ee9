//! Progress and log records for whoever runs the build: osbuild's
//! `JSONSeqMonitor` (RFC 7464 records on a file descriptor), or short
//! human lines on stderr.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_api::osbuild::{
    MonitorContext, MonitorProgress, MonitorRecord, PipelineContext, StageContext,
};
use serde_json::Value;

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

    fn context(pos: &Position) -> MonitorContext {
        MonitorContext {
            origin: "org.osbuild".into(),
            pipeline: pos.pipeline.as_ref().map(|(name, id)| PipelineContext {
                name: name.clone(),
                id: id.clone(),
                stage: pos.stage.as_ref().map(|(name, id)| StageContext {
                    name: name.clone(),
                    id: id.clone(),
                }),
            }),
        }
    }

    fn progress(pos: &Position) -> MonitorProgress {
        MonitorProgress {
            name: "pipelines/sources".into(),
            total: pos.pipeline_count as i64,
            done: pos.pipeline_index as i64,
            progress: pos.pipeline.as_ref().map(|(name, _)| {
                Box::new(MonitorProgress {
                    name: format!("pipeline: {name}"),
                    total: pos.stage_count as i64,
                    done: pos.stage_index as i64,
                    progress: None,
                })
            }),
        }
    }

    fn record(pos: &Position, message: &str, result: Option<Value>) -> MonitorRecord {
        MonitorRecord {
            message: message.to_owned(),
            result,
            context: Self::context(pos),
            progress: Some(Self::progress(pos)),
            timestamp: Self::now(),
        }
    }

    fn write(&self, record: &MonitorRecord) {
        if let Some(seq) = &self.seq {
            let Ok(json) = serde_json::to_vec(record) else {
                return;
            };
            let mut buf = vec![0x1e];
            buf.extend(json);
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
        self.write(&Self::record(pos, message, None));
    }

    /// An event worth a human line too (pipeline or stage start, sources).
    pub fn event(&self, pos: &Position, message: &str) {
        self.log(pos, message);
    }

    /// A finished stage.
    pub fn result(&self, pos: &Position, result: &Value) {
        self.write(&Self::record(pos, "", Some(result.clone())));
    }
}
