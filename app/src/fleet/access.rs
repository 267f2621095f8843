//! Who may do what to a device: the object-level rules behind the routes'
//! role checks (DESIGN §4). Pure functions of the caller, the device and the
//! policy, plus [`load_visible`], which every per-device request starts with.

use kleidia_protocol::ticket::Operation;
use sqlx::PgPool;

use super::db::{devices, DeviceRow};
use super::policy::Policy;
use crate::audit::{self, AuditEvent};
use crate::auth::{CurrentUser, Role};
use crate::domain::{DeviceState, Serial};

/// Admins and helpdesk: they act on other people's devices.
pub fn is_operator(u: &CurrentUser) -> bool {
    matches!(u.role, Role::Admin | Role::Helpdesk)
}

pub fn is_owner(u: &CurrentUser, d: &DeviceRow) -> bool {
    d.owner_id == Some(u.user_id)
}

/// The caller may see this device.
pub fn may_read(u: &CurrentUser, d: &DeviceRow) -> bool {
    u.role != Role::User || is_owner(u, d)
}

/// Who may move a device where: admins anywhere the lifecycle allows; helpdesk
/// suspend, reactivate and lost; an owner may report their own key lost.
pub fn may_transition(u: &CurrentUser, d: &DeviceRow, to: DeviceState) -> bool {
    match u.role {
        Role::Admin => true,
        Role::Helpdesk => matches!(
            to,
            DeviceState::Suspended | DeviceState::Active | DeviceState::Lost
        ),
        Role::User => is_owner(u, d) && to == DeviceState::Lost,
        Role::Auditor => false,
    }
}

/// The device is not there for this caller.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no device with serial {0}")]
    NotFound(Serial),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The device, if the caller may see it. Someone else's device is
/// [`LookupError::NotFound`] to a plain user, exactly like a serial nobody
/// registered (issue 14 §6: answers do not reveal who has which serial).
/// The attempt is audited (`device.access_refused`) off the request's path,
/// so neither the answer nor its timing depends on the device existing.
pub async fn load_visible(
    db: &PgPool,
    u: &CurrentUser,
    serial: Serial,
) -> Result<DeviceRow, LookupError> {
    let d = devices::device(db, serial)
        .await?
        .ok_or(LookupError::NotFound(serial))?;
    if !may_read(u, &d) {
        let event = AuditEvent::new("device.access_refused")
            .actor(u)
            .target("device", serial)
            .details(serde_json::json!({"reason": "not the owner"}));
        let db = db.clone();
        tokio::spawn(async move {
            if let Err(e) = audit::record_alone(&db, event).await {
                tracing::error!(error = %e, "could not audit a refused device lookup");
            }
        });
        return Err(LookupError::NotFound(serial));
    }
    Ok(d)
}

/// Why the caller may not run an operation on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationDenied {
    #[error("auditors change nothing")]
    Auditor,
    #[error("only an admin may wipe a YubiKey")]
    WipeNeedsAdmin,
    #[error("policy: only helpdesk or an admin may unblock a PIN with the escrowed PUK")]
    UnblockNeedsOperator,
    #[error("device {0} is not yours")]
    NotYours(Serial),
    /// The device's state forbids it (a conflict, not a permission).
    #[error("device {0} is retired")]
    Retired(Serial),
    #[error("device {0} is {1}: no PIN unblock")]
    NoUnblock(Serial, DeviceState),
    #[error("device {0} is {1}; operations are allowed on registered and active devices")]
    NotUsable(Serial, DeviceState),
}

impl OperationDenied {
    /// The device's state is in the way, rather than the caller's rights.
    pub fn is_state_conflict(&self) -> bool {
        matches!(
            self,
            OperationDenied::Retired(_)
                | OperationDenied::NoUnblock(..)
                | OperationDenied::NotUsable(..)
        )
    }
}

/// Checks that depend on who asks, the device's owner and state, and policy.
pub fn check_operation(
    u: &CurrentUser,
    d: &DeviceRow,
    op: Operation,
    policy: &Policy,
) -> Result<(), OperationDenied> {
    let serial = d.serial;
    if u.role == Role::Auditor {
        return Err(OperationDenied::Auditor);
    }
    let owner = is_owner(u, d);
    let operator = is_operator(u);
    let state = d.state;
    match op {
        Operation::Reset => {
            // An owner may roll back their own unfinished enrollment; wiping
            // anything else is for admins.
            let rollback = owner && state == DeviceState::Registered;
            if u.role != Role::Admin && !rollback {
                return Err(OperationDenied::WipeNeedsAdmin);
            }
            if state == DeviceState::Retired {
                return Err(OperationDenied::Retired(serial));
            }
        }
        Operation::UnblockPin => {
            if !(operator || owner && policy.owners_may_unblock_pin) {
                return Err(OperationDenied::UnblockNeedsOperator);
            }
            if !state.is_usable() {
                return Err(OperationDenied::NoUnblock(serial, state));
            }
        }
        _ => {
            if !(operator || owner) {
                return Err(OperationDenied::NotYours(serial));
            }
            if !state.is_usable() {
                return Err(OperationDenied::NotUsable(serial, state));
            }
        }
    }
    Ok(())
}
