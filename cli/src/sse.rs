//! The composer's Server-Sent Events (`/composes/{id}/events`), read with
//! eventsource-stream over the response's byte stream; what each event
//! holds is `kiln_api::events::ComposeEvent`.

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use crate::composer_api::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// The events of a byte stream from `url`. A broken connection is the
/// stream's error; bytes that are not an event stream are `Unexpected`.
pub(crate) fn events<S, B>(url: &str, bytes: S) -> impl Stream<Item = Result<SseEvent, ApiError>>
where
    S: Stream<Item = Result<B, ApiError>>,
    B: AsRef<[u8]>,
{
    let url = url.to_owned();
    bytes.eventsource().map(move |ev| match ev {
        Ok(ev) => Ok(SseEvent {
            event: ev.event,
            data: ev.data,
        }),
        Err(EventStreamError::Transport(e)) => Err(e),
        Err(e @ (EventStreamError::Utf8(_) | EventStreamError::Parser(_))) => {
            Err(ApiError::Unexpected {
                url: url.clone(),
                message: format!("not an event stream: {e}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn feed(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let chunks: Vec<Result<Vec<u8>, ApiError>> =
            chunks.iter().map(|c| Ok(c.to_vec())).collect();
        events("u", futures::stream::iter(chunks))
            .map(Result::unwrap)
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_split_across_chunks_and_lines() {
        let evs = feed(&[
            b"event: sta",
            b"tus\ndata: {\"a\":",
            b"1}\n\n: keep-alive\n\nevent: log\r\ndata: x\r\ndata: y\r\n\r\n",
        ])
        .await;
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
            feed(&[b"data:plain\n\n"]).await,
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
        let got: Vec<_> = events("u", futures::stream::iter(chunks)).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().event, "a");
        assert_eq!(got[1].as_ref().unwrap().data, "2");
        assert!(got[2].is_err());
    }
}
