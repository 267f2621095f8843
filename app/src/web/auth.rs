//! Signing in and out: the login form, `POST /logout`, the JSON API
//! (`/api/auth/login`, `/api/auth/logout`, `/api/auth/me`) and changing
//! one's own password.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

use super::auth_next::safe_next;
use super::extract::{JsonBodyStrict, MaybeUser};
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::audit::{self, AuditEvent};
use crate::auth::login::{login, LoginError};
use crate::auth::password::check_new_password;
use crate::auth::{Access, ClientMeta, CurrentUser, SESSION_KEY};
use crate::db::sessions;
use crate::db::users::{self, UserView};
use crate::domain::SessionKind;
use crate::error::AppError;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/login", Access::Public, login_page),
        RouteDef::post("/login", Access::Public, login_form),
        RouteDef::post("/logout", Access::SignedIn, logout_form),
        RouteDef::get("/account/password", Access::SignedIn, password_page),
        RouteDef::post("/account/password", Access::SignedIn, password_form),
        RouteDef::post("/api/auth/login", Access::Public, api_login)
            .takes::<ApiLogin>()
            .gives::<ApiToken>(200, "an API token (JWT) and who it is for"),
        RouteDef::post("/api/auth/logout", Access::SignedIn, api_logout)
            .takes_nothing()
            .gives_nothing(204, "the session (and its token) ended"),
        RouteDef::get("/api/auth/me", Access::SignedIn, api_me)
            .gives::<Me>(200, "the signed-in user and session"),
        RouteDef::post("/api/auth/password", Access::SignedIn, api_password)
            .takes::<ApiPassword>()
            .gives_nothing(204, "changed; the account's other sessions ended"),
    ]
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    me: Option<Nav>,
    error: Option<String>,
    next: String,
    username: String,
    /// The OIDC provider's name for the "Sign in with …" button, when on.
    oidc: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NextParam {
    next: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<NextParam>,
) -> Result<Response, AppError> {
    if me.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    Ok(render(&LoginPage {
        me: None,
        error: None,
        next: safe_next(q.next.as_deref()),
        username: String::new(),
        oidc: super::oidc::button(&state),
    })?
    .into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: SecretString,
    #[serde(default)]
    next: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(f): Form<LoginForm>,
) -> Result<Response, AppError> {
    let next = safe_next(f.next.as_deref());
    match login(
        &state.db,
        &state.passwords,
        &state.config,
        &f.username,
        &f.password,
        SessionKind::Browser,
        &meta,
    )
    .await
    {
        Ok(done) => {
            begin_browser_session(&session, done.session_id).await?;
            let to = if done.user.must_change_password {
                "/account/password".to_string()
            } else {
                next
            };
            Ok(Redirect::to(&to).into_response())
        }
        Err(e @ (LoginError::BadCredentials | LoginError::Throttled { .. } | LoginError::Busy)) => {
            let status = match e {
                LoginError::BadCredentials => StatusCode::UNAUTHORIZED,
                LoginError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            let page = render(&LoginPage {
                me: None,
                error: Some(match e {
                    LoginError::BadCredentials => "The username or password is wrong.".into(),
                    LoginError::Busy => "Too many sign-ins at this moment. Try again in a few seconds.".into(),
                    _ => "Too many failed sign-ins. Wait a few minutes and try again, or ask an administrator."
                        .into(),
                }),
                next,
                username: f.username.chars().take(64).collect(),
                oidc: super::oidc::button(&state),
            })?;
            Ok(with_retry_after(
                (status, page).into_response(),
                e.retry_after(),
            ))
        }
        Err(LoginError::App(e)) => Err(e),
    }
}

/// End the session this request runs on, with its audit row.
async fn end_session(db: &PgPool, me: &CurrentUser, meta: &ClientMeta) -> Result<(), AppError> {
    let mut tx = db.begin().await?;
    sessions::delete(&mut *tx, me.session_id).await?;
    audit::record(
        &mut tx,
        AuditEvent::new("logout")
            .actor(me)
            .target("session", me.session_id)
            .details(json!({"via": me.via.as_str()}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn logout_form(
    State(state): State<AppState>,
    me: CurrentUser,
    session: Session,
    meta: ClientMeta,
) -> Result<Response, AppError> {
    end_session(&state.db, &me, &meta).await?;
    state.sessions.forget_session(me.session_id);
    session
        .flush()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))?;
    Ok(Redirect::to("/login").into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiLogin {
    username: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ApiToken {
    token: String,
    token_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    session_id: Uuid,
    user: UserView,
}

/// `Retry-After` (seconds) on a throttled (429) or busy (503) answer.
fn with_retry_after(mut r: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    r
}

async fn api_login(
    State(state): State<AppState>,
    meta: ClientMeta,
    JsonBodyStrict(body): JsonBodyStrict<ApiLogin>,
) -> Result<Response, AppError> {
    let done = match login(
        &state.db,
        &state.passwords,
        &state.config,
        &body.username,
        &body.password,
        SessionKind::Api,
        &meta,
    )
    .await
    {
        Ok(done) => done,
        Err(e) => {
            let retry = e.retry_after();
            return Ok(with_retry_after(AppError::from(e).into_response(), retry));
        }
    };
    let (token, expires_at) = state
        .jwt
        .issue(done.user.id, done.session_id, OffsetDateTime::now_utc())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("JWT: {e}")))?;
    Ok(Json(ApiToken {
        token,
        token_type: "Bearer",
        expires_at,
        session_id: done.session_id,
        user: done.user.view(),
    })
    .into_response())
}

async fn api_logout(
    State(state): State<AppState>,
    me: CurrentUser,
    session: Session,
    meta: ClientMeta,
) -> Result<StatusCode, AppError> {
    end_session(&state.db, &me, &meta).await?;
    state.sessions.forget_session(me.session_id);
    if me.via == SessionKind::Browser {
        session
            .flush()
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
struct Me {
    user: UserView,
    session_id: Uuid,
    via: SessionKind,
}

async fn api_me(State(state): State<AppState>, me: CurrentUser) -> Result<Json<Me>, AppError> {
    let user = users::by_id(&state.db, me.user_id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    Ok(Json(Me {
        user: user.view(),
        session_id: me.session_id,
        via: me.via,
    }))
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    me: Option<Nav>,
    forced: bool,
    error: Option<String>,
}

async fn password_page(me: CurrentUser) -> Result<Response, AppError> {
    Ok(render(&PasswordPage {
        me: nav(&me),
        forced: me.must_change_password,
        error: None,
    })?
    .into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    current: SecretString,
    new: SecretString,
    confirm: SecretString,
}

async fn password_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<PasswordForm>,
) -> Result<Response, AppError> {
    use secrecy::ExposeSecret;
    if f.new.expose_secret() != f.confirm.expose_secret() {
        return password_form_error(&me, "The new password and its confirmation differ.".into());
    }
    match change_own_password(&state, &me, &meta, &f.current, &f.new).await? {
        Ok(()) => Ok(Redirect::to("/").into_response()),
        Err(msg) => password_form_error(&me, msg),
    }
}

fn password_form_error(me: &CurrentUser, msg: String) -> Result<Response, AppError> {
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        render(&PasswordPage {
            me: nav(me),
            forced: me.must_change_password,
            error: Some(msg),
        })?,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiPassword {
    #[schema(value_type = String, format = Password)]
    current: SecretString,
    #[schema(value_type = String, format = Password)]
    new: SecretString,
}

/// `POST /api/auth/password`: change one's own password (the only thing an
/// API session may do besides `/api/auth/me` and logging out while the
/// account still has a one-time password). 204 on success; other sessions
/// of the account end, the calling one goes on.
async fn api_password(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBodyStrict(body): JsonBodyStrict<ApiPassword>,
) -> Result<StatusCode, AppError> {
    match change_own_password(&state, &me, &meta, &body.current, &body.new).await? {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(msg) => Err(AppError::Unprocessable(msg)),
    }
}

/// Check the current password and the new one, store it, end the account's
/// other sessions and audit. The inner `Err` is a message for the user
/// (nothing changed).
async fn change_own_password(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    current: &SecretString,
    new: &SecretString,
) -> Result<Result<(), String>, AppError> {
    use secrecy::ExposeSecret;
    let user = users::by_id(&state.db, me.user_id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    if !state
        .passwords
        .verify(current, Some(&user.password_hash))
        .await?
        .ok
    {
        audit::record_alone(
            &state.db,
            AuditEvent::new("user.password_change_failed")
                .actor(me)
                .target("user", me.user_id)
                .details(json!({"reason": "wrong_current_password", "via": me.via.as_str()}))
                .from_client(meta),
        )
        .await?;
        return Ok(Err("The current password is wrong.".into()));
    }
    if new.expose_secret() == current.expose_secret() {
        return Ok(Err(
            "Choose a password different from the current one.".into()
        ));
    }
    if let Err(e) = check_new_password(new.expose_secret()) {
        return Ok(Err(e.public_message()));
    }
    let hash = state.passwords.hash(new).await?;
    let mut tx = state.db.begin().await?;
    users::set_password(&mut *tx, me.user_id, &hash, false).await?;
    // Other sessions of this account end; this one goes on.
    let ended = sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND id <> $2")
        .bind(me.user_id)
        .bind(me.session_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    audit::record(
        &mut tx,
        AuditEvent::new("user.password_change")
            .actor(me)
            .target("user", me.user_id)
            .details(json!({"other_sessions_ended": ended, "via": me.via.as_str()}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    state.sessions.forget_user(me.user_id);
    Ok(Ok(()))
}

/// Tie a browser to the session a sign-in created, under a fresh session
/// id: whatever cookie the browser carried before (planted or stale) is
/// deleted and useless now. Password and OIDC sign-ins alike.
pub(super) async fn begin_browser_session<T: serde::Serialize>(
    session: &Session,
    session_id: T,
) -> Result<(), AppError> {
    let err = |e| AppError::Internal(anyhow::anyhow!("session: {e}"));
    session.cycle_id().await.map_err(err)?;
    session.clear().await;
    session.insert(SESSION_KEY, session_id).await.map_err(err)
}
