//! Authorising YubiKey operations (DESIGN §6, §8): [`authorize`] an
//! operation for the caller's agent, [`reissue`] the ticket of an unconfirmed
//! secret change, and [`report`] the agent's result.
//!
//! A secret-changing operation follows one pattern: the operation row is
//! committed first (pending), the new secret is written to OpenBao as a new KV
//! version with check-and-set, then the row records that version and the
//! ticket is signed. The device's confirmed version (`devices.secrets_version`)
//! moves only when the agent's success is reported. Whatever fails in between,
//! both the confirmed and the new version stay in OpenBao.

mod authorize;
pub mod expiry;
mod reissue;
mod report;

pub use authorize::{authorize, challenge, AuthorizeError, OperationRequest};
pub use reissue::{reissue, ReissueError};
pub use report::{report, OperationResult, ReportError};

use kleidia_protocol::agent::{
    OperationParams, RotateManagementKeyParams, SetPinParams, SetPukParams, SignedRequest,
    UnblockPinParams,
};
use kleidia_protocol::ticket::{
    params_hash, EncryptedSecret, Operation, TicketClaims, TICKET_MAX_LIFETIME_SECS,
};
use rand::rngs::OsRng;
use rsa::RsaPublicKey;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::context::FleetContext;
use super::db::{operations, DeviceRow, OperationRow};
use super::escrow::{Escrow, EscrowError};
use super::presence::{self, PresenceChallenge, Purpose};
use super::secrets::DeviceSecrets;
use crate::auth::CurrentUser;
use crate::domain::{OperationState, Serial};

/// What the page posts to the agent, and where.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizedOperation {
    pub operation_id: Uuid,
    pub operation: Operation,
    pub serial: Serial,
    /// Agent endpoint, e.g. `/piv/set-pin`.
    pub agent_path: &'static str,
    /// `{ "ticket": …, "params": … }`, posted unchanged to the agent.
    pub request: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A signed ticket for `params`, and what the operation row records of it.
pub(crate) struct Ticket {
    pub(crate) ticket: String,
    pub(crate) params_hash: String,
    pub(crate) expires_at: OffsetDateTime,
}

/// Sign a ticket (`ticket_id`) for `op` on `serial` with exactly `params`,
/// for the agent key `fingerprint`.
pub(crate) fn sign_ticket(
    ctx: &FleetContext,
    ticket_id: Uuid,
    op: Operation,
    serial: Serial,
    fingerprint: &str,
    params: &Value,
) -> anyhow::Result<Ticket> {
    let hash = params_hash(params)?;
    let now = OffsetDateTime::now_utc();
    // `operations.ticket_lifetime_secs`; the agent refuses anything longer than 120 s.
    let expires =
        now + time::Duration::seconds(ctx.ticket_lifetime_secs.clamp(1, TICKET_MAX_LIFETIME_SECS));
    let ticket = ctx.ticket_key.sign(&TicketClaims {
        id: ticket_id,
        operation: op,
        serial: serial.get(),
        agent_key_fingerprint: fingerprint.to_string(),
        params_hash: hash.clone(),
        issued_at: now.unix_timestamp(),
        expires_at: expires.unix_timestamp(),
    });
    Ok(Ticket {
        ticket,
        params_hash: hash,
        expires_at: expires,
    })
}

impl Ticket {
    fn authorized(
        self,
        operation_id: Uuid,
        operation: Operation,
        serial: Serial,
        params: Value,
    ) -> AuthorizedOperation {
        AuthorizedOperation {
            operation_id,
            operation,
            serial,
            agent_path: operation.path(),
            request: json!(SignedRequest {
                ticket: self.ticket,
                params
            }),
            expires_at: self.expires_at,
        }
    }
}

fn secret_changing(op: Operation) -> bool {
    matches!(
        op,
        Operation::SetPin
            | Operation::SetPuk
            | Operation::UnblockPin
            | Operation::RotateManagementKey
    )
}

/// The agent parameters of a secret change: the value the device holds now
/// and the new one, each encrypted to the agent key.
fn secret_change_params(
    op: Operation,
    serial: Serial,
    key: &RsaPublicKey,
    current: &DeviceSecrets,
    next: &DeviceSecrets,
) -> anyhow::Result<Value> {
    change_params(op, serial, key, current, next, false)
}

