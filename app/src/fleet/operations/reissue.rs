//! `GET /api/yubikey/{serial}/secrets?operation_id=…`: the agent request of a
//! pending secret change again (after a reload), secrets freshly encrypted to
//! the session's current agent key, under a new ticket.
//!
//! A resumed change may already be on the card (the earlier attempt's answer
//! was lost), so its parameters say `settle`: the agent first finds out which
//! value the card holds, without leaving a retry counter lower than it was,
//! and only then changes it. A first attempt does not settle: probing a value
//! the card cannot hold would only risk a try. The operation is marked as
//! possibly applied, so only the card's own refusal can fail it now.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    change_params, confirmed_secrets, own_operation, secret_changing, sign_ticket, still_pending,
    AuthorizedOperation, OwnOperationError,
};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::Serial;
use crate::fleet::access::{self, LookupError, OperationDenied};
use crate::fleet::agent::{self, SessionKeyError};
use crate::fleet::context::FleetContext;
use crate::fleet::db::operations;
use crate::fleet::escrow::{Escrow, EscrowError};
use crate::fleet::presence::{Proven, Purpose};
use crate::fleet::settings::{self, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Operation(#[from] OwnOperationError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Denied(#[from] OperationDenied),
    #[error(transparent)]
    Agent(#[from] SessionKeyError),
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    #[error("only an unconfirmed secret change can be resumed; start the operation again")]
    NotResumable,
    /// The secrets go only to an agent whose card just proved it is there.
    #[error("resuming releases secrets: the card must prove its presence first")]
    PresenceRequired,
    #[error(transparent)]
    Presence(Box<crate::fleet::presence::PresenceError>),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[allow(clippy::too_many_arguments)]
pub async fn reissue(
    db: &PgPool,
    escrow: &Escrow<'_>,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    op_id: Uuid,
    proven: &Proven,
) -> Result<AuthorizedOperation, ReissueError> {
    if proven.purpose() != Purpose::Resume || proven.operation_id() != op_id {
        return Err(ReissueError::PresenceRequired);
    }
    let d = access::load_visible(db, u, serial).await?;
    let op = own_operation(db, u, serial, op_id).await?;
    still_pending(&op)?;
    let operation = op.kind;
    let policy = settings::policy(db).await?;
    access::check_operation(u, &d, operation, &policy)?;
    let (agent_key, fingerprint) = agent::session_key(db, u).await?;
    if proven.fingerprint() != fingerprint {
        return Err(ReissueError::PresenceRequired);
    }
    let current = confirmed_secrets(escrow, &d).await?;
    let next = match op.secrets_version_new {
        Some(v) => Some(escrow.read(serial, u64::try_from(v).unwrap_or(0)).await?),
        None => None,
    };
    let params = match next.as_ref() {
        Some(n) if secret_changing(operation) => {
            change_params(operation, serial, &agent_key, &current, n, true)?
        }
        _ => return Err(ReissueError::NotResumable),
    };
    let ticket = sign_ticket(
        ctx,
        Uuid::new_v4(),
        operation,
        serial,
        &fingerprint,
        &params,
    )?;
    let mut tx = db.begin().await?;
    operations::record_ticket(
        &mut tx,
        op_id,
        &fingerprint,
        &ticket.params_hash,
        ticket.expires_at,
        None,
    )
    .await?;
    operations::mark_maybe_applied(&mut tx, op_id).await?;
    audit::record(
        &mut tx,
        AuditEvent::new("secret.read")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({"operation_id": op_id, "operation": operation, "encrypted_to_agent": fingerprint, "settle": true})),
    )
    .await?;
    tx.commit().await?;
    Ok(ticket.authorized(op_id, operation, serial, params))
}
