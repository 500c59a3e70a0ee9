//! The device authorization grant (RFC 8628): the person approves the login
//! in a browser, anywhere, while `kiln login` polls the token endpoint.

use std::time::Duration;

use tokio::time::Instant;

use super::provider::{ClientAuth, DeviceAuthorization, OpenIdProvider, ProviderError, TokenGrant};
use super::secret::printable;

/// RFC 8628 §3.2: without an `interval`, poll every 5 s; `slow_down` adds 5 s.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    #[error("the login was denied on the provider's page{}", reason(.description.as_deref()))]
    Denied { description: Option<String> },
    #[error("the code {user_code} was not approved within {seconds} s; run kiln login again")]
    Expired { user_code: String, seconds: u64 },
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

fn reason(description: Option<&str>) -> String {
    description.map_or(String::new(), |d| format!(" (access_denied: {d})"))
}

/// The polling schedule: when to ask next, and what each refusal means.
#[derive(Debug)]
struct Schedule {
    interval: Duration,
    deadline: Instant,
    user_code: String,
    lifetime: u64,
}

impl Schedule {
    fn new(auth: &DeviceAuthorization, now: Instant) -> Schedule {
        Schedule {
            interval: auth
                .interval
                .map_or(DEFAULT_INTERVAL, Duration::from_secs)
                .max(Duration::from_secs(1)),
            deadline: now + Duration::from_secs(auth.expires_in),
            user_code: printable(&auth.user_code),
            lifetime: auth.expires_in,
        }
    }

    /// How long to wait before the next poll; none past the code's life.
    fn next_wait(&self, now: Instant) -> Result<Duration, DeviceError> {
        if now + self.interval > self.deadline {
            return Err(self.expired());
        }
        Ok(self.interval)
    }

    /// A poll the provider refused: go on (pending, slower when told) or stop.
    fn refused(&mut self, error: ProviderError) -> Result<(), DeviceError> {
        match &error {
            ProviderError::Refused { error: code, .. } if code == "authorization_pending" => Ok(()),
            ProviderError::Refused { error: code, .. } if code == "slow_down" => {
                self.interval += SLOW_DOWN_STEP;
                Ok(())
            }
            ProviderError::Refused {
                error: code,
                description,
                ..
            } if code == "access_denied" => Err(DeviceError::Denied {
                description: description.clone(),
            }),
            ProviderError::Refused { error: code, .. } if code == "expired_token" => {
                Err(self.expired())
            }
            _ => Err(DeviceError::Provider(error)),
        }
    }

    fn expired(&self) -> DeviceError {
        DeviceError::Expired {
            user_code: self.user_code.clone(),
            seconds: self.lifetime,
        }
    }
}

/// Runs the flow: asks for a device code, tells the person where to go on
/// standard error, and polls until approved, denied or expired.
pub(crate) async fn login(
    provider: &OpenIdProvider,
    client: &ClientAuth<'_>,
    resource: Option<&str>,
    scope: Option<&str>,
) -> Result<TokenGrant, DeviceError> {
    let auth = provider
        .device_authorization(client, resource, scope)
        .await?;
    let mut schedule = Schedule::new(&auth, Instant::now());
    eprintln!(
        "To log in, open {} and enter the code {}",
        printable(&auth.verification_uri),
        schedule.user_code
    );
    if let Some(complete) = &auth.verification_uri_complete {
        eprintln!(
            "  (or open {}, which has the code in it)",
            printable(complete)
        );
    }
    eprintln!(
        "Waiting for the approval (the code expires in {} s)…",
        auth.expires_in
    );
    loop {
        tokio::time::sleep(schedule.next_wait(Instant::now())?).await;
        match provider
            .device_token(client, &auth.device_code, resource)
            .await
        {
            Ok(grant) => return Ok(grant),
            Err(e) => schedule.refused(e)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::secret::Secret;

    fn auth(interval: Option<u64>) -> DeviceAuthorization {
        DeviceAuthorization {
            device_code: Secret::new("dc"),
            user_code: "ABCD-EFGH".into(),
            verification_uri: "https://id/device".into(),
            verification_uri_complete: None,
            expires_in: 30,
            interval,
        }
    }

    fn refusal(error: &str) -> ProviderError {
        ProviderError::Refused {
            url: "https://id/token".into(),
            status: 400,
            error: error.into(),
            description: Some("why".into()),
        }
    }

    #[test]
    fn pending_keeps_the_pace_and_slow_down_slows_it() {
        let now = Instant::now();
        let mut s = Schedule::new(&auth(None), now);
        assert_eq!(s.next_wait(now).unwrap(), Duration::from_secs(5));
        s.refused(refusal("authorization_pending")).unwrap();
        assert_eq!(s.next_wait(now).unwrap(), Duration::from_secs(5));
        s.refused(refusal("slow_down")).unwrap();
        assert_eq!(s.next_wait(now).unwrap(), Duration::from_secs(10));
        let s = Schedule::new(&auth(Some(2)), now);
        assert_eq!(s.next_wait(now).unwrap(), Duration::from_secs(2));
        // An interval of 0 would be a busy loop.
        let s = Schedule::new(&auth(Some(0)), now);
        assert_eq!(s.next_wait(now).unwrap(), Duration::from_secs(1));
    }

    #[test]
    fn it_stops_when_denied_expired_or_past_the_code_s_life() {
        let now = Instant::now();
        let mut s = Schedule::new(&auth(None), now);
        let denied = s.refused(refusal("access_denied")).unwrap_err().to_string();
        assert_eq!(
            denied,
            "the login was denied on the provider's page (access_denied: why)"
        );
        let expired = s.refused(refusal("expired_token")).unwrap_err().to_string();
        assert!(
            expired.contains("ABCD-EFGH") && expired.contains("30 s"),
            "{expired}"
        );
        assert!(s.refused(refusal("invalid_grant")).is_err());
        assert!(s.next_wait(now + Duration::from_secs(26)).is_err());
        assert!(s.next_wait(now + Duration::from_secs(25)).is_ok());
    }
}
