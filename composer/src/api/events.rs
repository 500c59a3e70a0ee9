//! `GET /composes/{id}/events`: a Server-Sent Events stream of a compose.
//!
//! Events (`kiln_api::events::ComposeEvent`): `status` (a ComposeStatus)
//! first and after every change (job states, and the progress workers
//! report), `job` (job id, type, new state) for every job state change, and
//! `log` (job id, lines) for the log lines of running builds. The stream ends
//! after the `status` event of a finished compose.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use kiln_api::events::{ComposeEvent, JobEventData};
use kiln_api::status::ComposeStatus;
use kiln_queue::{Job, JobState};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::composes::load;
use super::error::ApiError;
use super::extract::{Caller, ComposePath};
use crate::live::LiveEvent;
use crate::status::{current, is_finished};
use crate::AppState;

fn sse_event(ev: &ComposeEvent) -> Event {
    let event = Event::default().event(ev.name());
    match ev.data() {
        Ok(data) => event.data(data),
        // Not reached: the payloads serialise infallibly.
        Err(_) => event,
    }
}

fn job_event(j: &Job) -> Event {
    sse_event(&ComposeEvent::Job(JobEventData {
        job: j.id,
        job_type: j.job_type.clone(),
        state: j.state.as_str().into(),
    }))
}

fn status_event(s: &ComposeStatus) -> Event {
    sse_event(&ComposeEvent::Status(Box::new(s.clone())))
}

/// Live status of a compose, as Server-Sent Events. kiln extension.
#[utoipa::path(get, path = "/composes/{id}/events", tag = "compose", operation_id = "getComposeEvents",
    params(("id" = String, Path, description = "Compose id")),
    responses(
        (status = 200, description = "text/event-stream of `status` (ComposeStatus), `job` (JobEventData) and `log` (LogEventData) events", content_type = "text/event-stream", body = String),
        (status = 400, body = kiln_api::error::Error),
        (status = 404, body = kiln_api::error::Error)))]
pub async fn get_events(
    State(state): State<AppState>,
    caller: Caller,
    id: ComposePath,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the status, so no change falls between the two.
    let mut rx = state.queue.subscribe();
    let mut live_rx = state.live.subscribe();
    let (compose, jobs) = load(&state, &caller, id).await?;
    let (tx, out) = mpsc::channel::<Result<Event, Infallible>>(64);
    let out = futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|event| (event, out))
    });
    tokio::spawn(async move {
        // The state each job was last reported in. Events come from the
        // queue's broadcast, and the database has the last word: a change the
        // broadcast did not deliver (lag, or a whole transaction read at once)
        // is still reported, from the database, before the status.
        let mut known: HashMap<Uuid, JobState> = jobs.iter().map(|j| (j.id, j.state)).collect();
        let mut finished = is_finished(&jobs);
        let queue = state.queue.clone();
        let status_now = |jobs: Vec<Job>| {
            let (queue, compose) = (queue.clone(), compose.clone());
            async move {
                match current(queue.as_ref(), &compose, &jobs).await {
                    Ok(s) => Some(Ok(status_event(&s))),
                    Err(e) => {
                        tracing::error!(error = %e, compose = %compose.id, "event stream: reading live state");
                        None
                    }
                }
            }
        };
        let Some(first) = status_now(jobs).await else {
            return;
        };
        if tx.send(first).await.is_err() || finished {
            return;
        }
        while !finished {
            tokio::select! {
                // The client went away: the task and its subscriptions go too,
                // also while the compose is quiet.
                _ = tx.closed() => return,
                ev = rx.recv() => match ev {
                    Ok(ev) if ev.compose == Some(compose.id) => {
                        if known.get(&ev.job) == Some(&ev.state) {
                            continue;
                        }
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                ev = live_rx.recv() => match ev {
                    // Log lines go out as they are; the status below carries
                    // the progress the same report brought.
                    Ok(LiveEvent { compose: Some(c), log }) if c == compose.id => {
                        if !log.lines.is_empty()
                            && tx.send(Ok(sse_event(&ComposeEvent::Log(log)))).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
            }
            let jobs = match state.queue.compose_jobs(compose.id).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(error = %e, compose = %compose.id, "event stream: reading jobs");
                    return;
                }
            };
            for j in &jobs {
                if known.insert(j.id, j.state) != Some(j.state)
                    && tx.send(Ok(job_event(j))).await.is_err()
                {
                    return;
                }
            }
            finished = is_finished(&jobs);
            let Some(status) = status_now(jobs).await else {
                return;
            };
            if tx.send(status).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(out).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
