//! Who is asking: roles, the signed-in user (`CurrentUser`, from the browser
//! session cookie or a Bearer JWT), route access rules, password hashing,
//! JWTs, the PostgreSQL session store and sign-in throttling.

pub mod jwt;
pub mod login;
pub mod password;
pub mod store;
pub mod throttle;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use uuid::Uuid;

use crate::db::sessions::{self, SessionKind};
use crate::error::AppError;
use crate::state::AppState;

/// Session data key holding the `user_sessions.id` of a browser session.
pub const SESSION_KEY: &str = "kleidia.sid";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including user and settings administration.
    Admin,
    /// Operates other people's devices; no user or settings administration.
    Helpdesk,
    /// Reads everything, including the audit log; changes nothing.
    Auditor,
    /// Own devices only.
    User,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Helpdesk, Role::Auditor, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Helpdesk => "helpdesk",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "Administrator",
            Role::Helpdesk => "Helpdesk",
            Role::Auditor => "Auditor",
            Role::User => "User",
        }
    }

    /// May see other people's profiles (read-only unless admin).
    pub fn reads_all_users(self) -> bool {
        matches!(self, Role::Admin | Role::Helpdesk | Role::Auditor)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| format!("unknown role {s:?} (admin, helpdesk, auditor, user)"))
    }
}

/// The route-level rule every route declares (see `web::routes`). Object-level
/// rules (a user sees only their own devices) are checked in the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user; the handler restricts objects to what they may see.
    SignedIn,
    /// Only these roles.
    Roles(&'static [Role]),
}

impl Access {
    pub const ADMIN: Access = Access::Roles(&[Role::Admin]);
    /// Admin and helpdesk: device operations for other people.
    pub const OPERATORS: Access = Access::Roles(&[Role::Admin, Role::Helpdesk]);
    /// Admin and auditor: the audit log.
    pub const AUDIT: Access = Access::Roles(&[Role::Admin, Role::Auditor]);
    /// Everyone but plain users: read access to the whole fleet and all users.
    pub const STAFF: Access = Access::Roles(&[Role::Admin, Role::Helpdesk, Role::Auditor]);

    /// `None` = not signed in.
    pub fn allows(self, role: Option<Role>) -> bool {
        match (self, role) {
            (Access::Public, _) => true,
            (_, None) => false,
            (Access::SignedIn, Some(_)) => true,
            (Access::Roles(rs), Some(r)) => rs.contains(&r),
        }
    }
}

/// The signed-in person behind a request, from the session cookie or a
/// `Authorization: Bearer <JWT>` header (which wins when both are present).
/// Extracting it answers 401 when neither identifies a live session of an
/// enabled account.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    /// `user_sessions.id` of the session this request runs on.
    pub session_id: Uuid,
    pub via: SessionKind,
    /// The password was set by someone else; pages send them to change it.
    pub must_change_password: bool,
}

impl CurrentUser {
    /// The caller may look at this user's profile (and, later, devices).
    pub fn may_read_user(&self, user_id: Uuid) -> bool {
        self.user_id == user_id || self.role.reads_all_users()
    }
}

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
        match sessions::current_user(&state.db, claims.sid, SessionKind::Api).await? {
            Some(u) if u.user_id.to_string() == claims.sub => Some(u),
            _ => None,
        }
    } else if let Some(session) = parts.extensions.get::<Session>().cloned() {
        let sid = session
            .get::<Uuid>(SESSION_KEY)
            .await
            .map_err(|e| AppError::Unavailable(format!("session store: {e}")))?;
        match sid {
            Some(sid) => sessions::current_user(&state.db, sid, SessionKind::Browser).await?,
            None => None,
        }
    } else {
        None
    };
    let Some((user, last_seen)) = found.map(|u| {
        let seen = u.last_seen_at;
        (u.into_current(), seen)
    }) else {
        return Ok(None);
    };
    sessions::touch(
        &state.db,
        &state.config.session,
        user.session_id,
        user.via,
        last_seen,
    )
    .await?;
    parts.extensions.insert(user.clone());
    Ok(Some(user))
}

/// Where a request comes from, for the audit log and throttling.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientMeta {
    /// The peer address, or the configured proxy header's (see
    /// `server.client_ip_header`), and the user agent.
    pub fn from_parts(parts: &Parts, client_ip_header: Option<&str>) -> Self {
        let from_header = client_ip_header.and_then(|name| {
            let v = parts.headers.get(name)?.to_str().ok()?;
            let last = v.rsplit(',').next()?.trim();
            last.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| ip.to_string())
        });
        let ip = from_header.or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(300).collect());
        Self { ip, user_agent }
    }
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientMeta::from_parts(
            parts,
            state.config.server.client_ip_header.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::json!(r.as_str()))
            );
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
    }

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
        let peer = ClientMeta::from_parts(&parts, None);
        assert_eq!(peer.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(peer.user_agent.as_deref(), Some("curl/8"));
        // The balancer appends the address it saw: the last entry counts.
        let proxied = ClientMeta::from_parts(&parts, Some("x-forwarded-for"));
        assert_eq!(proxied.ip.as_deref(), Some("198.51.100.4"));
        let missing = ClientMeta::from_parts(&parts, Some("x-real-ip"));
        assert_eq!(missing.ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn access_rules_deny_anonymous_callers_everything_but_public_routes() {
        assert!(Access::Public.allows(None));
        assert!(!Access::SignedIn.allows(None));
        assert!(Access::SignedIn.allows(Some(Role::User)));
        assert!(Access::ADMIN.allows(Some(Role::Admin)));
        assert!(!Access::ADMIN.allows(Some(Role::Helpdesk)));
        assert!(Access::AUDIT.allows(Some(Role::Auditor)));
        assert!(!Access::AUDIT.allows(Some(Role::Helpdesk)));
        assert!(!Access::STAFF.allows(Some(Role::User)));
    }
}
