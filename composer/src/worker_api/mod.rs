//! The worker API under `/api/worker/v1`, on its own listener with mutual
//! TLS (`tls.rs`): workers long-poll for jobs, heart-beat and finish them.
//! The protocol's types are `kiln_api::worker`.
//!
//! Invariant: only a peer whose client certificate chains to the configured
//! CA and names a host in `allowed_domains` gets a job. The handshake refuses
//! everyone else, and the worker's name recorded on the job is the
//! certificate's, never one the peer claims.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kiln_api::error::ErrorKind;
use kiln_api::worker::{
    FinishJob, FinishResponse, HeartbeatResponse, JobAssignment, JobProgressUpdate, LeaseState,
    RequestJob, WORKER_API_PREFIX,
};
use kiln_queue::{DequeueFilter, LeaseStatus, Outcome, QueueError};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::JsonBody;
use crate::config::WorkerBinding;
use crate::jobs::JobsError;
use crate::AppState;

pub mod tls;

use tls::AllowedDomains;
pub use tls::{load as load_tls, WorkerTls, WorkerTlsError};

/// The worker on the other end of a connection: the allowed DNS name of its
/// client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity(pub String);

/// A peer that has not finished its handshake by then is dropped, so that
/// idle connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker API's routes. Each connection adds its [`WorkerIdentity`].
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/jobs", post(request_job))
        .route("/jobs/{token}/heartbeat", post(heartbeat))
        .route("/jobs/{token}/progress", post(progress))
        .route("/jobs/{token}/finish", post(finish))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(WORKER_API_PREFIX, api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Accepts TLS connections on `listener` and serves the worker API on them
/// until `shutdown` resolves; open connections are then closed.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: WorkerTls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let app = router(state);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Forget connections that ended.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::error!(error = %e, "accepting a worker connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let allowed = tls.allowed.clone();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "worker refused at the TLS handshake");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "worker dropped: no TLS handshake in time");
                    return;
                }
            };
            // The verifier let the peer in only with an allowed name, so this
            // finds it; a connection without one is dropped all the same.
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| allowed.worker_name(c));
            let Some(name) = name else {
                tracing::warn!(%peer, "worker connection without an allowed certificate name");
                return;
            };
            tracing::debug!(%peer, worker = %name, "worker connected");
            let service = TowerToHyperService::new(app.layer(Extension(WorkerIdentity(name))));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "worker connection ended");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// `POST /jobs`: long-polls the queue for a job this worker runs.
