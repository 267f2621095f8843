//! Certificates: signing the CSR of an attested on-card key (DESIGN §7) and
//! revoking, one certificate or all of a device's.

use kleidia_protocol::agent::PivSlot;
use kleidia_protocol::ticket::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::access::{self, LookupError, OperationDenied};
use super::approvals;
use super::attestation::{self, Attested};
use super::context::FleetContext;
use super::csr::{verify_csr, VerifiedCsr};
use super::db::certificates::{self, NewCertificate};
use super::db::{operations, CertificateRow, CertificateStatus, DeviceRow, OperationRow};
use super::pki::{CertificateNames, Pki, PkiError};
use super::policy::{algorithm_name, KeyAlgorithm, PinPolicy, Policy, TouchPolicy};
use super::registry::{checked_reason, BadReason};
use super::settings::{self, PolicyError};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::{EmailAddress, OperationState, Serial};

/// Revoke every issued certificate of a device in OpenBao; returns their ids
/// for the database update.
pub async fn revoke_device_certificates<E>(
    db: &PgPool,
    pki: &Pki<'_>,
    serial: Serial,
) -> Result<Vec<Uuid>, E>
where
    E: From<PkiError> + From<sqlx::Error>,
{
    let mut ids = Vec::new();
    for c in certificates::certificates_of(db, serial).await? {
        if c.is_issued() {
            pki.revoke(&c.serial_number).await?;
            ids.push(c.id);
        }
    }
    Ok(ids)
}

