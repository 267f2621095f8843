//! The app's client for the license service (`kleidia-license serve`), kept
//! apart from the service so the app does not build the service with it.
//!
//! `status()` never fails: it answers from a short cache and asks the
//! service when the cache is stale. When the service cannot tell it anything
//! (refused connection, timeout, a 401 from a wrong token, a 5xx) it falls
//! back to the **last verified status** with `degraded: true`, never to
//! something better: EXPIRED and INVALID stay as they are, and a VALID,
//! EXPIRING or TRIAL status whose end has passed meanwhile becomes EXPIRED
//! ([`fallback_from`]). Only an installation that has never had an answer
//! falls back to TRIAL with [`TRIAL_LIMITS`] (the product description's
//! behaviour for a new installation). The app stores every verified status
//! ([`LicenseClient::verified_updates`]) and seeds it back at start
//! ([`LicenseClient::seed_verified`]), so a restart does not forget it.
//!
//! Why the service did not answer is kept as a [`Problem`]: a 401/403 is a
//! configuration error (the app's `license.api_token`), not an outage, and
//! the app shows it as such. The fallback is cached too (for the same TTL),
//! so a service that is down costs one timeout per TTL, not one per request.

use std::time::{Duration, Instant};

use kleidia_protocol::license::{
    InstallationId, LicenseHistory, LicenseState, LicenseStatus, ACTOR_HEADER, TRIAL_LIMITS,
};
use kleidia_protocol::ErrorBody;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use tokio::sync::{watch, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the license service is unreachable: {0}")]
    Unreachable(String),
    /// The service answered with an error; `body.message` is safe to show
    /// (for a refused upload it says why: signature, installation, expiry…).
    #[error("{}", .body.message)]
    Refused { status: u16, body: ErrorBody },
    #[error("unexpected answer from the license service: {0}")]
    Unexpected(String),
}

/// Why the last status request got no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ProblemKind {
    /// Refused connection, timeout, broken answer.
    Unreachable,
    /// 401 or 403: the app's token for the service is wrong or missing.
    Configuration,
    /// The service answered with another error (a 5xx).
    ServiceError,
}

/// The last failure to get a status, shown on `/license` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
    /// Unix seconds of the failed request.
    pub at: i64,
}

