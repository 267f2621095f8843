//! OIDC sign-in pages: `GET /auth/oidc/start` sends the browser to the
//! provider with a sealed pending sign-in cookie, `GET /auth/oidc/callback`
//! checks the answer and signs the person in (see `auth::oidc`).
//!
//! The session cookie is `SameSite=Strict`, and a browser does not send it
//! on a redirect chain that began at the provider's site; so the callback
//! answers with a page that moves on to `next` itself (a same-site
//! navigation) instead of a redirect.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth_next::safe_next;
use super::pages::{render, Nav};
use super::RouteDef;
use crate::auth::oidc::{Callback, OidcError, PENDING_COOKIE, PENDING_TTL_SECS};
use crate::auth::{Access, ClientMeta};
use crate::error::AppError;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/auth/oidc/start", Access::Public, start),
        RouteDef::get("/auth/oidc/callback", Access::Public, callback),
    ]
}

/// The request span of every request (as tower-http's default, at DEBUG),
/// except that the query of `/auth/oidc/…` (the authorization code and the
/// state) never reaches the log.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let uri = req.uri();
    let shown = if uri.path().starts_with("/auth/oidc/") && uri.query().is_some() {
        format!("{}?…", uri.path())
    } else {
        uri.to_string()
    };
    tracing::debug_span!("request", method = %req.method(), uri = %shown, version = ?req.version())
}

/// The "Sign in with …" button's label on the login page, when OIDC is on.
pub fn button(state: &AppState) -> Option<String> {
    state.oidc.as_ref().map(|o| o.display_name().to_string())
}

#[derive(Template)]
#[template(path = "oidc.html")]
struct OidcPage {
    me: Option<Nav>,
    provider: String,
    continue_to: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NextParam {
    next: Option<String>,
}

fn cookie_name(state: &AppState) -> String {
    if state.config.cookie_secure() {
        format!("__Secure-{PENDING_COOKIE}")
    } else {
        PENDING_COOKIE.to_string()
    }
}

/// The pending sign-in cookie: sent back on the provider's top-level
/// redirect (Lax), only to `/auth/oidc/`, never to scripts.
fn pending_cookie(state: &AppState, value: &str, max_age: i64) -> Result<HeaderValue, AppError> {
    let secure = if state.config.cookie_secure() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/auth/oidc/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state)
    ))
    .map_err(|e| AppError::Internal(anyhow::anyhow!("cookie: {e}")))
}

fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn page(
    state: &AppState,
    status: StatusCode,
    continue_to: Option<String>,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let html = render(&OidcPage {
        me: None,
        provider: button(state).unwrap_or_default(),
        continue_to,
        error: error.map(str::to_string),
    })?;
    Ok((status, html).into_response())
}

async fn start(
    State(state): State<AppState>,
    Query(q): Query<NextParam>,
) -> Result<Response, AppError> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(AppError::NotFound(
            "single sign-on is not configured".into(),
        ));
    };
    match oidc.start(safe_next(q.next.as_deref())).await {
        Ok((url, sealed)) => {
            let mut r = Redirect::to(url.as_str()).into_response();
            r.headers_mut().append(
                SET_COOKIE,
                pending_cookie(&state, &sealed, PENDING_TTL_SECS)?,
            );
            Ok(r)
        }
        Err(OidcError::Unreachable(e)) => {
            tracing::warn!(error = %e, "OIDC sign-in cannot start");
            page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Some("The identity provider cannot be reached right now. Try again later."),
            )
        }
        Err(OidcError::Refused(r)) => page(&state, StatusCode::FORBIDDEN, None, Some(r.message)),
        Err(OidcError::App(e)) => Err(e),
    }
}

async fn callback(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    headers: HeaderMap,
    Query(cb): Query<Callback>,
) -> Result<Response, AppError> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(AppError::NotFound(
            "single sign-on is not configured".into(),
        ));
    };
    let name = cookie_name(&state);
    let pending = read_cookie(&headers, &name);
    let outcome = oidc
        .finish(&state.db, &state.config, pending, cb, &meta)
        .await;
    let mut r = match outcome {
        Ok(done) => {
            super::auth::begin_browser_session(&session, done.session_id).await?;
            page(
                &state,
                StatusCode::OK,
                Some(safe_next(Some(&done.next))),
                None,
            )?
        }
        Err(OidcError::Refused(r)) => page(&state, StatusCode::FORBIDDEN, None, Some(r.message))?,
        Err(OidcError::Unreachable(e)) => {
            tracing::warn!(error = %e, "OIDC sign-in cannot finish");
            page(
                &state,
                StatusCode::BAD_GATEWAY,
                None,
                Some("The identity provider cannot be reached right now. Try again later."),
            )?
        }
        Err(OidcError::App(e)) => return Err(e),
    };
    // The pending sign-in is used up, whatever the outcome.
    r.headers_mut()
        .append(SET_COOKIE, pending_cookie(&state, "", 0)?);
    Ok(r)
}
