//! The app's client for the license service (`kleidia-license serve`), kept
//! apart from the service so the app does not build the service with it.
//!
//! `status()` never fails: it answers from a short cache, asks the service
//! when the cache is stale, and when the service cannot be reached falls back
//! to TRIAL with [`TRIAL_LIMITS`] and `degraded: true`, as the product
//! description requires. The fallback is cached too (for the same TTL), so a
//! service that is down costs one timeout per TTL, not one per request.

use std::time::{Duration, Instant};

use kleidia_protocol::license::{
    InstallationId, LicenseHistory, LicenseState, LicenseStatus, ACTOR_HEADER, TRIAL_LIMITS,
};
use kleidia_protocol::ErrorBody;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Mutex;

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

pub struct LicenseClient {
    http: reqwest::Client,
    base: String,
    api_token: Option<SecretString>,
    ttl: Duration,
    cache: Mutex<Option<(Instant, LicenseStatus)>>,
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
            cache: Mutex::new(None),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_token {
            Some(t) => r.bearer_auth(t.expose_secret()),
            None => r,
        }
    }

    /// The status, from the cache if fresh; TRIAL (degraded) if the service
    /// cannot be reached.
    pub async fn status(&self) -> LicenseStatus {
        let mut cache = self.cache.lock().await;
        if let Some((at, s)) = cache.as_ref() {
            if at.elapsed() < self.ttl {
                return s.clone();
            }
        }
        let s = match self.fetch_status().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "license service unavailable; falling back to TRIAL");
                fallback(&e)
            }
        };
        *cache = Some((Instant::now(), s.clone()));
        s
    }

    /// Forget the cached status (after an upload, or on an admin's refresh).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
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
        let mut cache = self.cache.lock().await;
        match &result {
            Ok(s) => *cache = Some((Instant::now(), s.clone())),
            Err(_) => *cache = None,
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

/// What the app works with when the service cannot tell it anything.
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
