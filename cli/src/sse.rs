//! A Server-Sent Events reader (the `text/event-stream` format of the HTML
//! standard): enough for the composer's `/composes/{id}/events`.

use futures::{Stream, StreamExt};

use crate::composer_api::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Accumulates lines into events.
#[derive(Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            // A blank line dispatches; an event without data is dropped.
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // id, retry: not used
        }
        None
    }
}

/// The events of a byte stream.
pub fn events<S, B>(bytes: S) -> impl Stream<Item = Result<SseEvent, ApiError>>
where
    S: Stream<Item = Result<B, ApiError>> + Unpin,
    B: AsRef<[u8]>,
{
    let state = (
        bytes,
        SseParser::default(),
        std::collections::VecDeque::new(),
    );
    futures::stream::unfold(state, |(mut bytes, mut parser, mut ready)| async move {
        loop {
            if let Some(ev) = ready.pop_front() {
                return Some((Ok(ev), (bytes, parser, ready)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => ready.extend(parser.feed(chunk.as_ref())),
                Some(Err(e)) => return Some((Err(e), (bytes, parser, ready))),
                None => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_lines() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: sta").is_empty());
        assert!(p.feed(b"tus\ndata: {\"a\":").is_empty());
        let evs = p.feed(b"1}\n\n: keep-alive\n\nevent: log\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "status".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "log".into(),
                    data: "x\ny".into()
                },
            ]
        );
        assert_eq!(
            p.feed(b"data:plain\n\n"),
            vec![SseEvent {
                event: "message".into(),
                data: "plain".into()
            }]
        );
    }

    #[tokio::test]
    async fn a_stream_of_chunks_gives_its_events_and_errors() {
        let chunks: Vec<Result<Vec<u8>, ApiError>> = vec![
            Ok(b"event: a\ndata: 1\n".to_vec()),
            Ok(b"\nevent: b\ndata: 2\n\n".to_vec()),
            Err(ApiError::Unreachable {
                url: "u".into(),
                cause: "gone".into(),
            }),
        ];
        let got: Vec<_> = events(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().event, "a");
        assert_eq!(got[1].as_ref().unwrap().data, "2");
        assert!(got[2].is_err());
    }
}
