//! Extractors shared by the handlers: who is asking ([`CurrentUser`],
//! [`MaybeUser`]), where from ([`ClientMeta`]) and what htmx says
//! ([`HxRequest`]).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use axum::Json;
use tower_sessions::Session;
use uuid::Uuid;

use crate::auth::{ClientMeta, CurrentUser, SessionKind, SESSION_KEY};
use crate::db::sessions;
use crate::error::AppError;
use crate::state::AppState;

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        resolve(parts, state).await?.ok_or(AppError::Unauthorized)
    }
}

/// The signed-in user, or `None` (pages that look different when signed in).
pub struct MaybeUser(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(resolve(parts, state).await?))
    }
}

/// Find the user for this request and cache it in the request extensions.
/// `Ok(None)` = not signed in (or the session/token is dead).
pub async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Option<CurrentUser>, AppError> {
    if let Some(u) = parts.extensions.get::<CurrentUser>() {
        return Ok(Some(u.clone()));
    }
    let found = if let Some(h) = parts.headers.get(AUTHORIZATION) {
        // A present but unusable Authorization header never falls back to
        // the cookie: the client meant to use the token.
        let Some(token) = h.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) else {
            return Ok(None);
        };
        let Ok(claims) = state.jwt.verify(token.trim()) else {
            return Ok(None);
        };
        match session_user(state, claims.sid, SessionKind::Api).await? {
            Some(u) if u.0.user_id.to_string() == claims.sub => Some(u),
            _ => None,
        }
    } else if let Some(session) = parts.extensions.get::<Session>().cloned() {
        let sid = session
            .get::<Uuid>(SESSION_KEY)
            .await
            .map_err(|e| AppError::Unavailable(format!("session store: {e}")))?;
        match sid {
            Some(sid) => session_user(state, sid, SessionKind::Browser).await?,
            None => None,
        }
    } else {
        None
    };
    let Some((user, last_seen)) = found else {
        return Ok(None);
    };
    if let Some(at) = sessions::touch(
        &state.db,
        &state.config.session,
        user.session_id,
        user.via,
        last_seen,
    )
    .await?
    {
        state.sessions.touched(user.session_id, at);
    }
    if let Some(slot) = parts.extensions.get::<super::error_pages::SignedIn>() {
        slot.set(&user);
    }
    parts.extensions.insert(user.clone());
    Ok(Some(user))
}

/// The live session `id` of an enabled account and its last-seen time: from
/// this replica's session cache (`auth::session_cache`, at most
/// `session.cache_secs` old), else from PostgreSQL.
async fn session_user(
    state: &AppState,
    id: Uuid,
    kind: SessionKind,
) -> Result<Option<(CurrentUser, time::OffsetDateTime)>, AppError> {
    if let Some(hit) = state.sessions.get(id, kind) {
        return Ok(Some(hit));
    }
    let Some(row) = sessions::current_user(&state.db, id, kind).await? else {
        return Ok(None);
    };
    let seen = row.last_seen_at;
    let user = CurrentUser::from(row);
    state.sessions.put(&user, seen);
    Ok(Some((user, seen)))
}

/// The peer address, or the configured proxy header's (see
/// `server.client_ip_header`), and the user agent.
pub fn client_meta(parts: &Parts, client_ip_header: Option<&str>) -> ClientMeta {
    client_meta_of(&parts.headers, &parts.extensions, client_ip_header)
}

/// [`client_meta`] from a request's headers and extensions.
pub fn client_meta_of(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    client_ip_header: Option<&str>,
) -> ClientMeta {
    let from_header = client_ip_header.and_then(|name| {
        let v = headers.get(name)?.to_str().ok()?;
        let last = v.rsplit(',').next()?.trim();
        last.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_string())
    });
    let ip = from_header.or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
    });
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(300).collect());
    ClientMeta { ip, user_agent }
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(client_meta(
            parts,
            state.config.server.client_ip_header.as_deref(),
        ))
    }
}

