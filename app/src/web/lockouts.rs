//! Sign-in lockouts (`auth::throttle`): the admin page and
//! `/api/lockouts`, to see who is locked out and lift a lockout early.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect};
use axum::{Form, Json};
use serde::Deserialize;

use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::accounts::{self, ChangedBy};
use crate::auth::throttle::{self, Lockout};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/lockouts", Access::ADMIN, lockouts_page),
        RouteDef::post("/lockouts/clear", Access::ADMIN, clear_form),
        RouteDef::get("/api/lockouts", Access::ADMIN, api_lockouts)
            .gives_list::<Lockout>(200, "keys with recent failed sign-ins, locked ones first"),
        RouteDef::delete("/api/lockouts/{scope}/{key}", Access::ADMIN, api_clear)
            .gives_nothing(204, "the lockout is cleared"),
    ]
}

#[derive(Template)]
#[template(path = "lockouts.html")]
struct LockoutsPage {
    me: Option<Nav>,
    lockouts: Vec<Lockout>,
}

async fn lockouts_page(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Html<String>, AppError> {
    let lockouts = throttle::list(&state.db, &state.config.throttle).await?;
    render(&LockoutsPage {
        me: nav(&me),
        lockouts,
    })
}

#[derive(Deserialize)]
struct ClearForm {
    scope: String,
    key: String,
}

async fn clear_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<ClearForm>,
) -> Result<Redirect, AppError> {
    let by = ChangedBy::Admin {
        me: &me,
        meta: &meta,
    };
    accounts::clear_lockout(&state.db, by, &f.scope, &f.key).await?;
    Ok(Redirect::to("/lockouts"))
}

async fn api_lockouts(State(state): State<AppState>) -> Result<Json<Vec<Lockout>>, AppError> {
    Ok(Json(
        throttle::list(&state.db, &state.config.throttle).await?,
    ))
}

async fn api_clear(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path((scope, key)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let by = ChangedBy::Admin {
        me: &me,
        meta: &meta,
    };
    accounts::clear_lockout(&state.db, by, &scope, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
