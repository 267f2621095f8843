//! Accounts linked to an OpenID provider (`users.oidc_issuer`,
//! `users.oidc_subject`) and the OIDC sessions re-checked with it
//! (`oidc_sessions`). See `auth::oidc`.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::users::UserRow;
use crate::domain::{DisplayName, EmailAddress, Role, Username};

/// The `password_hash` of an account made by OIDC: no PHC string, so no
/// password ever verifies against it.
pub const NO_PASSWORD: &str = "!oidc";

const COLUMNS: &str =
    "id, username, display_name, email, role, password_hash, must_change_password, \
     disabled, created_at, updated_at, last_login_at";

/// The account tied to the provider's `(issuer, sub)`, locked for update.
pub async fn by_identity_for_update(
    db: &mut PgConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {COLUMNS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2 FOR UPDATE"
    ))
    .bind(issuer)
    .bind(subject)
    .fetch_optional(db)
    .await
}

pub struct NewOidcUser<'a> {
    pub username: &'a Username,
    pub display_name: &'a DisplayName,
    pub email: Option<&'a EmailAddress>,
    pub role: Role,
    pub issuer: &'a str,
    pub subject: &'a str,
}

/// Create the account at its first sign-in. `Ok(None)`: the username is
/// taken by another account (a local one, or one of another subject).
pub async fn insert_user(
    db: &mut PgConnection,
    u: NewOidcUser<'_>,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (id, username, display_name, email, role, password_hash, \
                            oidc_issuer, oidc_subject) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT ON CONSTRAINT users_username_key DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(u.username.as_str())
    .bind(u.display_name.as_str())
    .bind(u.email.map(EmailAddress::as_str))
    .bind(u.role)
    .bind(NO_PASSWORD)
    .bind(u.issuer)
    .bind(u.subject)
    .fetch_optional(db)
    .await
}

/// The provider's view at a sign-in: role, name and email follow it.
pub async fn update_from_idp(
    db: impl PgExecutor<'_>,
    id: Uuid,
    role: Role,
    display_name: &DisplayName,
    email: Option<&EmailAddress>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET role = $2, display_name = $3, email = $4, updated_at = now() \
         WHERE id = $1 AND (role, display_name, email) IS DISTINCT FROM ($2, $3, $4)",
    )
    .bind(id)
    .bind(role)
    .bind(display_name.as_str())
    .bind(email.map(EmailAddress::as_str))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_role(db: impl PgExecutor<'_>, id: Uuid, role: Role) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(role)
        .execute(db)
        .await?;
    Ok(())
}

/// Record an OIDC browser session with its sealed refresh token.
pub async fn insert_session(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
    user_id: Uuid,
    sealed_refresh_token: Option<&[u8]>,
    recheck_secs: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oidc_sessions (session_id, user_id, refresh_token, next_check_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(sealed_refresh_token)
    .bind(recheck_secs as f64)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct DueSession {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    pub oidc_subject: Option<String>,
    pub refresh_token: Option<Vec<u8>>,
    pub next_check_at: OffsetDateTime,
}

/// Ids of the sessions due for a check.
pub async fn due(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT session_id FROM oidc_sessions WHERE next_check_at <= now() \
         ORDER BY next_check_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One due session, locked (another replica checking it skips it).
pub async fn lock_due(
    db: &mut PgConnection,
    session_id: Uuid,
) -> Result<Option<DueSession>, sqlx::Error> {
    sqlx::query_as::<_, DueSession>(
        "SELECT o.session_id, o.user_id, u.username, u.role, u.oidc_subject, o.refresh_token, \
                o.next_check_at \
         FROM oidc_sessions o JOIN users u ON u.id = o.user_id \
         WHERE o.session_id = $1 AND o.next_check_at <= now() \
         FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await
}

/// The check passed (or could not be made): next one in `secs`.
pub async fn checked(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
    sealed_refresh_token: Option<&[u8]>,
    secs: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE oidc_sessions SET refresh_token = COALESCE($2, refresh_token), \
                last_checked_at = now(), next_check_at = now() + make_interval(secs => $3) \
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(sealed_refresh_token)
    .bind(secs as f64)
    .execute(db)
    .await?;
    Ok(())
}
