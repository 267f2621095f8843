//! HTTP API for the app (cluster-internal): status, upload, history,
//! installation id, and `/healthz`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use kleidia_protocol::license::{
    refusal, InstallationId, LicenseHistory, LicenseStatus, ACTOR_HEADER, MAX_LICENSE_BYTES,
};
use kleidia_protocol::ErrorBody;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::document::DocumentError;
use crate::service::{self, EffectiveTime, UploadError};
use crate::store::{Installation, KvStore, StoredLicense};

#[derive(Clone)]
pub struct AppState {
    pub store: KvStore,
    pub key: VerifyingKey,
    pub installation: Arc<Installation>,
    pub clock: Arc<Clock>,
    pub expiring_days: u32,
    pub api_token: Option<Arc<SecretString>>,
}

impl AppState {
    async fn effective_time(&self) -> Result<EffectiveTime, ApiError> {
        let now = self.clock.unix();
        let high_water = self
            .store
            .raise_clock(now)
            .await
            .map_err(ApiError::Storage)?;
        let t = EffectiveTime::new(now, high_water);
        if t.rollback {
            tracing::warn!(
                clock = %service::fmt_time(now),
                latest_seen = %service::fmt_time(high_water),
                "system clock is behind the latest time seen; using the latest time"
            );
        }
        Ok(t)
    }

    pub async fn status(&self) -> Result<LicenseStatus, ApiError> {
        let t = self.effective_time().await?;
        let licenses = self.store.licenses().await.map_err(ApiError::Storage)?;
        Ok(service::status(
            &self.installation,
            &licenses,
            &self.key,
            t,
            self.expiring_days,
        ))
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/license/status", get(get_status))
        .route("/license", post(post_license))
        .route("/license/history", get(get_history))
        .route("/installation-id", get(get_installation_id))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(not_found)
        .with_state(state)
}

/// Errors of the API; the body never shows internals, the log has the cause.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound,
    Refused(UploadError),
    Storage(anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".to_string(),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            ),
            ApiError::Refused(e) => {
                let (status, code) = match &e {
                    UploadError::Document(DocumentError::TooLarge) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, refusal::TOO_LARGE)
                    }
                    UploadError::Document(DocumentError::Malformed(_)) => {
                        (StatusCode::BAD_REQUEST, refusal::MALFORMED)
                    }
                    UploadError::Document(DocumentError::BadSignature) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, refusal::BAD_SIGNATURE)
                    }
                    UploadError::WrongInstallation { .. } => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        refusal::WRONG_INSTALLATION,
                    ),
                    UploadError::Expired(_) => (StatusCode::UNPROCESSABLE_ENTITY, refusal::EXPIRED),
                };
                tracing::warn!(reason = %e, "license upload refused");
                (status, code, e.to_string())
            }
            ApiError::Storage(e) => {
                tracing::error!(error = format!("{e:#}"), "OpenBao operation failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the license store (OpenBao) is unavailable; try again".into(),
                )
            }
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                error: code.to_string(),
                message,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.api_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests: equal-length values whose comparison time says
        // nothing about the token's bytes.
        let a = Sha256::digest(given.as_bytes());
        let b = Sha256::digest(expected.expose_secret().as_bytes());
        if a != b {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "test_key": crate::keys::VENDOR_PUBKEY_IS_TEST,
        "vendor_key_fingerprint": crate::keys::vendor_key_fingerprint(),
    }))
}

/// Ready when OpenBao answers and the token can read the service's data.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await.map_err(ApiError::Storage)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn get_status(State(state): State<AppState>) -> Result<Json<LicenseStatus>, ApiError> {
    Ok(Json(state.status().await?))
}

async fn get_history(State(state): State<AppState>) -> Result<Json<LicenseHistory>, ApiError> {
    let licenses = state.store.licenses().await.map_err(ApiError::Storage)?;
    Ok(Json(service::history(&licenses)))
}

async fn get_installation_id(State(state): State<AppState>) -> Json<InstallationId> {
    Json(InstallationId {
        installation_id: state.installation.installation_id.clone(),
        created_at: state.installation.created_at,
    })
}

/// Who uploaded, as the app tells it: printable, bounded, or nothing.
fn actor(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(ACTOR_HEADER)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control)).then(|| v.to_string())
}

async fn post_license(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LicenseStatus>, ApiError> {
    let too_large = || ApiError::Refused(UploadError::Document(DocumentError::TooLarge));
    // Read at most one byte past the cap, so a huge body is cut off early.
    let bytes = axum::body::to_bytes(body, MAX_LICENSE_BYTES + 1)
        .await
        .map_err(|_| too_large())?;
    if bytes.len() > MAX_LICENSE_BYTES {
        return Err(too_large());
    }
    let t = state.effective_time().await?;
    let verified = service::check_upload(
        &bytes,
        &state.key,
        &state.installation.installation_id,
        t.now,
    )
    .map_err(ApiError::Refused)?;
    let document = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::Refused(UploadError::Document(DocumentError::Malformed(
            "not UTF-8".into(),
        )))
    })?;
    let by = actor(&headers);
    let added = state
        .store
        .append_license(StoredLicense {
            document,
            sha256: verified.sha256.clone(),
            uploaded_at: t.now,
            uploaded_by: by.clone(),
        })
        .await
        .map_err(ApiError::Storage)?;
    tracing::info!(
        license_id = %verified.payload.license_id,
        customer = %verified.payload.customer,
        not_after = %service::fmt_time(verified.payload.not_after),
        uploaded_by = by.as_deref().unwrap_or("-"),
        sha256 = %verified.sha256,
        new = added,
        "license accepted"
    );
    Ok(Json(state.status().await?))
}
