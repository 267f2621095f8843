//! `users`: accounts, their roles and password hashes.

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{DisplayName, EmailAddress, Role, Username};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub must_change_password: bool,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
}

/// What the API and pages show about a user (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub disabled: bool,
    pub must_change_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

impl UserRow {
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            role: self.role,
            disabled: self.disabled,
            must_change_password: self.must_change_password,
            created_at: self.created_at,
            last_login_at: self.last_login_at,
        }
    }
}

const COLUMNS: &str =
    "id, username, display_name, email, role, password_hash, must_change_password, \
                       disabled, created_at, updated_at, last_login_at";

pub async fn by_username(
    db: impl PgExecutor<'_>,
    username: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
        .bind(Username::normalize(username))
        .fetch_optional(db)
        .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// For updates: the row, locked until the transaction ends.
pub async fn by_id_for_update(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub struct NewUser {
    pub username: Username,
    pub display_name: DisplayName,
    pub email: Option<EmailAddress>,
    pub role: Role,
    pub password_hash: String,
    pub must_change_password: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertUserError {
    #[error("the username {0} is already taken")]
    UsernameTaken(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn insert(db: impl PgExecutor<'_>, u: &NewUser) -> Result<UserRow, InsertUserError> {
    let res = sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (id, username, display_name, email, role, password_hash, must_change_password) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(u.username.as_str())
    .bind(u.display_name.as_str())
    .bind(u.email.as_ref().map(EmailAddress::as_str))
    .bind(u.role)
    .bind(&u.password_hash)
    .bind(u.must_change_password)
    .fetch_one(db)
    .await;
    match res {
        Ok(row) => Ok(row),
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("users_username_key") => {
            Err(InsertUserError::UsernameTaken(u.username.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn update_profile(
    db: impl PgExecutor<'_>,
    id: Uuid,
    display_name: &str,
    email: Option<&str>,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET display_name = $2, email = $3, role = $4, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(display_name)
        .bind(email)
        .bind(role)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_disabled(
    db: impl PgExecutor<'_>,
    id: Uuid,
    disabled: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET disabled = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(disabled)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    hash: &str,
    must_change: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, must_change_password = $3, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .bind(must_change)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn record_login(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// How many enabled admins there are (the last one cannot be demoted or disabled).
pub async fn count_enabled_admins(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
        .fetch_one(db)
        .await
}

pub const PAGE_SIZE: i64 = 50;

/// A page of users ordered by username, after `after` (keyset), matching `q`
/// in username, display name or email.
pub async fn search(
    db: &PgPool,
    q: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let pattern = q.map(str::trim).filter(|s| !s.is_empty()).map(|s| {
        format!(
            "%{}%",
            s.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {COLUMNS} FROM users \
         WHERE ($1::text IS NULL OR username LIKE $1 OR lower(display_name) LIKE $1 OR lower(coalesce(email, '')) LIKE $1) \
           AND ($2::text IS NULL OR username > $2) \
         ORDER BY username LIMIT $3"
    ))
    .bind(pattern)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