/// [`secret_change_params`] with `settle`: the agent first finds out which
/// of the two values the card holds (a resume, DESIGN §8). The flag is part
/// of the signed parameters.
fn change_params(
    op: Operation,
    serial: Serial,
    key: &RsaPublicKey,
    current: &DeviceSecrets,
    next: &DeviceSecrets,
    settle: bool,
) -> anyhow::Result<Value> {
    let serial = serial.get();
    match op {
        Operation::SetPin => to_value(SetPinParams {
            serial,
            current_pin: enc(key, &current.pin)?,
            new_pin: enc(key, &next.pin)?,
            settle,
        }),
        Operation::SetPuk => to_value(SetPukParams {
            serial,
            current_puk: enc(key, &current.puk)?,
            new_puk: enc(key, &next.puk)?,
            settle,
        }),
        Operation::UnblockPin => to_value(UnblockPinParams {
            serial,
            puk: enc(key, &current.puk)?,
            new_pin: enc(key, &next.pin)?,
            settle,
        }),
        Operation::RotateManagementKey => to_value(RotateManagementKeyParams {
            serial,
            current_management_key: enc(key, &current.management_key)?,
            new_management_key: enc(key, &next.management_key)?,
            algorithm: next.management_key_algorithm,
            require_touch: false,
            settle,
        }),
        _ => Err(missing_next()),
    }
}

/// The values the device holds now: the confirmed escrow version, or the factory defaults.
async fn confirmed_secrets(
    escrow: &Escrow<'_>,
    d: &DeviceRow,
) -> Result<DeviceSecrets, EscrowError> {
    match d.secrets_version {
        None => Ok(DeviceSecrets::factory(d.firmware_5_7_or_later())),
        Some(v) => escrow.read(d.serial, u64::try_from(v).unwrap_or(0)).await,
    }
}

fn enc(key: &RsaPublicKey, s: &str) -> anyhow::Result<EncryptedSecret> {
    EncryptedSecret::encrypt(key, s.as_bytes(), &mut OsRng)
        .map_err(|e| anyhow::anyhow!("RSA-OAEP: {e:?}"))
}

fn to_value<P: OperationParams>(p: P) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(&p)?)
}

fn missing_next() -> anyhow::Error {
    anyhow::anyhow!("operation parameters were not prepared")
}

/// An operation on this device that the caller started (or, for an
/// operator, anyone did).
#[derive(Debug, thiserror::Error)]
pub enum OwnOperationError {
    #[error("no operation {operation} on {serial}")]
    NotFound { operation: Uuid, serial: Serial },
    #[error("that operation was started by someone else")]
    StartedBySomeoneElse,
    #[error("operation {operation} is already {state}")]
    AlreadyFinished {
        operation: Uuid,
        state: OperationState,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub(crate) async fn own_operation(
    db: &PgPool,
    u: &CurrentUser,
    serial: Serial,
    id: Uuid,
) -> Result<OperationRow, OwnOperationError> {
    let op = operations::operation(db, id)
        .await?
        .filter(|o| o.device_serial == serial)
        .ok_or(OwnOperationError::NotFound {
            operation: id,
            serial,
        })?;
    if op.actor_id != Some(u.user_id) && !super::access::is_operator(u) {
        return Err(OwnOperationError::StartedBySomeoneElse);
    }
    Ok(op)
}

/// The operation still waits for its result.
pub(crate) fn still_pending(op: &OperationRow) -> Result<(), OwnOperationError> {
    if op.state != OperationState::Pending {
        return Err(OwnOperationError::AlreadyFinished {
            operation: op.id,
            state: op.state,
        });
    }
    Ok(())
}

/// Step one of resuming an unconfirmed secret change: the same checks as
/// [`reissue`] makes, then a presence challenge for that operation.
pub async fn resume_challenge(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &crate::auth::ClientMeta,
    serial: Serial,
    op_id: Uuid,
) -> Result<PresenceChallenge, ReissueError> {
    let d = super::access::load_visible(db, u, serial).await?;
    let op = own_operation(db, u, serial, op_id).await?;
    still_pending(&op)?;
    if !secret_changing(op.kind) || op.secrets_version_new.is_none() {
        return Err(ReissueError::NotResumable);
    }
    let policy = super::settings::policy(db).await?;
    super::access::check_operation(u, &d, op.kind, &policy)?;
    let (_, fingerprint) = super::agent::session_key(db, u).await?;
    presence::challenge(
        db,
        ctx,
        u,
        meta,
        &d,
        Purpose::Resume,
        (op_id, op.kind),
        json!({}),
        &fingerprint,
    )
    .await
    .map_err(|e| match e {
        presence::PresenceError::Db(e) => ReissueError::Db(e),
        e => ReissueError::Presence(Box::new(e)),
    })
}

/// RFC 4514 escaping of an attribute value.
fn rfc4514_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.ends_with(' ') {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_values_are_escaped_for_rfc4514() {
        assert_eq!(rfc4514_escape("Alice Example"), "Alice Example");
        assert_eq!(rfc4514_escape("Doe, John"), "Doe\\, John");
        assert_eq!(rfc4514_escape("a=b+c"), "a\\=b\\+c");
        assert_eq!(rfc4514_escape("#x"), "\\#x");
        assert_eq!(rfc4514_escape("x\n"), "x");
    }
}
