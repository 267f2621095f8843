//! `/healthz` (the process is alive), `/readyz` (PostgreSQL and OpenBao are
//! reachable; the license service's state is reported but never makes the
//! app unready, since the license never blocks work on enrolled keys) and
//! `/metrics` (Prometheus text format).
//!
//! `/readyz` is 503 ("not ready") only without PostgreSQL, which every page
//! needs. OpenBao down or sealed is "degraded" (200): sign-in, the fleet
//! and audit pages keep working, secret operations answer 503 naming the
//! cause, and the JSON says why (`checks.openbao`, `reason`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use kleidia_license_client::ProblemKind;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::state::AppState;
use crate::vault::BaoHealth;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let (pg, bao, license) = tokio::join!(
        check_postgres(&state),
        check_openbao(&state),
        check_license(&state)
    );
    let mut failed = Vec::new();
    if pg.is_err() {
        failed.push("postgres");
    }
    if bao.is_err() {
        failed.push("openbao");
    }
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let warnings: Vec<&str> = if license.is_err() {
        vec!["license"]
    } else {
        vec![]
    };
    let (word, status) = if pg.is_err() {
        ("not ready", StatusCode::SERVICE_UNAVAILABLE)
    } else if bao.is_err() {
        ("degraded", StatusCode::OK)
    } else {
        ("ready", StatusCode::OK)
    };
    let mut body = json!({
        "status": word,
        "failed": failed,
        "warnings": warnings,
        "checks": { "postgres": show(&pg), "openbao": show(&bao), "license": show(&license) },
    });
    if let Err(why) = &bao {
        body["reason"] = json!(format!(
            "OpenBao is {why}: secret operations (PINs, certificates, escrow) are refused \
             until it is back; pages that do not need it keep working"
        ));
    }
    (status, Json(body)).into_response()
}

async fn check_postgres(state: &AppState) -> Result<(), String> {
    let q = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db);
    match tokio::time::timeout(CHECK_TIMEOUT, q).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: PostgreSQL check failed");
            Err("unreachable".into())
        }
        Err(_) => Err("timed out".into()),
    }
}

async fn check_openbao(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, state.bao.health()).await {
        Ok(Ok(BaoHealth::Ready)) => Ok(()),
        // A standby (the Service may route the check to one) forwards every
        // request to the active node: ready as long as it knows one.
        Ok(Ok(BaoHealth::Standby)) => {
            match tokio::time::timeout(CHECK_TIMEOUT, state.bao.leader()).await {
                Ok(Ok(Some(_))) => Ok(()),
                Ok(Ok(None)) => {
                    Err("standby, and no node is active (an election, or no quorum)".into())
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness: OpenBao standby, leader unknown");
                    Err("standby, and its leader is unknown".into())
                }
                Err(_) => Err("standby, and not answering (timed out)".into()),
            }
        }
        Ok(Ok(BaoHealth::Sealed)) => Err("sealed".into()),
        Ok(Ok(BaoHealth::Uninitialized)) => Err("not initialized".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: OpenBao check failed");
            if e.is_untrusted_certificate() {
                // Said plainly: a wrong `openbao.ca_file`, or someone else
                // answering at OpenBao's address. The details are in the log.
                Err(
                    "unreachable: TLS certificate verification failed, OpenBao's \
                     certificate is not issued by a CA in openbao.ca_file"
                        .into(),
                )
            } else {
                Err("unreachable".into())
            }
        }
        Err(_) => Err("not answering (timed out)".into()),
    }
}

/// The license service: `ok`, or why it gave no status. A 401/403 is a
/// configuration error (the app's token), not an outage.
async fn check_license(state: &AppState) -> Result<(), String> {
    if tokio::time::timeout(CHECK_TIMEOUT, state.license.status())
        .await
        .is_err()
    {
        return Err("timed out".into());
    }
    match state.license.problem().await {
        None => Ok(()),
        Some(p) => Err(match p.kind {
            ProblemKind::Configuration => format!("configuration error: {}", p.message),
            ProblemKind::Unreachable => format!(
                "unreachable ({}); the last verified status applies",
                p.message
            ),
            ProblemKind::ServiceError => format!(
                "service error ({}); the last verified status applies",
                p.message
            ),
        }),
    }
}

/// `GET /metrics` with `Authorization: Bearer <server.metrics_token>`; 404
/// when no token is configured, 401 for a missing or wrong one.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(want) = &state.config.server.metrics_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Comparing digests: the time taken says nothing about the token.
    if Sha256::digest(given.as_bytes()) != Sha256::digest(want.expose_secret().as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    }
    match state.metrics.render(&state.db) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
