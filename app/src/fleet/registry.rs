//! The device registry: registering a YubiKey to its owner, moving it
//! through the lifecycle (DESIGN §3) and assigning it to someone else.

use std::future::Future;

use serde::Deserialize;
use serde_json::json;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::access::{self, LookupError};
use super::certificates::revoke_device_certificates;
use super::claim::{self, ClaimError, ClaimProof};
use super::context::FleetContext;
use super::db::devices::{self, InsertDeviceError, NewDevice};
use super::db::{certificates, DeviceRow};
use super::pki::{Pki, PkiError};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser, Role};
use crate::db::users::{self, UserRow};
use crate::domain::{DeviceState, Serial};
use crate::error::AppError;

/// A reason is required and short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("give a reason (at most 500 characters)")]
pub struct BadReason;

pub fn checked_reason(reason: &str) -> Result<&str, BadReason> {
    let r = reason.trim();
    if r.is_empty() || r.len() > 500 {
        return Err(BadReason);
    }
    Ok(r)
}

/// The person a device is being given to cannot have it.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("no user with id {0}")]
    NoSuchUser(Uuid),
    #[error("{0} is disabled")]
    Disabled(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The user `id`, if they exist and are enabled.
async fn enabled_user(db: impl PgExecutor<'_>, id: Uuid) -> Result<UserRow, OwnerError> {
    let u = users::by_id(db, id)
        .await?
        .ok_or(OwnerError::NoSuchUser(id))?;
    if u.disabled {
        return Err(OwnerError::Disabled(u.username));
    }
    Ok(u)
}

// ------------------------------------------------------------- register

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct RegisterDevice {
    /// Required from admins and helpdesk. A plain user's device gets the
    /// serial its card's attestation names; one given here must agree.
    #[serde(default)]
    pub serial: Option<Serial>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub form_factor: Option<String>,
    /// Defaults to the caller. Only admins and helpdesk may name someone else.
    #[serde(default)]
    pub owner_id: Option<Uuid>,
    /// A plain user's proof that they hold the card (see [`claim`]).
    #[serde(default)]
    pub challenge_id: Option<Uuid>,
    #[serde(default)]
    pub proof: Option<kleidia_protocol::agent::PresenceProof>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("you may only register a YubiKey to yourself")]
    NotYourself,
    #[error("auditors change nothing")]
    Auditor,
    #[error("give the serial of the YubiKey to register")]
    NoSerial,
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The license does not allow another device (its message says why).
    #[error(transparent)]
    License(AppError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error(transparent)]
    Insert(#[from] InsertDeviceError),
    #[error("device vanished after insert")]
    Vanished,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Register a YubiKey. `license_check` runs once the caller's rights are
/// established, before anything is written: the license decides whether
/// one more device may enter the fleet.
///
/// Admins and helpdesk register any serial to anyone (pre-registration, an
/// audited act of theirs). A plain user registers only a card they show:
/// the serial is the one its attestation names ([`claim::verify`]), and its
/// presence key is recorded with the device. Refusals are audited
/// (`device.register_refused`).
pub async fn register(
    db: &PgPool,
    ctx: &FleetContext,
    license_check: impl Future<Output = Result<(), AppError>>,
    u: &CurrentUser,
    meta: &ClientMeta,
    req: RegisterDevice,
) -> Result<DeviceRow, RegisterError> {
    let claimed = req.serial;
    let r = register_checked(db, ctx, license_check, u, meta, req).await;
    if let Err(e) = &r {
        let refusal = match e {
            RegisterError::NotYourself | RegisterError::Auditor => true,
            RegisterError::Claim(c) => c.is_refusal(),
            _ => false,
        };
        if refusal {
            let event = AuditEvent::new("device.register_refused")
                .actor(u)
                .from_client(meta)
                .details(json!({"serial": claimed, "reason": e.to_string()}));
            if let Err(a) = audit::record_alone(db, event).await {
                tracing::error!(error = %a, "could not audit a refused registration");
            }
        }
    }
    r
}

async fn register_checked(
    db: &PgPool,
    ctx: &FleetContext,
    license_check: impl Future<Output = Result<(), AppError>>,
    u: &CurrentUser,
    meta: &ClientMeta,
    req: RegisterDevice,
) -> Result<DeviceRow, RegisterError> {
    let owner = req.owner_id.unwrap_or(u.user_id);
    match u.role {
        Role::Admin | Role::Helpdesk => {}
        Role::User if owner == u.user_id => {}
        Role::User => return Err(RegisterError::NotYourself),
        Role::Auditor => return Err(RegisterError::Auditor),
    }
    // Anyone who shows the card has its serial and presence key taken from
    // it; only admins and helpdesk may register without it.
    let shown = match (req.challenge_id, req.proof.clone()) {
        (Some(challenge_id), Some(proof)) => {
            let p = ClaimProof {
                challenge_id,
                proof,
            };
            Some(claim::verify(db, ctx, u, &p, req.serial).await?)
        }
        _ if access::is_operator(u) => None,
        _ => return Err(ClaimError::NeedsCard.into()),
    };
    let serial = match &shown {
        Some(s) => s.serial,
        None => req.serial.ok_or(RegisterError::NoSerial)?,
    };
    let firmware = req
        .firmware
        .clone()
        .or_else(|| shown.as_ref().and_then(|s| s.firmware.clone()));
    license_check.await.map_err(RegisterError::License)?;
    let mut tx = db.begin().await?;
    let owner_row = enabled_user(&mut *tx, owner).await?;
    let model = req
        .model
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("YubiKey 5");
    devices::insert_device(
        &mut tx,
        &NewDevice {
            serial,
            model,
            firmware: firmware.as_deref(),
            form_factor: req.form_factor.as_deref(),
            owner_id: Some(owner),
        },
    )
    .await?;
    if let Some(s) = &shown {
        sqlx::query(
            "UPDATE devices SET presence_public_key = $2, presence_established_at = now() \
             WHERE serial = $1",
        )
        .bind(serial.as_i64())
        .bind(&s.presence_key)
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        &mut tx,
        AuditEvent::new("device.register")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "owner": owner_row.username,
                "model": model,
                "firmware": firmware,
                // Shown: the card's attestation named this serial. Otherwise
                // an admin or helpdesk pre-registered it.
                "attested": shown.is_some(),
            })),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%serial, owner = %owner_row.username, "device registered");
    devices::device(db, serial)
        .await?
        .ok_or(RegisterError::Vanished)
}