async fn request_job(
    State(state): State<AppState>,
    Extension(worker): Extension<WorkerIdentity>,
    JsonBody(request): JsonBody<RequestJob>,
) -> Result<Response, ApiError> {
    request.validate()?;
    let wait = Duration::from_secs(request.wait_secs);
    let Some(filter) = bound(&state.config.worker_api.bindings, &worker.0, request) else {
        // Nothing this worker may take: an idle poll, so it does not spin.
        tokio::time::sleep(wait).await;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let lease = state.queue.dequeue(&filter, &worker.0, wait).await?;
    let Some(lease) = lease else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // The job's typed arguments and what its dependencies made (a build
    // gets its manifest job's result). A job that cannot be read that way
    // cannot run anywhere: it fails, and the worker asks again.
    let job = match crate::jobs::assignment(state.queue.as_ref(), &lease.job).await {
        Ok(job) => job,
        Err(JobsError::Queue(e)) => return Err(e.into()),
        Err(JobsError::Contract(e)) => {
            tracing::error!(job = %lease.job.id, error = %e, "a job that cannot be handed out failed");
            crate::jobs::refuse(state.queue.as_ref(), lease.token, e.to_string()).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    tracing::info!(job = %lease.job.id, job_type = %lease.job.job_type, worker = %worker.0, "job handed to a worker");
    state
        .live
        .leased(lease.token, lease.job.id, lease.job.compose_id);
    Ok(Json(JobAssignment {
        token: lease.token,
        id: lease.job.id,
        compose_id: lease.job.compose_id,
        job,
    })
    .into_response())
}

/// What `worker` may dequeue of what it asks for: its request narrowed to
/// the first binding that names it, or everything it asks without bindings.
/// `None` when that leaves nothing (or no binding names it).
fn bound(bindings: &[WorkerBinding], worker: &str, request: RequestJob) -> Option<DequeueFilter> {
    let mut filter = DequeueFilter {
        job_types: request.types,
        arches: vec![request.arch],
        channels: request.channels,
    };
    if bindings.is_empty() {
        return Some(filter);
    }
    let names = |pattern: &String| {
        AllowedDomains::parse(std::slice::from_ref(pattern)).is_ok_and(|p| p.permits(worker))
    };
    let Some(b) = bindings.iter().find(|b| names(&b.worker)) else {
        tracing::warn!(
            worker,
            "no [[worker_api.bindings]] names this worker: it takes nothing"
        );
        return None;
    };
    if !b.job_types.is_empty() {
        filter.job_types.retain(|t| b.job_types.contains(t));
        if filter.job_types.is_empty() {
            return None;
        }
    }
    if !b.tenants.is_empty() {
        if filter.channels.is_empty() {
            filter.channels = b.tenants.clone();
        } else {
            filter.channels.retain(|c| b.tenants.contains(c));
            if filter.channels.is_empty() {
                return None;
            }
        }
    }
    Some(filter)
}

/// `POST /jobs/{token}/heartbeat`: renews the lease.
async fn heartbeat(
    State(state): State<AppState>,
    Extension(worker): Extension<WorkerIdentity>,
    LeaseToken(token): LeaseToken,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    own_lease(&state, &worker, token).await?;
    let status = match state.queue.heartbeat(token).await? {
        LeaseStatus::Alive => LeaseState::Alive,
        LeaseStatus::Canceled => LeaseState::Canceled,
        LeaseStatus::Lost => return Err(lease_lost()),
    };
    Ok(Json(HeartbeatResponse { status }))
}

/// `POST /jobs/{token}/progress`: progress and log lines of a running job;
/// renews the lease like a heartbeat.
async fn progress(
    State(state): State<AppState>,
    Extension(worker): Extension<WorkerIdentity>,
    LeaseToken(token): LeaseToken,
    JsonBody(update): JsonBody<JobProgressUpdate>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    update.validate()?;
    own_lease(&state, &worker, token).await?;
    let status = match state.queue.heartbeat(token).await? {
        LeaseStatus::Alive => LeaseState::Alive,
        LeaseStatus::Canceled => LeaseState::Canceled,
        LeaseStatus::Lost => return Err(lease_lost()),
    };
    // Leases another composer handed out renew here, but show no progress.
    if let Some((job, compose)) = state.live.lease(token) {
        state
            .live
            .update(job, compose, update.phase, update.progress, update.log);
    }
    Ok(Json(HeartbeatResponse { status }))
}

/// `POST /jobs/{token}/finish`: ends the job with its result.
async fn finish(
    State(state): State<AppState>,
    Extension(worker): Extension<WorkerIdentity>,
    LeaseToken(token): LeaseToken,
    JsonBody(request): JsonBody<FinishJob>,
) -> Result<Json<FinishResponse>, ApiError> {
    request.validate()?;
    own_lease(&state, &worker, token).await?;
    let outcome = if request.success {
        Outcome::Success(
            request
                .result
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        )
    } else {
        Outcome::Failure {
            reason: request.reason.unwrap_or_default(),
            result: request.result,
        }
    };
    let finished = state.queue.finish(token, outcome).await;
    state.live.ended(token);
    let job = match finished {
        Ok(job) => job,
        Err(QueueError::LeaseLost) => return Err(lease_lost()),
        Err(QueueError::Canceled(id)) => {
            return Err(ApiError::new(
                ErrorKind::JobCanceled,
                format!("job {id} was canceled; its result is not kept"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(job = %job.id, state = job.state.as_str(), worker = %worker.0, "worker finished a job");
    Ok(Json(FinishResponse {
        id: job.id,
        state: job.state.as_str().to_owned(),
    }))
}

/// The lease a `/jobs/{token}/…` path names.
struct LeaseToken(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for LeaseToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let not_a_token = || {
            ApiError::field(
                ErrorKind::InvalidField,
                "token",
                "not a lease token (a UUID)",
            )
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_a_token())?;
        Uuid::parse_str(&raw)
            .map(LeaseToken)
            .map_err(|_| not_a_token())
    }
}

/// Only the worker a job was leased to may renew or finish it; to any other
/// the lease does not exist.
async fn own_lease(state: &AppState, worker: &WorkerIdentity, token: Uuid) -> Result<(), ApiError> {
    match state.queue.leased_to(token).await? {
        Some(holder) if holder == worker.0 => Ok(()),
        Some(holder) => {
            tracing::warn!(worker = %worker.0, holder = %holder, "a worker used another worker's lease");
            Err(lease_lost())
        }
        None => Err(lease_lost()),
    }
}

fn lease_lost() -> ApiError {
    ApiError::new(
        ErrorKind::LeaseNotFound,
        "no job is leased under this token: it was taken back after missed heartbeats, or finished",
    )
}

// Paths of the worker API hold lease tokens, which are not echoed: logs
// may keep reasons.
async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!("no such resource; the worker API is under {WORKER_API_PREFIX}/jobs"),
    )
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed here; the worker API takes POST"),
    )
}
