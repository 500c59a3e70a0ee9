//! The composer's worker API, over mutual TLS: the worker proves who it is
//! with its client certificate and only trusts the cluster's CA.

use std::time::Duration;

use kiln_api::worker::{
    FinishJob, FinishResponse, HeartbeatResponse, JobAssignment, JobProgressUpdate, LeaseState,
    ReleaseJob, RequestJob, WORKER_API_PREFIX,
};
use reqwest::StatusCode;

use crate::config::WorkerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("the composer at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// The job's lease is gone (taken back after missed heartbeats, or finished).
    #[error("the lease is gone")]
    LeaseLost,
    /// The job was canceled while running.
    #[error("the job was canceled")]
    Canceled,
    #[error("the composer answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

fn read(path: &Option<std::path::PathBuf>, what: &str) -> Result<Vec<u8>, ClientError> {
    let p = path
        .as_ref()
        .ok_or_else(|| ClientError::Setup(format!("{what} is not configured")))?;
    std::fs::read(p).map_err(|e| ClientError::Setup(format!("{what} {}: {e}", p.display())))
}

impl Client {
    pub fn new(config: &WorkerConfig) -> Result<Client, ClientError> {
        let ca = reqwest::Certificate::from_pem(&read(&config.ca, "ca")?)
            .map_err(|e| ClientError::Setup(format!("ca: {e}")))?;
        let mut identity = read(&config.cert, "cert")?;
        identity.extend(read(&config.key, "key")?);
        let identity = reqwest::Identity::from_pem(&identity)
            .map_err(|e| ClientError::Setup(format!("cert/key: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Setup(format!("TLS client: {e}")))?;
        Ok(Client {
            http,
            base: format!(
                "{}{WORKER_API_PREFIX}",
                config.composer.trim_end_matches('/')
            ),
        })
    }

    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        self.http
            .post(&url)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    async fn refused(resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        ClientError::Refused { status, body }
    }

    /// Long-polls for a job; `None` when none came within `wait`.
    pub async fn request_job(
        &self,
        req: &RequestJob,
    ) -> Result<Option<JobAssignment>, ClientError> {
        let resp = self
            .post("/jobs", req, Duration::from_secs(req.wait_secs + 30))
            .await?;
        match resp.status() {
            StatusCode::OK => {
                resp.json()
                    .await
                    .map(Some)
                    .map_err(|source| ClientError::Transport {
                        url: format!("{}/jobs", self.base),
                        source,
                    })
            }
            StatusCode::NO_CONTENT => Ok(None),
            _ => Err(Self::refused(resp).await),
        }
    }

    /// Reports progress; also renews the lease.
    pub async fn progress(
        &self,
        token: uuid::Uuid,
        update: &JobProgressUpdate,
    ) -> Result<(), ClientError> {
        let resp = self
            .post(
                &format!("/jobs/{token}/progress"),
                update,
                Duration::from_secs(30),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let hb: HeartbeatResponse =
                    resp.json().await.map_err(|source| ClientError::Transport {
                        url: self.base.clone(),
                        source,
                    })?;
                match hb.status {
                    LeaseState::Alive => Ok(()),
                    LeaseState::Canceled => Err(ClientError::Canceled),
                }
            }
            StatusCode::NOT_FOUND => Err(ClientError::LeaseLost),
            _ => Err(Self::refused(resp).await),
        }
    }

    /// Gives a job back without a result; returns its state now (`queued`,
    /// or `failed` at the composer's retry limit).
    pub async fn release(&self, token: uuid::Uuid, reason: &str) -> Result<String, ClientError> {
        let body = ReleaseJob {
            reason: reason.to_owned(),
        };
        let resp = self
            .post(
                &format!("/jobs/{token}/release"),
                &body,
                Duration::from_secs(30),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let r: FinishResponse =
                    resp.json().await.map_err(|source| ClientError::Transport {
                        url: self.base.clone(),
                        source,
                    })?;
                Ok(r.state)
            }
            StatusCode::NOT_FOUND => Err(ClientError::LeaseLost),
            StatusCode::CONFLICT => Err(ClientError::Canceled),
            _ => Err(Self::refused(resp).await),
        }
    }

    pub async fn finish(&self, token: uuid::Uuid, finish: &FinishJob) -> Result<(), ClientError> {
        let resp = self
            .post(
                &format!("/jobs/{token}/finish"),
                finish,
                Duration::from_secs(60),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(ClientError::LeaseLost),
            StatusCode::CONFLICT => Err(ClientError::Canceled),
            _ => Err(Self::refused(resp).await),
        }
    }
}
