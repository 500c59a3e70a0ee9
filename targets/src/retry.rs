//! One retry loop for every request kiln makes to a storage service.

use std::future::Future;

use crate::{Event, RetryPolicy, UploadError};

/// Why one attempt at a request failed.
pub(crate) enum Failure {
    /// Worth another try: the connection failed or was cut, the request timed
    /// out, or the service answered 5xx, 429 or 408.
    Transient(String),
    /// Trying again will not help (refused credentials, missing bucket, …).
    Permanent(String),
}

pub(crate) type Observer<'a> = &'a (dyn Fn(Event<'_>) + Send + Sync);

/// Runs `attempt` until it succeeds, fails permanently, or `policy`'s
/// attempts are used up, sleeping with exponential backoff in between and
/// telling `on_event` about each retry.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    target: &'static str,
    operation: &str,
    on_event: Observer<'_>,
    mut attempt: F,
) -> Result<T, UploadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 1;
    loop {
        let message = match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Permanent(message)) => message,
            Err(Failure::Transient(message)) if n < max => {
                let delay = policy.backoff(n);
                n += 1;
                tracing::warn!(target, operation, attempt = n, ?delay, error = %message, "retrying");
                on_event(Event::Retry {
                    operation,
                    attempt: n,
                    delay,
                    error: &message,
                });
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(Failure::Transient(message)) => message,
        };
        return Err(UploadError::Storage {
            target,
            operation: operation.to_string(),
            attempts: n,
            message,
        });
    }
}

/// Whether an HTTP status is worth retrying.
pub(crate) fn transient_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// An error with its causes, which is where "connection refused" lives.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 1,
            max_backoff_ms: 2,
            request_timeout_secs: 1,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let observe = |e: Event<'_>| {
            if let Event::Retry { .. } = e {
                retries.fetch_add(1, Ordering::SeqCst);
            }
        };
        let r: Result<(), _> = with_retries(&quick(), "s3", "PUT part 1", &observe, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Transient("HTTP 503: SlowDown".into()))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(retries.load(Ordering::SeqCst), 2);
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("after 3 attempt(s): HTTP 503: SlowDown"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried_and_success_ends_the_loop() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(&quick(), "gcs", "op", &|_| {}, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Permanent("HTTP 403".into()))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let r = with_retries(&quick(), "gcs", "op", &|_| {}, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Failure::Transient("reset".into())),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(r.ok(), Some(7));
    }
}
