//! The workstation agent's public key, registered on the session of the
//! person who runs it (`user_sessions.agent_pubkey`): secrets are encrypted
//! to it and tickets bound to its fingerprint.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The PEM key registered on a session, if any.
pub async fn public_key(
    db: impl PgExecutor<'_>,
    session: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT agent_pubkey FROM user_sessions WHERE id = $1")
            .bind(session)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0))
}

/// The fingerprint of the key registered on a session, if any.
pub async fn fingerprint(
    db: impl PgExecutor<'_>,
    session: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT agent_key_fingerprint FROM user_sessions WHERE id = $1")
            .bind(session)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0))
}

/// Register a key on a session; false when the session no longer exists.
pub async fn register(
    conn: &mut PgConnection,
    session: Uuid,
    public_key_pem: &str,
    fingerprint: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE user_sessions SET agent_pubkey = $2, agent_key_fingerprint = $3 WHERE id = $1",
    )
    .bind(session)
    .bind(public_key_pem)
    .bind(fingerprint)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() > 0)
}
