//! The `operations` table: one row per operation authorised for an agent,
//! `pending` until the agent's result is reported.

use kleidia_protocol::ticket::Operation;
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::fmt_time;
use crate::domain::{OperationState, ProtocolName, Serial};

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct OperationRow {
    pub id: Uuid,
    #[sqlx(try_from = "i64")]
    pub device_serial: Serial,
    #[sqlx(try_from = "ProtocolName")]
    pub kind: Operation,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub session_id: Option<Uuid>,
    pub agent_key_fingerprint: Option<String>,
    pub state: OperationState,
    pub params_hash: Option<String>,
    pub secrets_version_prev: Option<i64>,
    pub secrets_version_new: Option<i64>,
    pub details: Value,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ticket_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl OperationRow {
    pub fn created_str(&self) -> String {
        fmt_time(&self.created_at)
    }
    pub fn error_str(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }
    /// An unconfirmed secret change: a new escrow version waits for the agent's result.
    pub fn is_unconfirmed_secret_change(&self) -> bool {
        self.state == OperationState::Pending && self.secrets_version_new.is_some()
    }
}

pub struct NewOperation<'a> {
    pub id: Uuid,
    pub serial: Serial,
    pub kind: Operation,
    pub actor_id: Uuid,
    pub actor_name: &'a str,
    pub session_id: Uuid,
    pub agent_key_fingerprint: &'a str,
    pub secrets_version_prev: Option<i64>,
    pub details: Value,
}

pub async fn insert_operation(
    conn: &mut PgConnection,
    o: &NewOperation<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operations (id, device_serial, kind, actor_id, actor_name, session_id, \
             agent_key_fingerprint, secrets_version_prev, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(o.id)
    .bind(o.serial.as_i64())
    .bind(o.kind.as_str())
    .bind(o.actor_id)
    .bind(o.actor_name)
    .bind(o.session_id)
    .bind(o.agent_key_fingerprint)
    .bind(o.secrets_version_prev)
    .bind(&o.details)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

pub async fn operation(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM operations WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn operation_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM operations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The unfinished secret change of a device, if any.
pub async fn pending_secret_change(
    db: impl PgExecutor<'_>,
    serial: Serial,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM operations WHERE device_serial = $1 AND state = $2 \
         AND secrets_version_new IS NOT NULL",
    )
    .bind(serial.as_i64())
    .bind(OperationState::Pending)
    .fetch_optional(db)
    .await
}

pub async fn operations_of(
    db: &PgPool,
    serial: Serial,
    limit: i64,
) -> Result<Vec<OperationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM operations WHERE device_serial = $1 ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(serial.as_i64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The ticket issued for an operation: the agent key it is bound to, what
/// its parameters hash to and until when it is valid; for a new secret
/// change, the escrow version it writes (a reissued ticket keeps the one
/// recorded). Only a pending operation gets a ticket: `RowNotFound` when it
/// was closed meanwhile.
pub async fn record_ticket(
    conn: &mut PgConnection,
    id: Uuid,
    fingerprint: &str,
    params_hash: &str,
    expires_at: OffsetDateTime,
    secrets_version_new: Option<i64>,
) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operations SET agent_key_fingerprint = $2, params_hash = $3, ticket_expires_at = $4, \
         secrets_version_new = COALESCE($5, secrets_version_new) WHERE id = $1 AND state = $6",
    )
    .bind(id)
    .bind(fingerprint)
    .bind(params_hash)
    .bind(expires_at)
    .bind(secrets_version_new)
    .bind(OperationState::Pending)
    .execute(conn)
    .await?;
    // A row closed meanwhile (by the expiry sweep) never gets a ticket.
    if done.rows_affected() == 0 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Finish an operation as `state` if it is still pending, with an error
/// code (the agent's, or Kleidia's when it gave up).
pub async fn finish(
    db: impl PgExecutor<'_>,
    id: Uuid,
    state: OperationState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = $2, error = $3, finished_at = now() \
         WHERE id = $1 AND state = $4",
    )
    .bind(id)
    .bind(state)
    .bind(error)
    .bind(OperationState::Pending)
    .execute(db)
    .await
    .map(|_| ())
}

/// Note on a pending secret change that an attempt may have reached the card
/// without its outcome coming back (a resume, an unknown result): from now
/// on only the card's own answer can fail it.
pub async fn mark_maybe_applied(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET details = details || '{\"maybe_applied\": true}'::jsonb \
         WHERE id = $1 AND state = $2",
    )
    .bind(id)
    .bind(OperationState::Pending)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A non-secret operation closed by [`close_expired`].
#[derive(Debug, Clone, FromRow)]
pub struct ExpiredOperation {
    pub id: Uuid,
    #[sqlx(try_from = "i64")]
    pub device_serial: Serial,
    #[sqlx(try_from = "ProtocolName")]
    pub kind: Operation,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub ticket_expires_at: Option<OffsetDateTime>,
}

/// Close, as `expired` with the error `outcome_unknown`, every pending
/// operation that changes no secret and whose ticket expired more than
/// `grace_secs` ago with no result (`grace_secs` covers a card command
/// started just before the expiry, its report, and the agent's clock). An
/// operation that never got a ticket is closed once no ticket recorded now
/// could still be valid: `max_lifetime_secs + grace_secs` after it was
/// created (and [`record_ticket`] refuses a closed row). A secret change is
/// never closed here: it stays pending until it is settled (DESIGN §8).
/// Runs in the caller's transaction, which audits what it closed.
pub async fn close_expired(
    conn: &mut PgConnection,
    grace_secs: i64,
    max_lifetime_secs: i64,
) -> Result<Vec<ExpiredOperation>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE operations SET state = $1, error = 'outcome_unknown', finished_at = now() \
         WHERE state = $2 AND secrets_version_new IS NULL \
           AND CASE WHEN ticket_expires_at IS NULL \
                    THEN created_at < now() - make_interval(secs => $4 + $3) \
                    ELSE ticket_expires_at < now() - make_interval(secs => $3) END \
         RETURNING id, device_serial, kind, actor_id, actor_name, ticket_expires_at",
    )
    .bind(OperationState::Expired)
    .bind(OperationState::Pending)
    .bind(grace_secs as f64)
    .bind(max_lifetime_secs as f64)
    .fetch_all(conn)
    .await
}
