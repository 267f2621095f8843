//! `/healthz` (the process is alive), `/readyz` (PostgreSQL and OpenBao are
//! reachable) and `/metrics` (Prometheus text format).
//!
//! `/readyz` is 503 ("not ready") only without PostgreSQL, which every page
//! needs. OpenBao down or sealed is "degraded" (200): sign-in, the fleet
//! and audit pages keep working, secret operations answer 503 naming the
//! cause, and the JSON says why (`checks.openbao`, `reason`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;
use crate::vault::BaoHealth;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let (pg, bao) = tokio::join!(check_postgres(&state), check_openbao(&state));
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
        "checks": { "postgres": show(&pg), "openbao": show(&bao) },
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
        Ok(Ok(BaoHealth::Standby)) => Err("standby".into()),
        Ok(Ok(BaoHealth::Sealed)) => Err("sealed".into()),
        Ok(Ok(BaoHealth::Uninitialized)) => Err("not initialized".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: OpenBao check failed");
            Err("unreachable".into())
        }
        Err(_) => Err("not answering (timed out)".into()),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
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
