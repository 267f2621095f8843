//! `POST /api/notices/run`: an admin runs the expiry notices now (`fleet::notices`). What nobody was
//! told this period yet goes out; a second press sends nothing new.

use axum::extract::State;
use axum::Json;
use serde_json::json;

use super::RouteDef;
use crate::audit::{self, AuditEvent};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::fleet::notices::{self, NoticeError, RunReport, Trigger};
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![RouteDef::post("/api/notices/run", Access::ADMIN, run_api)
        .takes_nothing()
        .gives::<RunReport>(200, "what this run sent")]
}

async fn run(state: &AppState, me: &CurrentUser, meta: &ClientMeta) -> Result<RunReport, AppError> {
    audit::record_alone(
        &state.db,
        AuditEvent::new("notices.run_requested")
            .actor(me)
            .from_client(meta)
            .details(json!({})),
    )
    .await?;
    notices::run_once(&state.db, &state.config, Trigger::Admin)
        .await
        .map_err(|e| match e {
            NoticeError::NotConfigured => AppError::Conflict(e.to_string()),
            NoticeError::Db(e) => AppError::from(e),
        })
}

async fn run_api(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
) -> Result<Json<RunReport>, AppError> {
    Ok(Json(run(&state, &me, &meta).await?))
}