impl Problem {
    fn of(e: &ClientError) -> Self {
        let (kind, message) = match e {
            ClientError::Refused {
                status: 401 | 403, ..
            } => (
                ProblemKind::Configuration,
                format!(
                    "the license service refused the app's API token ({e}); \
                     check license.api_token (KLEIDIA_LICENSE_API_TOKEN)"
                ),
            ),
            ClientError::Refused { .. } => (ProblemKind::ServiceError, e.to_string()),
            ClientError::Unreachable(_) | ClientError::Unexpected(_) => {
                (ProblemKind::Unreachable, e.to_string())
            }
        };
        Self {
            kind,
            message,
            at: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

struct Known {
    /// The cached answer (verified or fallback) and when it was made.
    cached: Option<(Instant, LicenseStatus)>,
    /// The last status the service itself answered.
    verified: Option<LicenseStatus>,
    problem: Option<Problem>,
}

pub struct LicenseClient {
    http: reqwest::Client,
    base: String,
    api_token: Option<SecretString>,
    ttl: Duration,
    cache: Mutex<Known>,
    verified_tx: watch::Sender<Option<LicenseStatus>>,
}

impl LicenseClient {
    /// `base_url` like `http://127.0.0.1:8090`; `timeout` bounds each call;
    /// `ttl` is how long a status is reused.
    pub fn new(
        base_url: &str,
        api_token: Option<SecretString>,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            api_token,
            ttl,
            cache: Mutex::new(Known {
                cached: None,
                verified: None,
                problem: None,
            }),
            verified_tx: watch::channel(None).0,
        })
    }

    /// Start from a status verified earlier (stored by the app), unless one
    /// was verified since this client was made.
    pub async fn seed_verified(&self, s: LicenseStatus) {
        let mut k = self.cache.lock().await;
        if k.verified.is_none() {
            k.verified = Some(s);
        }
    }

    /// Every status the service answers, for the app to store.
    pub fn verified_updates(&self) -> watch::Receiver<Option<LicenseStatus>> {
        self.verified_tx.subscribe()
    }

    /// Why the last request for a status failed; `None` after a success.
    pub async fn problem(&self) -> Option<Problem> {
        self.cache.lock().await.problem.clone()
    }

    async fn verified(&self, s: &LicenseStatus) {
        let mut k = self.cache.lock().await;
        k.verified = Some(s.clone());
        k.problem = None;
        drop(k);
        self.verified_tx.send_replace(Some(s.clone()));
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_token {
            Some(t) => r.bearer_auth(t.expose_secret()),
            None => r,
        }
    }

    /// The status, from the cache if fresh; the last verified status
    /// (degraded, never better) if the service cannot tell.
    pub async fn status(&self) -> LicenseStatus {
        let mut k = self.cache.lock().await;
        if let Some((at, s)) = k.cached.as_ref() {
            if at.elapsed() < self.ttl {
                return s.clone();
            }
        }
        let s = match self.fetch_status().await {
            Ok(s) => {
                k.verified = Some(s.clone());
                k.problem = None;
                self.verified_tx.send_replace(Some(s.clone()));
                s
            }
            Err(e) => {
                let problem = Problem::of(&e);
                let s = fallback_from(k.verified.as_ref(), &e);
                tracing::warn!(error = %e, kind = ?problem.kind, status = %s.status,
                    "license service gave no status; the last verified status applies");
                k.problem = Some(problem);
                s
            }
        };
        k.cached = Some((Instant::now(), s.clone()));
        s
    }

    /// Forget the cached status (after an upload, or on an admin's refresh).
    /// The last verified status is kept.
    pub async fn invalidate(&self) {
        self.cache.lock().await.cached = None;
    }

    /// Ask the service now, without cache or fallback.
    pub async fn fetch_status(&self) -> Result<LicenseStatus, ClientError> {
        let resp = self
            .send(self.req(reqwest::Method::GET, "/license/status"))
            .await?;
        json(resp).await
    }

    /// Upload a license file; on success the new status (also cached).
    pub async fn upload(
        &self,
        document: Vec<u8>,
        actor: Option<&str>,
    ) -> Result<LicenseStatus, ClientError> {
        let mut r = self
            .req(reqwest::Method::POST, "/license")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(document);
        if let Some(a) = actor {
            r = r.header(ACTOR_HEADER, a);
        }
        let result = async { json::<LicenseStatus>(self.send(r).await?).await }.await;
        match &result {
            Ok(s) => {
                self.verified(s).await;
                self.cache.lock().await.cached = Some((Instant::now(), s.clone()));
            }
            Err(_) => self.cache.lock().await.cached = None,
        }
        result
    }

    pub async fn history(&self) -> Result<LicenseHistory, ClientError> {
        json(
            self.send(self.req(reqwest::Method::GET, "/license/history"))
                .await?,
        )
        .await
    }

    pub async fn installation_id(&self) -> Result<InstallationId, ClientError> {
        json(
            self.send(self.req(reqwest::Method::GET, "/installation-id"))
                .await?,
        )
        .await
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        r.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ClientError::Unreachable(e.to_string())
            } else {
                ClientError::Unexpected(e.to_string())
            }
        })
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected(e.to_string()));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(ClientError::Refused {
            status: status.as_u16(),
            body,
        }),
        Err(_) => Err(ClientError::Unexpected(format!("HTTP {status}"))),
    }
}

/// What the app works with when the service cannot tell it anything and
/// nothing was ever verified: TRIAL with its limits.
pub fn fallback(cause: &ClientError) -> LicenseStatus {
    LicenseStatus {
        status: LicenseState::Trial,
        reason: format!("license service unavailable ({cause}); TRIAL limits apply"),
        installation_id: String::new(),
        degraded: true,
        clock_rollback: false,
        checked_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        trial_started_at: None,
        trial_ends_at: None,
        license: None,
        limits: Some(TRIAL_LIMITS),
        days_left: None,
    }
}

