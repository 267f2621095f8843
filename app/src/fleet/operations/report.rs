//! `POST /api/yubikey/{serial}/operations/{id}/result`: the agent's result.
//! Success moves what the device holds — the confirmed escrow version, the
//! enrolled state, the factory state after a wipe; failure records the
//! agent's error code. Reporting the same result again is harmless.

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
pub struct OperationResult {
    pub success: bool,
    /// The agent's error code on failure.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
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
    let error: Option<String> = r.error.as_deref().map(|e| {
        e.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect()
    });
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
            })),
    )
    .await?;
    tx.commit().await?;
    operations::operation(db, op_id)
        .await?
        .ok_or(ReportError::Gone(op_id))
}
