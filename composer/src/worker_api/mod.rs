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
use kiln_api::boot::{Action, BootChange};
use kiln_api::compose::UploadTarget;
use kiln_api::error::ErrorKind;
use kiln_api::jobs::{Boot, BootResult, Build, JobKind, JobResult, JobType, ANY_ARCH};
use kiln_api::status::UploadDetails;
use kiln_api::worker::{
    FinishJob, FinishResponse, HeartbeatResponse, JobAssignment, JobProgressUpdate, LeaseState,
    ReleaseJob, RequestJob, WORKER_API_PREFIX,
};
use kiln_queue::{DequeueFilter, Job, LeaseStatus, Outcome, QueueError};
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
        .route("/jobs/{token}/release", post(release))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(WORKER_API_PREFIX, api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::presence::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::worker_api_layer,
        ))
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
        let tls = tls.clone();
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
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .cloned();
            let name = cert.as_ref().and_then(|c| allowed.worker_name(c));
            let (Some(name), Some(cert)) = (name, cert) else {
                tracing::warn!(%peer, "worker connection without an allowed certificate name");
                return;
            };
            tracing::debug!(%peer, worker = %name, "worker connected");
            // The certificate is checked again on every request: a worker
            // revoked while this connection stays open gets no further answer.
            let still_valid = axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let ok = tls.still_valid(&cert);
                    async move {
                        if ok {
                            next.run(req).await
                        } else {
                            ApiError::new(
                                ErrorKind::CertificateRevoked,
                                "this worker's certificate is no longer valid (revoked)",
                            )
                            .into_response()
                        }
                    }
                },
            );
            let service = TowerToHyperService::new(
                app.layer(Extension(WorkerIdentity(name)))
                    .layer(still_valid),
            );
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
    crate::presence::seen(&state, &worker.0, Some((&request.arch, &request.channels))).await;
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
    let request_id = lease
        .job
        .request_id
        .as_deref()
        .and_then(kiln_api::request_id::RequestId::parse);
    tracing::info!(
        job = %lease.job.id,
        job_type = %lease.job.job_type,
        worker = %worker.0,
        request_id = %request_id.as_ref().map(|r| r.as_str()).unwrap_or_default(),
        "job handed to a worker"
    );
    state.metrics.dequeued(&lease.job);
    Ok(Json(JobAssignment {
        token: lease.token,
        id: lease.job.id,
        compose_id: lease.job.compose_id,
        request_id,
        job,
    })
    .into_response())
}