/// The device has nobody whose names could go into a certificate.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("device {0} has no owner; assign it first")]
    NoOwner(Serial),
    #[error("the device's owner no longer exists")]
    OwnerGone,
    /// An address stored before emails were checked strictly: it could add
    /// names to the certificate, so nothing is signed until it is corrected.
    #[error("the owner's email address {0:?} cannot go into a certificate (one plain local@domain address only); correct it on the user's page")]
    UnsafeEmail(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The certificate names, all from Kleidia's record of the device's owner.
pub async fn owner_names(db: &PgPool, d: &DeviceRow) -> Result<CertificateNames, NamesError> {
    let owner = d.owner_id.ok_or(NamesError::NoOwner(d.serial))?;
    let o = crate::db::users::by_id(db, owner)
        .await?
        .ok_or(NamesError::OwnerGone)?;
    if let Some(e) = o.email.as_deref().filter(|e| !EmailAddress::is_valid(e)) {
        return Err(NamesError::UnsafeEmail(e.to_string()));
    }
    Ok(CertificateNames {
        common_name: o.display_name.clone(),
        upn: o.email.clone(),
        email: o.email,
    })
}

// -------------------------------------------------------------- sign-csr

/// `POST /api/yubikey/{serial}/sign-csr`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct SignCsrRequest {
    /// The `generate_csr` operation that produced this CSR.
    pub operation_id: Uuid,
    pub csr_pem: String,
    /// Slot attestation certificate, then the device (f9) certificate.
    pub attestation_chain_pem: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedCertificate {
    pub certificate_id: Uuid,
    pub certificate_pem: String,
    pub serial_number: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum SignCsrError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("no key generation {operation} on {serial}")]
    NoKeyGeneration { operation: Uuid, serial: Serial },
    #[error("that key generation was started by someone else")]
    StartedBySomeoneElse,
    #[error("that key generation failed")]
    GenerationFailed,
    /// Closed by the server: its ticket expired with no result
    /// (`fleet::operations::expiry`). Its key may be on the card, but no
    /// certificate is signed for an operation that is closed.
    #[error(
        "that key generation expired before its certificate was requested; generate the key again"
    )]
    GenerationExpired,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Denied(#[from] OperationDenied),
    #[error("a certificate was already issued for that key generation")]
    AlreadyIssued,
    /// The CSR, its key or its attestation is not acceptable (audited).
    #[error("{0}")]
    Refused(String),
    /// The key generation has no approval of the device's current owner (audited).
    #[error("{0}")]
    NotApproved(String),
    #[error(transparent)]
    Names(#[from] NamesError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the key generation asked for (its operation's details).
struct KeySpec {
    /// As recorded, for messages; `slot` is its parsed form.
    slot_name: String,
    slot: Option<PivSlot>,
    algorithm: Option<KeyAlgorithm>,
    pin_policy: Option<PinPolicy>,
    touch_policy: Option<TouchPolicy>,
}

impl KeySpec {
    fn of(op: &OperationRow) -> Self {
        let field = |k: &str| op.details.get(k).cloned().unwrap_or(Value::Null);
        let slot_name = field("slot").as_str().unwrap_or_default().to_string();
        Self {
            slot: slot_name.parse().ok(),
            slot_name,
            algorithm: serde_json::from_value(field("algorithm")).ok(),
            pin_policy: serde_json::from_value(field("pin_policy")).ok(),
            touch_policy: serde_json::from_value(field("touch_policy")).ok(),
        }
    }
}

pub async fn sign_csr(
    db: &PgPool,
    pki: &Pki<'_>,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    req: SignCsrRequest,
) -> Result<SignedCertificate, SignCsrError> {
    let d = access::load_visible(db, u, serial).await?;
    let op = key_generation(db, u, serial, req.operation_id).await?;
    let policy = settings::policy(db).await?;
    access::check_operation(u, &d, Operation::GenerateCsr, &policy)?;
    if certificates::issued_for_operation(db, op.id).await? {
        return Err(SignCsrError::AlreadyIssued);
    }
    let spec = KeySpec::of(&op);
    let refusal = |reason: String| {
        audit::record_alone(
            db,
            AuditEvent::new("certificate.refused")
                .actor(u)
                .from_client(meta)
                .target("device", serial)
                .details(json!({"operation_id": req.operation_id, "reason": reason})),
        )
    };
    if let Some(reason) = approvals::signing_refusal(db, &d, &op, &spec.slot_name, &policy).await? {
        let _ = refusal(reason.clone()).await;
        return Err(SignCsrError::NotApproved(reason));
    }
    let (csr, slot, attested) = match check_csr(ctx, &policy, &spec, serial, &req) {
        Ok(checked) => checked,
        Err(reason) => {
            let _ = refusal(reason.clone()).await;
            return Err(SignCsrError::Refused(reason));
        }
    };
    let names = owner_names(db, &d).await?;
    let issued = pki
        .sign(
            &csr,
            &names,
            u64::from(policy.certificate_lifetime_days) * 86_400,
        )
        .await?;
    let algorithm = algorithm_name(csr.algorithm);
    let cid = Uuid::new_v4();
    let mut tx = db.begin().await?;
    operations::finish(&mut *tx, op.id, OperationState::Succeeded, None).await?;
    certificates::insert_certificate(
        &mut tx,
        &NewCertificate {
            id: cid,
            serial,
            slot,
            serial_number: &issued.serial_number,
            subject: &issued.subject,
            key_algorithm: &algorithm,
            not_before: issued.not_before,
            not_after: issued.not_after,
            pem: &issued.pem,
            operation_id: op.id,
            issued_by: u.user_id,
        },
    )
    .await?;
    let approval_id = op.details.get("approval_id").cloned();
    audit::record(
        &mut tx,
        AuditEvent::new("certificate.issue")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "certificate_id": cid,
                "serial_number": issued.serial_number,
                "subject": issued.subject,
                "slot": slot,
                "algorithm": algorithm,
                "attested_firmware": attested.firmware.map(|(a, b, c)| format!("{a}.{b}.{c}")),
                "not_after": issued.not_after.unix_timestamp(),
                "approval_id": approval_id,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(SignedCertificate {
        certificate_id: cid,
        certificate_pem: issued.pem,
        serial_number: issued.serial_number,
        subject: issued.subject,
        not_after: issued.not_after,
    })
}

/// The caller's own (or, for an operator, anyone's) key generation on this
/// device that has not failed.
async fn key_generation(
    db: &PgPool,
    u: &CurrentUser,
    serial: Serial,
    id: Uuid,
) -> Result<OperationRow, SignCsrError> {
    let op = operations::operation(db, id)
        .await?
        .filter(|o| o.device_serial == serial && o.kind == Operation::GenerateCsr)
        .ok_or(SignCsrError::NoKeyGeneration {
            operation: id,
            serial,
        })?;
    if op.actor_id != Some(u.user_id) && !access::is_operator(u) {
        return Err(SignCsrError::StartedBySomeoneElse);
    }
    if op.state == OperationState::Failed {
        return Err(SignCsrError::GenerationFailed);
    }
    if op.state == OperationState::Expired {
        return Err(SignCsrError::GenerationExpired);
    }
    Ok(op)
}

/// The CSR is well-formed, its key is the one generated and the policy
/// allows in its slot, and the attestation proves it was generated on this
/// device with the requested PIN and touch policies. `Err` is the reason to
/// refuse.
fn check_csr(
    ctx: &FleetContext,
    policy: &Policy,
    spec: &KeySpec,
    serial: Serial,
    req: &SignCsrRequest,
) -> Result<(VerifiedCsr, PivSlot, Attested), String> {
    let csr = verify_csr(&req.csr_pem).map_err(|e| e.to_string())?;
    if spec.algorithm != Some(csr.algorithm) {
        return Err(format!(
            "the CSR's key is {}, but {} was generated",
            algorithm_name(csr.algorithm),
            spec.algorithm.map(algorithm_name).unwrap_or_default()
        ));
    }
    let slot = spec
        .slot
        .ok_or_else(|| format!("policy: slot {} may not hold a key", spec.slot_name))?;
    if !policy.slot(slot)?.algorithms.contains(&csr.algorithm) {
        return Err(format!(
            "policy: slot {slot} does not allow {}",
            algorithm_name(csr.algorithm)
        ));
    }
    if ctx.attestation_roots.0.is_empty() {
        return Err("no attestation roots are configured (attestation.roots_file); Kleidia signs only attested keys".into());
    }
    let attested = attestation::verify(
        &ctx.attestation_roots,
        &req.attestation_chain_pem,
        serial.get(),
        &csr.spki_der,
    )
    .map_err(|e| format!("attestation refused: {e}"))?;
    if attested.pin_policy.is_some() && attested.pin_policy != spec.pin_policy
        || attested.touch_policy.is_some() && attested.touch_policy != spec.touch_policy
    {
        return Err("the attested PIN/touch policy is not the one that was requested".into());
    }
    Ok((csr, slot, attested))
}

// ---------------------------------------------------------------- revoke

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct RevokeRequest {
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("only admins and helpdesk revoke certificates")]
    NotOperator,
    #[error(transparent)]
    BadReason(#[from] BadReason),
    #[error("no certificate {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn revoke(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
    r: RevokeRequest,
) -> Result<CertificateRow, RevokeError> {
    if !access::is_operator(u) {
        return Err(RevokeError::NotOperator);
    }
    let reason = checked_reason(&r.reason)?;
    let c = certificates::certificate(db, id)
        .await?
        .ok_or(RevokeError::NotFound(id))?;
    if c.status == CertificateStatus::Revoked {
        return Ok(c);
    }
    pki.revoke(&c.serial_number).await?;
    let mut tx = db.begin().await?;
    certificates::mark_certificate_revoked(&mut tx, id, reason).await?;
    audit::record(
        &mut tx,
        AuditEvent::new("certificate.revoke")
            .actor(u)
            .from_client(meta)
            .target("device", c.device_serial)
            .details(
                json!({"certificate_id": id, "serial_number": c.serial_number, "reason": reason}),
            ),
    )
    .await?;
    tx.commit().await?;
    certificates::certificate(db, id)
        .await?
        .ok_or(RevokeError::NotFound(id))
}
