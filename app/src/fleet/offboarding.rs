//! Offboarding (issue 14 §10): what disabling a user does to their
//! YubiKeys, by the `offboarding` policy on `/settings`. [`plan`] says what
//! will happen (the user page shows it before the admin confirms);
//! [`offboard`] does it after the account is disabled.
//!
//! Certificates are revoked in OpenBao first, then the devices are
//! suspended and the certificates marked revoked in one transaction with
//! the audit rows. If OpenBao cannot revoke, the account is still disabled
//! (its sessions are gone) and the error says so; disabling again finishes
//! the offboarding, which is idempotent.

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::db::{certificates, devices};
use super::pki::{Pki, PkiError};
use super::policy::Offboarding;
use super::settings::{self, PolicyError};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::{DeviceState, Serial};

/// One certificate offboarding revokes or holds.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedCertificate {
    pub id: Uuid,
    pub device: Serial,
    pub slot: String,
    pub serial_number: String,
    pub subject: String,
}

/// What disabling the user does under the policy in force.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub policy: Offboarding,
    /// Devices that will be suspended (the active ones; the lifecycle has
    /// no suspended state for a key never enrolled).
    pub suspend: Vec<Serial>,
    /// Certificates still issued on the user's devices.
    pub certificates: Vec<PlannedCertificate>,
}

impl Plan {
    pub fn revokes(&self) -> bool {
        self.policy == Offboarding::SuspendAndRevoke
    }
    pub fn suspends(&self) -> bool {
        self.policy != Offboarding::SessionsOnly
    }
    /// One sentence for the user page.
    pub fn summary(&self) -> String {
        let devices = self
            .suspend
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let n = self.certificates.len();
        match self.policy {
            Offboarding::SessionsOnly => format!(
                "Policy sessions_only: sessions end; {} device(s) and {n} certificate(s) stay valid.",
                self.suspend.len()
            ),
            Offboarding::SuspendAndHold => format!(
                "Policy suspend_and_hold: sessions end; devices suspended: {}; {n} certificate(s) held (left valid in the CA until revoked or the user is back).",
                if devices.is_empty() { "none".into() } else { devices }
            ),
            Offboarding::SuspendAndRevoke => format!(
                "Policy suspend_and_revoke: sessions end; devices suspended: {}; {n} certificate(s) revoked (on the CRL).",
                if devices.is_empty() { "none".into() } else { devices }
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OffboardError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the account is disabled, but its certificates could not be revoked ({0}); disable it again to finish")]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What disabling `user_id` would do now.
pub async fn plan(db: &PgPool, user_id: Uuid) -> Result<Plan, OffboardError> {
    let policy = settings::policy(db).await?.offboarding;
    let owned: Vec<(i64, DeviceState)> =
        sqlx::query_as("SELECT serial, state FROM devices WHERE owner_id = $1 ORDER BY serial")
            .bind(user_id)
            .fetch_all(db)
            .await?;
    let mut suspend = Vec::new();
    let mut certs = Vec::new();
    for (serial, state) in owned {
        let Ok(serial) = Serial::try_from(serial) else {
            continue;
        };
        if state == DeviceState::Active {
            suspend.push(serial);
        }
        for c in certificates::certificates_of(db, serial).await? {
            if c.is_issued() {
                certs.push(PlannedCertificate {
                    id: c.id,
                    device: serial,
                    slot: c.slot.to_string(),
                    serial_number: c.serial_number,
                    subject: c.subject,
                });
            }
        }
    }
    Ok(Plan {
        policy,
        suspend,
        certificates: certs,
    })
}

/// Apply the offboarding policy to the (just disabled) user `user_id`.
pub async fn offboard(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    user_id: Uuid,
    username: &str,
) -> Result<Plan, OffboardError> {
    let plan = plan(db, user_id).await?;
    let reason = format!(
        "owner {username} disabled (offboarding: {})",
        plan.policy.as_str()
    );
    let mut revoked = Vec::new();
    if plan.revokes() {
        // OpenBao first: a device must never keep a valid certificate
        // because the database commit came first.
        for c in &plan.certificates {
            pki.revoke(&c.serial_number).await?;
            revoked.push(c.id);
        }
    }
    let mut tx = db.begin().await?;
    let mut suspended = Vec::new();
    if plan.suspends() {
        for serial in &plan.suspend {
            let Some(d) = devices::device_for_update(&mut tx, *serial).await? else {
                continue;
            };
            if d.owner_id != Some(user_id) || d.state != DeviceState::Active {
                continue;
            }
            devices::set_state(&mut tx, *serial, DeviceState::Suspended).await?;
            audit::record(
                &mut tx,
                AuditEvent::new("device.suspended")
                    .actor(u)
                    .from_client(meta)
                    .target("device", serial)
                    .details(json!({"from": d.state, "to": DeviceState::Suspended,
                                    "reason": reason, "certificates_revoked": 0})),
            )
            .await?;
            suspended.push(*serial);
        }
    }
    for id in &revoked {
        certificates::mark_certificate_revoked(&mut tx, *id, &reason).await?;
    }
    let held: Vec<&str> = if plan.policy == Offboarding::SuspendAndHold {
        plan.certificates
            .iter()
            .map(|c| c.serial_number.as_str())
            .collect()
    } else {
        Vec::new()
    };
    audit::record(
        &mut tx,
        AuditEvent::new("user.offboard")
            .actor(u)
            .from_client(meta)
            .target("user", user_id)
            .details(json!({
                "username": username,
                "policy": plan.policy.as_str(),
                "devices_suspended": suspended,
                "certificates_revoked": plan.certificates.iter()
                    .filter(|c| revoked.contains(&c.id))
                    .map(|c| c.serial_number.as_str()).collect::<Vec<_>>(),
                "certificates_held": held,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(plan)
}