// ----------------------------------------------------------- transition

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Transition {
    /// A [`DeviceState`] name (checked here, so an unknown one gets its own message).
    #[schema(value_type = crate::domain::DeviceState)]
    pub state: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("unknown state {0:?}")]
    UnknownState(String),
    #[error(transparent)]
    BadReason(#[from] BadReason),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("your role may not mark a device {0}")]
    RoleMayNot(DeviceState),
    #[error("a registered device becomes active by enrollment")]
    ByEnrollment,
    #[error("a {from} device cannot become {to}")]
    NotAllowed { from: DeviceState, to: DeviceState },
    #[error("the device changed meanwhile; reload and try again")]
    ChangedMeanwhile,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The states the caller may move this device to by hand (for the page's form).
pub fn transitions_for(u: &CurrentUser, d: &DeviceRow) -> Vec<DeviceState> {
    let from = d.state;
    DeviceState::ALL
        .into_iter()
        .filter(|to| {
            from.can_transition(*to)
                && !(from == DeviceState::Registered && *to == DeviceState::Active)
                && access::may_transition(u, d, *to)
        })
        .collect()
}

pub async fn transition(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    t: Transition,
) -> Result<DeviceRow, TransitionError> {
    transition_in_batch(db, pki, u, meta, serial, t, None).await
}

/// [`transition`], as a member of a bulk action (`fleet::bulk`): the
/// device's audit row names the batch.
pub async fn transition_in_batch(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    t: Transition,
    batch: Option<Uuid>,
) -> Result<DeviceRow, TransitionError> {
    let to: DeviceState = t
        .state
        .parse()
        .map_err(|_| TransitionError::UnknownState(t.state.clone()))?;
    let reason = checked_reason(&t.reason)?;
    let d = access::load_visible(db, u, serial).await?;
    if !access::may_transition(u, &d, to) {
        return Err(TransitionError::RoleMayNot(to));
    }
    let from = d.state;
    if to == DeviceState::Active && from == DeviceState::Registered {
        return Err(TransitionError::ByEnrollment);
    }
    if !from.can_transition(to) {
        return Err(TransitionError::NotAllowed { from, to });
    }
    // Certificates are revoked in OpenBao first: a device marked lost must never
    // keep a valid certificate because the database commit came first.
    let mut revoked = Vec::new();
    if to.revokes_certificates() {
        revoked = revoke_device_certificates::<TransitionError>(db, pki, serial).await?;
    }
    let mut tx = db.begin().await?;
    let locked = devices::device_for_update(&mut tx, serial)
        .await?
        .ok_or(LookupError::NotFound(serial))?;
    if locked.state != from {
        return Err(TransitionError::ChangedMeanwhile);
    }
    devices::set_state(&mut tx, serial, to).await?;
    for id in &revoked {
        certificates::mark_certificate_revoked(&mut tx, *id, &format!("device {to}")).await?;
    }
    audit::record(
        &mut tx,
        AuditEvent::new(&format!("device.{to}"))
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details({
                let mut d = json!({"from": from, "to": to, "reason": reason, "certificates_revoked": revoked.len()});
                if let Some(b) = batch {
                    d["batch"] = json!(b);
                }
                d
            }),
    )
    .await?;
    tx.commit().await?;
    Ok(devices::device(db, serial).await?.unwrap_or(locked))
}

// --------------------------------------------------------------- assign

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct AssignOwner {
    pub owner_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("only admins and helpdesk assign devices")]
    NotOperator,
    #[error("no device with serial {0}")]
    NotFound(Serial),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn assign_owner(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    a: AssignOwner,
) -> Result<DeviceRow, AssignError> {
    if !access::is_operator(u) {
        return Err(AssignError::NotOperator);
    }
    let mut tx = db.begin().await?;
    let d = devices::device_for_update(&mut tx, serial)
        .await?
        .ok_or(AssignError::NotFound(serial))?;
    let name = match a.owner_id {
        Some(id) => Some(enabled_user(&mut *tx, id).await?.username),
        None => None,
    };
    devices::set_owner(&mut tx, serial, a.owner_id).await?;
    audit::record(
        &mut tx,
        AuditEvent::new(if a.owner_id.is_some() {
            "device.assign"
        } else {
            "device.unassign"
        })
        .actor(u)
        .from_client(meta)
        .target("device", serial)
        .details(json!({"from": d.owner_username, "to": name})),
    )
    .await?;
    tx.commit().await?;
    devices::device(db, serial)
        .await?
        .ok_or(AssignError::NotFound(serial))
}
