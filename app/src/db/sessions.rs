//! `user_sessions`: browser sessions (tower-sessions records, see
//! `auth::store`) and API sessions (one per issued JWT).

use std::time::Duration;

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::SessionConfig;
use crate::domain::{Role, SessionKind};

#[derive(Debug, sqlx::FromRow)]
pub struct SessionUserRow {
    pub session_id: Uuid,
    pub last_seen_at: OffsetDateTime,
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub must_change_password: bool,
    pub kind: SessionKind,
}

/// The live session `id` of an enabled account, with its user.
pub async fn current_user(
    db: &PgPool,
    id: Uuid,
    kind: SessionKind,
) -> Result<Option<SessionUserRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionUserRow>(
        "SELECT s.id AS session_id, s.last_seen_at, s.kind, u.id AS user_id, u.username, \
                u.display_name, u.email, u.role, u.must_change_password \
         FROM user_sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.kind = $2 AND s.expires_at > now() \
           AND s.absolute_expires_at > now() AND NOT u.disabled",
    )
    .bind(id)
    .bind(kind)
    .fetch_optional(db)
    .await
}

/// Record activity: moves a browser session's idle expiry forward (never past
/// its absolute expiry). Written at most every few seconds per session;
/// returns when it wrote (`None`: not yet due).
pub async fn touch(
    db: &PgPool,
    cfg: &SessionConfig,
    id: Uuid,
    kind: SessionKind,
    last_seen: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    let granularity = (cfg.idle_timeout_secs / 4).clamp(1, 60);
    let now = OffsetDateTime::now_utc();
    if now - last_seen < Duration::from_secs(granularity) {
        return Ok(None);
    }
    match kind {
        SessionKind::Browser => {
            sqlx::query(
                "UPDATE user_sessions SET last_seen_at = now(), \
                 expires_at = LEAST(now() + make_interval(secs => $2), absolute_expires_at) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(cfg.idle_timeout_secs as f64)
            .execute(db)
            .await?;
        }
        SessionKind::Api => {
            sqlx::query("UPDATE user_sessions SET last_seen_at = now() WHERE id = $1")
                .bind(id)
                .execute(db)
                .await?;
        }
    }
    Ok(Some(now))
}

pub struct NewSession<'a> {
    pub user_id: Uuid,
    pub kind: SessionKind,
    pub idle: Duration,
    pub absolute: Duration,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Insert a session row and return its id. A browser row gets its
/// `token_hash` when tower-sessions stores the cookie id (`auth::store`).
pub async fn create(db: impl PgExecutor<'_>, s: NewSession<'_>) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO user_sessions (id, user_id, kind, expires_at, absolute_expires_at, ip, user_agent) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5), $6, $7)",
    )
    .bind(id)
    .bind(s.user_id)
    .bind(s.kind)
    .bind(s.idle.min(s.absolute).as_secs_f64())
    .bind(s.absolute.as_secs_f64())
    .bind(s.ip)
    .bind(s.user_agent)
    .execute(db)
    .await?;
    Ok(id)
}

/// End one session (logout). Its agent key goes with it.
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM user_sessions WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?
        .rows_affected()
        > 0)
}

/// End every session of a user (disabled, password reset). Returns how many.
pub async fn delete_for_user(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(db)
        .await?
        .rows_affected())
}

/// Remove expired sessions (and with them their agent keys).
pub async fn delete_expired(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM user_sessions WHERE expires_at <= now() OR absolute_expires_at <= now()",
    )
    .execute(db)
    .await?
    .rows_affected())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: Uuid,
    pub kind: SessionKind,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub agent_key_fingerprint: Option<String>,
}

/// A user's live sessions, newest first.
pub async fn list_for_user(db: &PgPool, user_id: Uuid) -> Result<Vec<SessionInfo>, sqlx::Error> {
    sqlx::query_as::<_, SessionInfo>(
        "SELECT id, kind, created_at, last_seen_at, expires_at, ip, user_agent, agent_key_fingerprint \
         FROM user_sessions WHERE user_id = $1 AND expires_at > now() AND absolute_expires_at > now() \
         ORDER BY created_at DESC LIMIT 50",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}
