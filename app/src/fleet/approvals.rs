//! Certificates in another person's name (issue 12 §2).
//!
//! A certificate carries the names of the device's owner, so whoever asks
//! Kleidia to generate and certify a key on a device they do not own could
//! otherwise get a smart-card-logon certificate in the owner's name (helpdesk
//! registers a spare key to an admin and enrolls it at their own desk). With
//! the policy's `certificate_approval` at `owner_or_second_admin` (the
//! default), such a key generation waits for the owner's confirmation, from
//! the owner's own session, or for an admin who is not the requester.
//!
//! The gate is the authorisation of the key generation (before the card
//! generates anything): the first request records a pending approval and is
//! refused; once approved, the next request of the same person for the same
//! device and slot, while the same person owns it, spends the approval on
//! that one key generation. Signing the CSR checks again that the key
//! generation was the owner's own or spent an approval for the current owner,
//! so a device reassigned after its key was generated gets no certificate in
//! the new owner's name. Every request, refusal, decision and use is audited.

use serde_json::json;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::db::approvals::{self, ApprovalRow, ApprovalStatus, NewApproval};
use super::db::{DeviceRow, OperationRow};
use super::policy::{CertificateApproval, PivSlot, Policy};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser, Role};
use crate::domain::Serial;

/// How long a request stays open, and an approval usable.
pub const LIFETIME: Duration = Duration::hours(24);

/// How many requests the page and the API list.
const LIST_LIMIT: i64 = 200;

/// The key generation waits for an approval.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(
        "a certificate for YubiKey {serial} (slot {slot}) carries the name of its owner, {owner}: \
         the owner, signed in themselves, or an admin other than you must approve it first. \
         Approval request {approval} is pending (see /approvals); ask again once it is approved"
    )]
    Pending {
        approval: Uuid,
        serial: Serial,
        slot: PivSlot,
        owner: String,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Whether a key generation by `u` in `slot` of `d` may go ahead: `Ok(None)`
/// when no approval is needed (the policy is off, the device has no owner
/// (no certificate names, refused later), or `u` owns it); `Ok(Some(id))`
/// when approval `id` was spent on `operation`. Otherwise the pending
/// request (found or recorded now) is the error, and the refusal is audited.
pub async fn admit_key_generation(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    d: &DeviceRow,
    slot: PivSlot,
    policy: &Policy,
    operation: Uuid,
) -> Result<Option<Uuid>, GateError> {
    if policy.certificate_approval == CertificateApproval::Off {
        return Ok(None);
    }
    let Some(owner) = d.owner_id.filter(|o| *o != u.user_id) else {
        return Ok(None);
    };
    let serial = d.serial;
    let open = approvals::open_request(db, serial, u.user_id, slot, owner).await?;
    let mut tx = db.begin().await?;
    let approval = match open {
        Some(a) if a.status == ApprovalStatus::Approved => {
            if approvals::mark_used(&mut tx, a.id, operation).await? {
                audit::record(
                    &mut tx,
                    AuditEvent::new("certificate_approval.use")
                        .actor(u)
                        .from_client(meta)
                        .target("device", serial)
                        .details(json!({
                            "approval_id": a.id,
                            "operation_id": operation,
                            "slot": slot,
                            "owner_id": owner,
                            "approved_by": a.decided_by_name,
                        })),
                )
                .await?;
                tx.commit().await?;
                return Ok(Some(a.id));
            }
            // Used or expired in the meantime: a new request.
            new_request(&mut tx, u, meta, serial, slot, owner).await?
        }
        Some(a) => a.id,
        None => new_request(&mut tx, u, meta, serial, slot, owner).await?,
    };
    audit::record(
        &mut tx,
        AuditEvent::new("certificate.refused")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "reason": "approval_pending",
                "approval_id": approval,
                "slot": slot,
                "owner_id": owner,
            })),
    )
    .await?;
    tx.commit().await?;
    let owner = crate::db::users::by_id(db, owner)
        .await?
        .map(|o| o.display_name)
        .unwrap_or_default();
    Err(GateError::Pending {
        approval,
        serial,
        slot,
        owner,
    })
}

async fn new_request(
    tx: &mut sqlx::PgConnection,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    slot: PivSlot,
    owner: Uuid,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let expires_at = OffsetDateTime::now_utc() + LIFETIME;
    approvals::insert(
        tx,
        &NewApproval {
            id,
            serial,
            slot,
            requester_id: u.user_id,
            requester_name: &u.username,
            owner_id: owner,
            expires_at,
        },
    )
    .await?;
    audit::record(
        tx,
        AuditEvent::new("certificate_approval.request")
            .actor(u)
            .from_client(meta)
            .target("certificate_approval", id)
            .details(json!({
                "device": serial,
                "slot": slot,
                "owner_id": owner,
                "expires_at": expires_at.unix_timestamp(),
            })),
    )
    .await?;
    Ok(id)
}

