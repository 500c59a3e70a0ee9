//! `GET /composes/{id}/events` (kiln extension): the Server-Sent Events of a
//! compose. Each event's SSE name (`event:`) says which payload its `data:`
//! holds, as JSON:
//!
//! - `status`: a [`ComposeStatus`], first and after every change;
//! - `job`: a [`JobEventData`], for every job state change;
//! - `log`: a [`LogEventData`], the log lines of a running build.
//!
//! The composer writes them and the CLI reads them through [`ComposeEvent`],
//! so the name and the payload cannot drift apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::status::ComposeStatus;

/// The data of a `job` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEventData {
    pub job: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: String,
}

/// The data of a `log` event: new log lines of a running build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogEventData {
    pub job: Uuid,
    #[serde(default)]
    pub lines: Vec<String>,
}

/// One event of a compose's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ComposeEvent {
    /// Boxed: a status is several times the size of the other payloads.
    Status(Box<ComposeStatus>),
    Job(JobEventData),
    Log(LogEventData),
}

impl ComposeEvent {
    /// The event's SSE name.
    pub fn name(&self) -> &'static str {
        match self {
            ComposeEvent::Status(_) => "status",
            ComposeEvent::Job(_) => "job",
            ComposeEvent::Log(_) => "log",
        }
    }

    /// The event's SSE data: its payload as JSON.
    pub fn data(&self) -> serde_json::Result<String> {
        match self {
            ComposeEvent::Status(s) => serde_json::to_string(s),
            ComposeEvent::Job(j) => serde_json::to_string(j),
            ComposeEvent::Log(l) => serde_json::to_string(l),
        }
    }

    /// Reads an event from its SSE name and data. `Ok(None)` for a name
    /// this version does not know (a newer composer's), which a reader skips.
    pub fn parse(name: &str, data: &str) -> serde_json::Result<Option<ComposeEvent>> {
        Ok(Some(match name {
            "status" => ComposeEvent::Status(serde_json::from_str(data)?),
            "job" => ComposeEvent::Job(serde_json::from_str(data)?),
            "log" => ComposeEvent::Log(serde_json::from_str(data)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_what_was_written() {
        let job = Uuid::new_v4();
        for ev in [
            ComposeEvent::Job(JobEventData {
                job,
                job_type: "build".into(),
                state: "running".into(),
            }),
            ComposeEvent::Log(LogEventData {
                job,
                lines: vec!["a".into(), "b".into()],
            }),
        ] {
            let back = ComposeEvent::parse(ev.name(), &ev.data().unwrap()).unwrap();
            assert_eq!(back, Some(ev));
        }
        // The wire shape: `type` for the job's type.
        assert_eq!(
            ComposeEvent::Job(JobEventData {
                job,
                job_type: "build".into(),
                state: "running".into()
            })
            .data()
            .unwrap(),
            format!(r#"{{"job":"{job}","type":"build","state":"running"}}"#)
        );
        assert_eq!(ComposeEvent::parse("ping", "{}").unwrap(), None);
        assert!(ComposeEvent::parse("job", "{}").is_err());
    }
}
