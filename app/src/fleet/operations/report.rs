//! `POST /api/yubikey/{serial}/operations/{id}/result`: the agent's result.
//! Success moves what the device holds — the confirmed escrow version, the
//! enrolled state, the factory state after a wipe; failure records the
//! agent's error code. Reporting the same result again is harmless.
//!
//! A secret change is never marked failed when the card may have applied it
//! (DESIGN §8): only the card's own refusal of the value Kleidia sent, or a
//! refusal before anything reached the card on a first attempt, fails it.
//! Any other failure (the answer was lost, the agent died, an error code
//! Kleidia does not know) leaves it pending, to be settled by a resume.

use kleidia_protocol::agent::OathWipe;
use kleidia_protocol::ticket::Operation;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::{own_operation, still_pending, OwnOperationError};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::{DeviceState, OperationState, Serial};
use crate::fleet::access::{self, LookupError};
use crate::fleet::certificates::revoke_device_certificates;
use crate::fleet::db::{certificates, devices, operations, OperationRow};
use crate::fleet::pki::{Pki, PkiError};

/// `POST /api/yubikey/{serial}/operations/{id}/result`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct OperationResult {
    pub success: bool,
    /// The agent's error code on failure.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// What a settling change found on the card (`already_applied`,
    /// `applied_now`), for the audit.
    #[serde(default)]
    pub settled: Option<String>,
    /// What a wipe did to the OATH application (the agent's `oath`:
    /// `reset`, `not_present`), for the audit.
    #[serde(default)]
    pub oath: Option<OathWipe>,
}

/// Agent codes that say the card does not hold the new value: it refused the
/// value Kleidia sent (on a settling resume, both values), or a person
/// settled the change by hand as not applied.
const CARD_REFUSED: &[&str] = &[
    "wrong_pin",
    "pin_blocked",
    "wrong_puk",
    "puk_blocked",
    "wrong_management_key",
    "not_applied",
];

/// Agent codes of a refusal before anything was sent to the card.
const NOT_SENT: &[&str] = &[
    "bad_host",
    "origin_not_allowed",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_request",
    "decrypt_failed",
    "invalid_secret",
    "no_yubikey",
    "yubikey_not_found",
    "device_busy",
    "not_supported",
];

/// Whether a failure reported for a secret change proves that the card does
/// not hold the new value. `maybe_applied`: an earlier attempt may have
/// reached the card, so "this attempt sent nothing" proves nothing.
fn proves_not_applied(code: Option<&str>, maybe_applied: bool) -> bool {
    let Some(code) = code else { return false };
    if CARD_REFUSED.contains(&code) {
        return true;
    }
    let not_sent = NOT_SENT.contains(&code) || code.starts_with("ticket_");
    not_sent && !maybe_applied
}

fn maybe_applied(op: &OperationRow) -> bool {
    op.details.get("maybe_applied").and_then(Value::as_bool) == Some(true)
}