/// `POST /jobs/{token}/release`: the worker gives its job back without a
/// result; it is queued again at once (or failed at the retry limit).
async fn release(
    State(state): State<AppState>,
    Extension(worker): Extension<WorkerIdentity>,
    LeaseToken(token): LeaseToken,
    JsonBody(request): JsonBody<ReleaseJob>,
) -> Result<Json<FinishResponse>, ApiError> {
    request.validate()?;
    let job = own_lease(&state, &worker, token).await?;
    let max_retries = state.config.queue.max_retries;
    let released = state
        .queue
        .hand_back(token, request.reason.trim(), max_retries)
        .await;
    if let Some(c) = job.compose_id {
        state.statuses.forget(c);
    }
    let new_state = match released {
        Ok(s) => s,
        Err(QueueError::LeaseLost) => return Err(lease_lost()),
        Err(QueueError::Canceled(id)) => {
            seal_log(&state, id).await;
            return Err(ApiError::new(
                ErrorKind::JobCanceled,
                format!("job {id} was canceled"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    seal_log(&state, job.id).await;
    tracing::warn!(job = %job.id, worker = %worker.0, state = new_state.as_str(), reason = %request.reason.trim(), "a worker gave its job back");
    Ok(Json(FinishResponse {
        id: job.id,
        state: new_state.as_str().to_owned(),
    }))
}

/// Seals a job's log once it has ended (a job that goes on has nothing to
/// seal); a failure leaves it to the housekeeping's next round.
async fn seal_log(state: &AppState, job: Uuid) {
    if let Err(e) = state.queue.seal_log(job).await {
        tracing::warn!(%job, error = %e, "sealing a job's log; the housekeeping will");
    }
}

/// What `worker` may dequeue of what it asks for: its request narrowed to
/// the first binding that names it, or everything it asks without bindings.
/// `None` when that leaves nothing (or no binding names it).
fn bound(bindings: &[WorkerBinding], worker: &str, request: RequestJob) -> Option<DequeueFilter> {
    let mut filter = DequeueFilter {
        job_types: request.types,
        // Boot jobs build nothing: any worker that takes them may.
        arches: vec![request.arch, ANY_ARCH.to_owned()],
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
    let job = own_lease(&state, &worker, token).await?;
    let status = match state.queue.heartbeat(token).await? {
        LeaseStatus::Alive => LeaseState::Alive,
        LeaseStatus::Canceled => LeaseState::Canceled,
        LeaseStatus::Lost => return Err(lease_lost()),
    };
    // Into the database: every composer shows it (status, events, logs).
    let value = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null());
    let phase = value(
        update
            .phase
            .map(serde_json::to_value)
            .transpose()
            .map_err(ApiError::internal)?,
    );
    let progress = value(
        update
            .progress
            .map(serde_json::to_value)
            .transpose()
            .map_err(ApiError::internal)?,
    );
    state
        .queue
        .report_live(
            job.id,
            job.compose_id,
            phase.as_ref(),
            progress.as_ref(),
            &update.log,
        )
        .await?;
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
    let job = own_lease(&state, &worker, token).await?;
    if let Some(result) = &request.result {
        let typed = check_result(&job, result).inspect_err(|e| {
            tracing::warn!(job = %job.id, worker = %worker.0, reason = %e.reason, "a worker's result was refused");
        })?;
        // What boot delivery did is recorded first: the boot service
        // changed whether or not the lease is still good.
        let failed = (!request.success).then(|| request.reason.as_deref().unwrap_or(""));
        record_boot(&state, &job, &typed, failed).await?;
    }
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
    if let Some(c) = job.compose_id {
        state.statuses.forget(c);
    }
    seal_log(&state, job.id).await;
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
    state.metrics.finished(&job);
    Ok(Json(FinishResponse {
        id: job.id,
        state: job.state.as_str().to_owned(),
    }))
}

/// The history and node records of a `boot` job's or a `build` job's
/// checked result (`crate::boot_records`).
async fn record_boot(
    state: &AppState,
    job: &Job,
    result: &JobResult,
    failed: Option<&str>,
) -> Result<(), ApiError> {
    match result {
        JobResult::Boot(r) => {
            let args = Boot::decode_args(&job.args).map_err(ApiError::internal)?;
            crate::boot_records::boot_job(state.queue.as_ref(), job, &args, r, failed).await?
        }
        // A failed build's boot targets (each with its own status) still
        // record what they published.
        JobResult::Build(r) => {
            let args = Build::decode_args(&job.args).map_err(ApiError::internal)?;
            crate::boot_records::build_job(state.queue.as_ref(), job, &args, r).await?
        }
        _ => {}
    }
    Ok(())
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
async fn own_lease(
    state: &AppState,
    worker: &WorkerIdentity,
    token: Uuid,
) -> Result<Job, ApiError> {
    match state.queue.leased(token).await? {
        Some(job) if job.worker.as_deref() == Some(worker.0.as_str()) => Ok(job),
        Some(job) => {
            tracing::warn!(worker = %worker.0, holder = ?job.worker, "a worker used another worker's lease");
            Err(lease_lost())
        }
        None => Err(lease_lost()),
    }
}

/// A result a worker finishes `job` with, checked before it is stored: it
/// is the job kind's typed result, and a build's upload statuses are one
/// per target of the image, in order, each of its target's type, with URLs
/// of that type's scheme only. What the composer then shows its callers
/// cannot be a worker's invention. Returns the result typed.
fn check_result(job: &Job, result: &serde_json::Value) -> Result<JobResult, ApiError> {
    let bad = |field: String, m: String| ApiError::field(ErrorKind::InvalidField, field, m);
    let kind = JobKind::parse(&job.job_type).map_err(ApiError::internal)?;
    let typed = JobResult::decode(kind, result).map_err(|e| {
        bad(
            "result".into(),
            format!("not a {} result: {e}", kind.as_str()),
        )
    })?;
    let build = match &typed {
        JobResult::Build(build) => build,
        JobResult::Boot(boot) => return check_boot_result(job, boot).map(|()| typed),
        _ => return Ok(typed),
    };
    let args = Build::decode_args(&job.args).map_err(ApiError::internal)?;
    if build.uploads.len() > args.targets.len() {
        return Err(bad(
            "result.uploads".into(),
            format!(
                "{} upload statuses for {} targets",
                build.uploads.len(),
                args.targets.len()
            ),
        ));
    }
    for (i, (status, target)) in build.uploads.iter().zip(&args.targets).enumerate() {
        let at = format!("result.uploads[{i}]");
        if status.target_type != target.kind() {
            return Err(bad(
                format!("{at}.type"),
                format!(
                    "{:?} where the image's target is {:?}",
                    status.target_type,
                    target.kind()
                ),
            ));
        }
        let details = status
            .details()
            .map_err(|e| bad(format!("{at}.options"), e.to_string()))?;
        let urls: Vec<&str> = match &details {
            UploadDetails::Stored(s) => s
                .url
                .iter()
                .map(String::as_str)
                .chain(s.files.iter().map(|f| f.url.as_str()))
                .collect(),
            UploadDetails::Boot(b) => {
                if let UploadTarget::Boot(options) = target {
                    let published = match &b.plan.action {
                        Action::Publish { image, .. } => image.image_name == options.image_name,
                        _ => false,
                    };
                    if !published || b.dry_run != options.dry_run.unwrap_or(false) {
                        return Err(bad(
                            format!("{at}.options.plan"),
                            format!(
                                "not a publish of image {:?} as the target asks",
                                options.image_name
                            ),
                        ));
                    }
                }
                b.url.iter().map(String::as_str).collect()
            }
            UploadDetails::Failed(_) => Vec::new(),
        };
        let schemes: &[&str] = match target {
            UploadTarget::Local(_) => &["file"],
            UploadTarget::AwsS3(_) => &["s3"],
            UploadTarget::Gcp(_) => &["gs"],
            UploadTarget::Azure(_) | UploadTarget::Boot(_) => &["https", "http"],
        };
        for url in urls {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if !schemes.contains(&scheme) {
                return Err(bad(
                    format!("{at}.options"),
                    format!("URL {url:?} is not a {} location", target.kind()),
                ));
            }
        }
    }
    Ok(typed)
}

/// A `boot` job's result is what its change asks: a publish of its image,
/// a rollback, or (a read) no plan at all.
fn check_boot_result(job: &Job, result: &BootResult) -> Result<(), ApiError> {
    let args = Boot::decode_args(&job.args).map_err(ApiError::internal)?;
    let fits = match (&args.change, result.plan.as_ref().map(|p| &p.action)) {
        (BootChange::Publish { image, .. }, Some(Action::Publish { image: done, .. })) => {
            image == done
        }
        (BootChange::Canary { image, .. }, Some(Action::Canary { image: done, .. }))
        | (BootChange::Tag { image, .. }, Some(Action::Tag { image: done, .. })) => image == done,
        (
            BootChange::Promote { image, canary, .. },
            Some(Action::Promote {
                image: done,
                canary: promoted,
                ..
            }),
        ) => image == done && canary == promoted,
        (BootChange::Rollback { .. }, Some(Action::Rollback)) => true,
        (BootChange::Show { .. }, None) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(ApiError::field(
            ErrorKind::InvalidField,
            "result.plan",
            "not the plan of the change the job asks for",
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build_job() -> Job {
        Job {
            id: Uuid::new_v4(),
            compose_id: None,
            job_type: "build".into(),
            arch: "x86_64".into(),
            channel: "default".into(),
            args: json!({"image": 0, "image_type": "tar", "targets": [
                {"type": "aws.s3", "upload_options": {"region": "us-east-1"}},
                {"type": "local", "upload_options": {}},
            ]}),
            priority: 0,
            dependencies: vec![],
            state: kiln_queue::JobState::Running,
            result: None,
            reason: None,
            worker: Some("w1".into()),
            retries: 0,
            created_at: chrono::Utc::now(),
            queued_at: None,
            started_at: None,
            finished_at: None,
            request_id: None,
        }
    }

    fn stored(kind: &str, url: &str) -> serde_json::Value {
        json!({"status": "success", "type": kind, "options": {"url": url, "files": [
            {"name": "disk.tar", "url": url, "size": 1, "sha256": "00"}]}})
    }

    #[test]
    fn a_build_result_names_only_its_own_targets() {
        let job = build_job();
        let ok = json!({"uploads": [stored("aws.s3", "s3://images/c/disk.tar"),
                                    stored("local", "file:///srv/images/disk.tar")],
                        "artifacts": [], "log": null});
        assert!(
            check_result(&job, &ok).is_ok(),
            "{:?}",
            check_result(&job, &ok).err()
        );
        for (result, field) in [
            // Another target's type in the first place.
            (
                json!({"uploads": [stored("gcp", "gs://b/disk.tar")], "log": null}),
                "result.uploads[0].type",
            ),
            // A URL that is not where an S3 target puts things.
            (
                json!({"uploads": [stored("aws.s3", "https://attacker.example/x")], "log": null}),
                "result.uploads[0].options",
            ),
            (
                json!({"uploads": [stored("aws.s3", "s3://b/x"), stored("local", "http://127.0.0.1/x")], "log": null}),
                "result.uploads[1].options",
            ),
            // More statuses than targets.
            (
                json!({"uploads": [stored("aws.s3", "s3://b/x"), stored("local", "file:///x"), stored("local", "file:///y")], "log": null}),
                "result.uploads",
            ),
            // Not a build result at all.
            (json!({"uploads": "everything"}), "result"),
        ] {
            let e = check_result(&job, &result).expect_err(field);
            assert_eq!(e.field.as_deref(), Some(field), "{}", e.reason);
        }
    }

    /// A boot job's result must be its own change's plan: a worker cannot
    /// report a rollback for a publish, another image, or a plan for a read.
    #[test]
    fn a_boot_result_is_the_plan_of_its_change() {
        let job = |change: serde_json::Value| Job {
            job_type: "boot".into(),
            arch: ANY_ARCH.into(),
            args: json!({"change": change, "requested_by": {"tenant": "default"}}),
            ..build_job()
        };
        let publish = job(json!({"action": "publish",
            "image": {"image_name": "compute", "version": "v1", "arch": "x86_64"},
            "nodes": {"group": "compute"}, "extra_params": "", "dry_run": false}));
        let show = job(json!({"action": "show", "nodes": {"group": "compute"}}));
        let plan = |action: serde_json::Value| {
            let mut p =
                json!({"id": "d1", "selection": "group compute", "changes": [], "unchanged": []});
            p.as_object_mut()
                .unwrap()
                .extend(action.as_object().unwrap().clone());
            json!({"plan": p, "nodes": []})
        };
        let published = |name: &str| {
            plan(json!({"action": "publish", "compose_id": Uuid::nil(),
                "image": {"image_name": name, "version": "v1", "arch": "x86_64"}}))
        };
        assert!(check_result(&publish, &published("compute")).is_ok());
        assert!(check_result(&show, &json!({"plan": null, "nodes": []})).is_ok());
        for (j, result) in [
            (&publish, published("login")),
            (&publish, plan(json!({"action": "rollback"}))),
            (&publish, json!({"plan": null, "nodes": []})),
            (&show, published("compute")),
        ] {
            let e = check_result(j, &result).expect_err("refused");
            assert_eq!(e.field.as_deref(), Some("result.plan"), "{result}");
        }
    }
}