/// Why a CSR is not signed although its key generation exists; `None` when
/// the signing may go ahead: the policy is off, the device has no owner, the
/// key generation was the current owner's own, or it spent an approval for
/// this device, slot and current owner.
pub async fn signing_refusal(
    db: &PgPool,
    d: &DeviceRow,
    op: &OperationRow,
    slot_name: &str,
    policy: &Policy,
) -> Result<Option<String>, sqlx::Error> {
    if policy.certificate_approval == CertificateApproval::Off {
        return Ok(None);
    }
    let Some(owner) = d.owner_id else {
        return Ok(None);
    };
    if op.actor_id == Some(owner) {
        return Ok(None);
    }
    let spent = match op
        .details
        .get("approval_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<Uuid>().ok())
    {
        Some(id) => approvals::approval(db, id).await?,
        None => None,
    };
    let covers = spent.is_some_and(|a| {
        a.status == ApprovalStatus::Used
            && a.operation_id == Some(op.id)
            && a.device_serial == d.serial
            && a.owner_id == owner
            && a.slot.as_str() == slot_name
    });
    Ok((!covers).then(|| {
        format!(
            "that key was generated by {} without an approval of YubiKey {}'s current owner: \
             generate the key again to ask the owner or another admin",
            op.actor_name, d.serial
        )
    }))
}

// ------------------------------------------------------------- decisions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn status(self) -> ApprovalStatus {
        match self {
            Decision::Approve => ApprovalStatus::Approved,
            Decision::Reject => ApprovalStatus::Rejected,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Decision::Approve => "certificate_approval.approve",
            Decision::Reject => "certificate_approval.reject",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no certificate approval request {0}")]
    NotFound(Uuid),
    #[error(
        "you asked for this certificate yourself: the device's owner or another admin decides"
    )]
    OwnRequest,
    #[error("only the device's owner or an admin decides on this request")]
    NotDecider,
    #[error("approval request {id} is {status}; only a pending request can be decided")]
    NotPending { id: Uuid, status: &'static str },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Admins and auditors see every request; others those they made or that
/// are for a device they own.
fn sees_all(u: &CurrentUser) -> bool {
    matches!(u.role, Role::Admin | Role::Auditor)
}

/// The requests `u` may see, newest first.
pub async fn list(db: &PgPool, u: &CurrentUser) -> Result<Vec<ApprovalRow>, sqlx::Error> {
    let filter = (!sees_all(u)).then_some(u.user_id);
    approvals::list(db, filter, LIST_LIMIT).await
}

/// `u` may approve or reject `a` now: the owner, or an admin, never the
/// requester, while it is pending and unexpired.
pub fn may_decide(u: &CurrentUser, a: &ApprovalRow, now: OffsetDateTime) -> bool {
    a.status == ApprovalStatus::Pending
        && !a.is_expired(now)
        && u.user_id != a.requester_id
        && (u.user_id == a.owner_id || u.role == Role::Admin)
}

pub async fn decide(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
    decision: Decision,
) -> Result<ApprovalRow, DecideError> {
    let a = approvals::approval(db, id)
        .await?
        .filter(|a| sees_all(u) || u.user_id == a.owner_id || u.user_id == a.requester_id)
        .ok_or(DecideError::NotFound(id))?;
    let refused = if u.user_id == a.requester_id {
        Some(DecideError::OwnRequest)
    } else if u.user_id != a.owner_id && u.role != Role::Admin {
        Some(DecideError::NotDecider)
    } else {
        None
    };
    if let Some(e) = refused {
        let _ = audit::record_alone(
            db,
            AuditEvent::new("certificate_approval.refused")
                .actor(u)
                .from_client(meta)
                .target("certificate_approval", id)
                .details(json!({
                    "decision": decision.status().as_str(),
                    "device": a.device_serial,
                    "reason": e.to_string(),
                })),
        )
        .await;
        return Err(e);
    }
    let mut tx = db.begin().await?;
    if !approvals::decide(&mut tx, id, decision.status(), u.user_id, &u.username).await? {
        return Err(DecideError::NotPending {
            id,
            status: a.shown_status(OffsetDateTime::now_utc()),
        });
    }
    audit::record(
        &mut tx,
        AuditEvent::new(decision.action())
            .actor(u)
            .from_client(meta)
            .target("certificate_approval", id)
            .details(json!({
                "device": a.device_serial,
                "slot": a.slot,
                "requester": a.requester_name,
                "requester_id": a.requester_id,
                "owner_id": a.owner_id,
                "as": if u.user_id == a.owner_id { "owner" } else { "admin" },
            })),
    )
    .await?;
    tx.commit().await?;
    approvals::approval(db, id)
        .await?
        .ok_or(DecideError::NotFound(id))
}