fn clean_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Operation(#[from] OwnOperationError),
    #[error("no operation {0}")]
    Gone(Uuid),
    #[error("no device {0}")]
    NoDevice(Serial),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn report(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    op_id: Uuid,
    r: OperationResult,
) -> Result<OperationRow, ReportError> {
    // The caller must be able to see the device at all.
    access::load_visible(db, u, serial).await?;
    let op = own_operation(db, u, serial, op_id).await?;
    let wanted = OperationState::reported(r.success);
    if op.state == wanted {
        return Ok(op);
    }
    still_pending(&op)?;
    let error: Option<String> = r.error.as_deref().map(clean_code);
    let settled: Option<String> = r.settled.as_deref().map(clean_code);
    if !r.success
        && op.secrets_version_new.is_some()
        && !proves_not_applied(error.as_deref(), maybe_applied(&op))
    {
        return outcome_unknown(db, u, meta, serial, &op, error, r.message).await;
    }
    // A wipe revokes the device's certificates in OpenBao before it is recorded.
    let mut revoked = Vec::new();
    if r.success && op.kind == Operation::Reset {
        revoked = revoke_device_certificates::<ReportError>(db, pki, serial).await?;
    }
    let mut tx = db.begin().await?;
    let op = operations::operation_for_update(&mut tx, op_id)
        .await?
        .ok_or(ReportError::Gone(op_id))?;
    still_pending(&op)?;
    let locked = devices::device_for_update(&mut tx, serial)
        .await?
        .ok_or(ReportError::NoDevice(serial))?;
    operations::finish(&mut *tx, op_id, wanted, error.as_deref()).await?;
    let mut device_change = Value::Null;
    if r.success {
        if let Some(v) = op.secrets_version_new {
            devices::set_secrets_version(&mut tx, serial, v).await?;
            device_change = json!({"secrets_version": v});
        }
        if op.kind == Operation::ImportCertificate && locked.state == DeviceState::Registered {
            devices::mark_enrolled(&mut tx, serial).await?;
            device_change = json!({"state": DeviceState::Active});
        }
        if op.kind == Operation::Reset {
            // Factory state again. A wiped enrolled key goes back to the pool
            // without an owner; a rolled-back enrollment stays registered to
            // its owner, ready to start over.
            let rolled_back = locked.state == DeviceState::Registered;
            let to = if rolled_back {
                DeviceState::Registered
            } else {
                DeviceState::Returned
            };
            devices::mark_wiped(&mut tx, serial, to, rolled_back).await?;
            for id in &revoked {
                certificates::mark_certificate_revoked(&mut tx, *id, "device wiped").await?;
            }
            device_change = json!({
                "state": to,
                "certificates_revoked": revoked.len(),
                "oath": r.oath.map(OathWipe::as_str),
            });
        }
    }
    audit::record(
        &mut tx,
        AuditEvent::new(&format!("operation.{wanted}"))
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "operation_id": op_id,
                "operation": op.kind,
                "error": error,
                "message": r.message.as_deref().map(|m| m.chars().take(300).collect::<String>()),
                "device": device_change,
                "found_on_card": settled,
            })),
    )
    .await?;
    tx.commit().await?;
    operations::operation(db, op_id)
        .await?
        .ok_or(ReportError::Gone(op_id))
}

/// A failure that does not prove the card kept its old value: the change
/// stays pending (marked as possibly applied, so a resume settles it) and
/// the report is audited as an unknown outcome.
async fn outcome_unknown(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    op: &OperationRow,
    error: Option<String>,
    message: Option<String>,
) -> Result<OperationRow, ReportError> {
    let mut tx = db.begin().await?;
    let locked = operations::operation_for_update(&mut tx, op.id)
        .await?
        .ok_or(ReportError::Gone(op.id))?;
    still_pending(&locked)?;
    operations::mark_maybe_applied(&mut tx, op.id).await?;
    audit::record(
        &mut tx,
        AuditEvent::new("operation.outcome_unknown")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "operation_id": op.id,
                "operation": op.kind,
                "error": error,
                "message": message.as_deref().map(|m| m.chars().take(300).collect::<String>()),
                "secrets_version_new": op.secrets_version_new,
                "state": OperationState::Pending,
            })),
    )
    .await?;
    tx.commit().await?;
    operations::operation(db, op.id)
        .await?
        .ok_or(ReportError::Gone(op.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cards_refusal_fails_a_change_that_may_have_been_applied() {
        assert!(proves_not_applied(Some("wrong_pin"), true));
        assert!(proves_not_applied(Some("not_applied"), true));
        assert!(proves_not_applied(Some("ticket_expired"), false));
        assert!(proves_not_applied(Some("device_busy"), false));
        assert!(!proves_not_applied(Some("ticket_expired"), true));
        assert!(!proves_not_applied(Some("outcome_unknown"), false));
        assert!(!proves_not_applied(Some("yubikey_removed"), false));
        assert!(!proves_not_applied(Some("agent_unreachable"), false));
        assert!(!proves_not_applied(Some("card_error"), false));
        assert!(!proves_not_applied(None, false));
    }
}