/// What htmx says about a request: `HX-Request` is set on every htmx call,
/// `HX-Boosted` on a boosted link or form that replaces the whole body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HxRequest {
    pub htmx: bool,
    pub boosted: bool,
}

impl HxRequest {
    /// A fragment swap: answer with the partial, not the full page. A boosted
    /// navigation wants the whole page.
    pub fn wants_partial(self) -> bool {
        self.htmx && !self.boosted
    }
}

impl<S: Send + Sync> FromRequestParts<S> for HxRequest {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

impl HxRequest {
    pub fn from_headers(h: &axum::http::HeaderMap) -> Self {
        Self {
            htmx: h.contains_key("hx-request"),
            boosted: h.contains_key("hx-boosted"),
        }
    }
}

/// A JSON body with a clear 400/415/422 instead of axum's default text.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::Bytes::from_request(
            axum::extract::Request::from_parts(parts.clone(), body),
            state,
        )
        .await
        .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        // serde reads a struct from a JSON array too (`[null, null]` as
        // the first two fields); every body Kleidia takes is an object.
        let is_object = bytes.trim_ascii_start().first() == Some(&b'{');
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(_)) if !is_object => Err(AppError::BadRequest(
                "the JSON body must be an object".into(),
            )),
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(body_rejection(e.status(), e.body_text())),
        }
    }
}

/// [`JsonBody`] for the sign-in and password API, whose contract (since
/// before the JSON bodies were checked alike) is 422 for JSON that does
/// not fit, e.g. an unknown field; elsewhere that is a 400.
pub struct JsonBodyStrict<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBodyStrict<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(v)) => Ok(JsonBodyStrict(v)),
            Err(AppError::BadRequest(m))
                if m.starts_with("Failed to deserialize the JSON body into the target type") =>
            {
                Err(AppError::Unprocessable(m))
            }
            Err(e) => Err(e),
        }
    }
}

/// axum's rejection of a body: 415 for a body that is not JSON, 413 over
/// the limit, 400 for anything else (broken JSON, or JSON that does not
/// fit the type: the message names the field).
fn body_rejection(status: axum::http::StatusCode, text: String) -> AppError {
    use axum::http::StatusCode as S;
    match status {
        S::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(text),
        S::PAYLOAD_TOO_LARGE => AppError::TooLarge(text),
        _ => AppError::BadRequest(text),
    }
}

/// A query string with a clear JSON 400 instead of axum's default text.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A NUL can only arrive percent-encoded; no filter or name holds
        // one, and PostgreSQL refuses it in text (a 500 found by schemathesis).
        if parts
            .uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("%00"))
        {
            return Err(AppError::BadRequest(
                "a query value contains a NUL character".into(),
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(AppError::BadRequest(e.body_text())),
        }
    }
}

/// A UUID path segment or query value; `what` names it in the 400.
pub fn parse_uuid(s: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(s).map_err(|_| AppError::BadRequest(format!("{what} must be a UUID")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn the_client_address_comes_from_the_configured_header_only() {
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap_or_default();
        let (mut parts, _) = req.into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4444))));
        let peer = client_meta(&parts, None);
        assert_eq!(peer.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(peer.user_agent.as_deref(), Some("curl/8"));
        // The balancer appends the address it saw: the last entry counts.
        let proxied = client_meta(&parts, Some("x-forwarded-for"));
        assert_eq!(proxied.ip.as_deref(), Some("198.51.100.4"));
        let missing = client_meta(&parts, Some("x-real-ip"));
        assert_eq!(missing.ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn a_boosted_navigation_wants_the_whole_page() {
        let mut h = HeaderMap::new();
        assert!(!HxRequest::from_headers(&h).wants_partial());
        h.insert("hx-request", "true".parse().unwrap());
        assert!(HxRequest::from_headers(&h).wants_partial());
        h.insert("hx-boosted", "true".parse().unwrap());
        assert!(!HxRequest::from_headers(&h).wants_partial());
        assert!(HxRequest::from_headers(&h).htmx);
    }
}