/// The status when the service cannot tell: the last verified one, marked
/// degraded, and EXPIRED if the license or trial it describes has ended
/// since. Never better than what was verified.
pub fn fallback_from(last: Option<&LicenseStatus>, cause: &ClientError) -> LicenseStatus {
    let Some(last) = last else {
        return fallback(cause);
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut s = last.clone();
    s.degraded = true;
    let ended = match s.status {
        LicenseState::Valid | LicenseState::Expiring => {
            s.license.as_ref().is_none_or(|l| l.not_after <= now)
        }
        LicenseState::Trial => s.trial_ends_at.is_some_and(|t| t <= now),
        LicenseState::Expired | LicenseState::Invalid => false,
    };
    if ended {
        s.status = LicenseState::Expired;
        s.limits = None;
        s.days_left = Some(0);
    }
    s.reason = format!(
        "license service unavailable ({cause}); the last verified status ({}, checked at {}) applies: {}",
        s.status, last.checked_at, last.reason
    );
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kleidia_protocol::license::LicenseLimits;

    use super::*;

    fn verified(status: LicenseState) -> LicenseStatus {
        LicenseStatus {
            status,
            reason: "as the service said.".into(),
            installation_id: "inst".into(),
            degraded: false,
            clock_rollback: false,
            checked_at: 1,
            trial_started_at: None,
            trial_ends_at: None,
            license: None,
            limits: match status {
                LicenseState::Expired | LicenseState::Invalid => None,
                _ => Some(LicenseLimits {
                    max_users: 3,
                    max_devices: 3,
                }),
            },
            days_left: None,
        }
    }

    #[test]
    fn expired_and_invalid_stay_so_whatever_the_error() {
        let errors = [
            ClientError::Unreachable("connection refused".into()),
            ClientError::Unexpected("HTTP 502".into()),
            ClientError::Refused {
                status: 401,
                body: ErrorBody {
                    error: "unauthorized".into(),
                    message: "bad token".into(),
                },
            },
        ];
        for st in [LicenseState::Expired, LicenseState::Invalid] {
            for e in &errors {
                let s = fallback_from(Some(&verified(st)), e);
                assert_eq!(s.status, st, "{e}");
                assert_eq!(s.limits, None);
                assert!(s.degraded);
                assert!(s.reason.contains("last verified"), "{}", s.reason);
            }
        }
    }

    #[test]
    fn a_trial_that_has_ended_since_falls_back_to_expired() {
        let mut t = verified(LicenseState::Trial);
        t.trial_ends_at = Some(2);
        let s = fallback_from(Some(&t), &ClientError::Unreachable("x".into()));
        assert_eq!(s.status, LicenseState::Expired);
        assert_eq!(s.limits, None);
        t.trial_ends_at = Some(i64::MAX);
        let s = fallback_from(Some(&t), &ClientError::Unreachable("x".into()));
        assert_eq!(s.status, LicenseState::Trial);
        assert_eq!(s.limits.unwrap().max_devices, 3, "not TRIAL's 25");
    }

    #[test]
    fn only_an_installation_never_verified_gets_trial() {
        let s = fallback_from(None, &ClientError::Unreachable("x".into()));
        assert_eq!(s.status, LicenseState::Trial);
        assert_eq!(s.limits, Some(TRIAL_LIMITS));
    }

    #[test]
    fn a_401_is_a_configuration_problem_and_a_refused_connection_an_outage() {
        let p = Problem::of(&ClientError::Refused {
            status: 401,
            body: ErrorBody {
                error: "unauthorized".into(),
                message: "bad token".into(),
            },
        });
        assert_eq!(p.kind, ProblemKind::Configuration);
        assert!(p.message.contains("license.api_token"), "{}", p.message);
        let p = Problem::of(&ClientError::Unreachable("connection refused".into()));
        assert_eq!(p.kind, ProblemKind::Unreachable);
    }
}
