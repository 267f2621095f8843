//! Authorising YubiKey operations (DESIGN §6, §8).
//!
//! A secret-changing operation follows one pattern: the operation row is
//! committed first (pending), the new secret is written to OpenBao as a new KV
//! version with check-and-set, then the row records that version and the
//! ticket is signed. The device's confirmed version (`devices.secrets_version`)
//! moves only when the agent's success is reported. Whatever fails in between,
//! both the confirmed and the new version stay in OpenBao.

use std::sync::Arc;

use kleidia_protocol::agent::{
    AttestParams, GenerateCsrParams, ImportCertificateParams, OperationParams, ResetParams,
    RotateManagementKeyParams, SetPinParams, SetPukParams, SignedRequest, UnblockPinParams,
};
use kleidia_protocol::ticket::{
    params_hash, parse_agent_public_key, EncryptedSecret, Operation, TicketClaims,
    TicketSigningKey, TICKET_MAX_LIFETIME_SECS,
};
use rand::rngs::OsRng;
use rsa::RsaPublicKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::attestation::{self, AttestationRoots};
use super::csr::verify_csr;
use super::db::{self, DeviceRow, NewOperation, OperationRow};
use super::device::{DeviceState, Serial};
use super::escrow::{Escrow, EscrowError};
use super::pki::{CertificateNames, Pki, PkiError};
use super::policy::{
    algorithm_name, slot_name, KeyAlgorithm, PinPolicy, PivSlot, Policy, TouchPolicy,
};
use super::secrets::{self, acceptable_pin, DeviceSecrets};
use super::settings;
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser, Role};
use crate::error::AppError;
use crate::state::AppState;

/// Lifetime of a ticket; the agent refuses anything longer than 120 s.
const TICKET_LIFETIME_SECS: i64 = 90;

/// Fleet-wide keys and trust anchors, loaded at start.
pub struct FleetContext {
    pub ticket_key: TicketSigningKey,
    pub attestation_roots: AttestationRoots,
    pub pki_cache: super::pki_cache::PkiCache,
}

impl From<EscrowError> for AppError {
    fn from(e: EscrowError) -> Self {
        match e {
            EscrowError::Bao(b) => b.into(),
            EscrowError::Conflict(s) => AppError::Conflict(format!(
                "the escrowed secrets of {s} changed at the same time; nothing was applied, try again"
            )),
            e @ EscrowError::Missing { .. } => AppError::Internal(e.into()),
        }
    }
}

impl From<PkiError> for AppError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Bao(b) => b.into(),
            e => AppError::Internal(e.into()),
        }
    }
}

fn is_operator(u: &CurrentUser) -> bool {
    matches!(u.role, Role::Admin | Role::Helpdesk)
}

fn is_owner(u: &CurrentUser, d: &DeviceRow) -> bool {
    d.owner_id == Some(u.user_id)
}

/// The caller may see this device.
pub fn may_read(u: &CurrentUser, d: &DeviceRow) -> bool {
    u.role != Role::User || is_owner(u, d)
}

pub async fn load_visible(
    state: &AppState,
    u: &CurrentUser,
    serial: Serial,
) -> Result<DeviceRow, AppError> {
    let d = db::device(&state.db, serial)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no device with serial {serial}")))?;
    if !may_read(u, &d) {
        return Err(AppError::Forbidden(format!("device {serial} is not yours")));
    }
    Ok(d)
}

// ---------------------------------------------------------------- devices

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    pub serial: Serial,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub form_factor: Option<String>,
    /// Defaults to the caller. Only admins and helpdesk may name someone else.
    #[serde(default)]
    pub owner_id: Option<Uuid>,
}

pub async fn register_device(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    req: RegisterDevice,
) -> Result<DeviceRow, AppError> {
    let owner = req.owner_id.unwrap_or(u.user_id);
    match u.role {
        Role::Admin | Role::Helpdesk => {}
        Role::User if owner == u.user_id => {}
        Role::User => {
            return Err(AppError::Forbidden(
                "you may only register a YubiKey to yourself".into(),
            ))
        }
        Role::Auditor => return Err(AppError::Forbidden("auditors change nothing".into())),
    }
    crate::licensing::check_new_enrollment(state).await?;
    let mut tx = state.db.begin().await?;
    let owner_row = crate::db::users::by_id(&mut *tx, owner)
        .await?
        .ok_or_else(|| AppError::Unprocessable(format!("no user with id {owner}")))?;
    if owner_row.disabled {
        return Err(AppError::Unprocessable(format!(
            "{} is disabled",
            owner_row.username
        )));
    }
    let model = req
        .model
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("YubiKey 5");
    db::insert_device(
        &mut tx,
        &db::NewDevice {
            serial: req.serial,
            model,
            firmware: req.firmware.as_deref(),
            form_factor: req.form_factor.as_deref(),
            owner_id: Some(owner),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("device.register")
            .actor(u)
            .from_client(meta)
            .target("device", req.serial)
            .details(
                json!({"owner": owner_row.username, "model": model, "firmware": req.firmware}),
            ),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(serial = %req.serial, owner = %owner_row.username, "device registered");
    db::device(&state.db, req.serial)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("device vanished after insert")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub state: String,
    pub reason: String,
}

/// Who may move a device where: admins anywhere the lifecycle allows; helpdesk
/// suspend, reactivate and lost; an owner may report their own key lost.
fn may_transition(u: &CurrentUser, d: &DeviceRow, to: DeviceState) -> bool {
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

pub async fn transition(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    t: Transition,
) -> Result<DeviceRow, AppError> {
    let to = DeviceState::parse(&t.state)
        .ok_or_else(|| AppError::BadRequest(format!("unknown state {:?}", t.state)))?;
    let reason = t.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(AppError::Unprocessable(
            "give a reason (at most 500 characters)".into(),
        ));
    }
    let d = load_visible(state, u, serial).await?;
    if !may_transition(u, &d, to) {
        return Err(AppError::Forbidden(format!(
            "your role may not mark a device {to}"
        )));
    }
    let from = d.state();
    if to == DeviceState::Active && from == DeviceState::Registered {
        return Err(AppError::Conflict(
            "a registered device becomes active by enrollment".into(),
        ));
    }
    if !from.can_transition(to) {
        return Err(AppError::Conflict(format!(
            "a {from} device cannot become {to}"
        )));
    }
    // Certificates are revoked in OpenBao first: a device marked lost must never
    // keep a valid certificate because the database commit came first.
    let mut revoked = Vec::new();
    if to.revokes_certificates() {
        revoked = revoke_device_certificates(state, serial).await?;
    }
    let mut tx = state.db.begin().await?;
    let locked = db::device_for_update(&mut tx, serial)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no device with serial {serial}")))?;
    if locked.state() != from {
        return Err(AppError::Conflict(
            "the device changed meanwhile; reload and try again".into(),
        ));
    }
    db::set_state(&mut tx, serial, to).await?;
    for id in &revoked {
        db::mark_certificate_revoked(&mut tx, *id, &format!("device {to}")).await?;
    }
    audit::record(
        &mut tx,
        AuditEvent::new(&format!("device.{to}"))
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({"from": from.as_str(), "to": to.as_str(), "reason": reason, "certificates_revoked": revoked.len()})),
    )
    .await?;
    tx.commit().await?;
    if !revoked.is_empty() {
        state.fleet.pki_cache.invalidate();
    }
    Ok(db::device(&state.db, serial).await?.unwrap_or(locked))
}

/// Revoke every issued certificate of a device in OpenBao; returns their ids
/// for the database update.
async fn revoke_device_certificates(
    state: &AppState,
    serial: Serial,
) -> Result<Vec<Uuid>, AppError> {
    let pki = Pki {
        bao: &state.bao,
        mount: &state.config.openbao.pki_mount,
    };
    let mut ids = Vec::new();
    for c in db::certificates_of(&state.db, serial).await? {
        if c.status == "issued" {
            pki.revoke(&c.serial_number).await?;
            ids.push(c.id);
        }
    }
    Ok(ids)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignOwner {
    pub owner_id: Option<Uuid>,
}

pub async fn assign_owner(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    a: AssignOwner,
) -> Result<DeviceRow, AppError> {
    if !is_operator(u) {
        return Err(AppError::Forbidden(
            "only admins and helpdesk assign devices".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let d = db::device_for_update(&mut tx, serial)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no device with serial {serial}")))?;
    let name = match a.owner_id {
        Some(id) => {
            let o = crate::db::users::by_id(&mut *tx, id)
                .await?
                .ok_or_else(|| AppError::Unprocessable(format!("no user with id {id}")))?;
            if o.disabled {
                return Err(AppError::Unprocessable(format!(
                    "{} is disabled",
                    o.username
                )));
            }
            Some(o.username)
        }
        None => None,
    };
    db::set_owner(&mut tx, serial, a.owner_id).await?;
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
    db::device(&state.db, serial)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no device with serial {serial}")))
}

// ------------------------------------------------------------- operations

/// `POST /api/yubikey/{serial}/operations`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRequest {
    pub operation: Operation,
    /// A PIN the person chose (set_pin, unblock_pin); generated by policy when absent.
    #[serde(default)]
    pub new_pin: Option<String>,
    #[serde(default)]
    pub slot: Option<PivSlot>,
    #[serde(default)]
    pub algorithm: Option<KeyAlgorithm>,
    #[serde(default)]
    pub pin_policy: Option<PinPolicy>,
    #[serde(default)]
    pub touch_policy: Option<TouchPolicy>,
    /// The certificate to import (import_certificate).
    #[serde(default)]
    pub certificate_id: Option<Uuid>,
}

/// What the page posts to the agent, and where.
#[derive(Debug, Serialize)]
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

/// Checks that depend on who asks, the device's owner and state, and policy.
fn authorize_kind(
    u: &CurrentUser,
    d: &DeviceRow,
    op: Operation,
    policy: &Policy,
) -> Result<(), AppError> {
    let serial = d.serial;
    if u.role == Role::Auditor {
        return Err(AppError::Forbidden("auditors change nothing".into()));
    }
    let owner = is_owner(u, d);
    let operator = is_operator(u);
    let state = d.state();
    match op {
        Operation::Reset => {
            // An owner may roll back their own unfinished enrollment; wiping
            // anything else is for admins.
            let rollback = owner && state == DeviceState::Registered;
            if u.role != Role::Admin && !rollback {
                return Err(AppError::Forbidden(
                    "only an admin may wipe a YubiKey".into(),
                ));
            }
            if state == DeviceState::Retired {
                return Err(AppError::Conflict(format!("device {serial} is retired")));
            }
        }
        Operation::UnblockPin => {
            if !(operator || owner && policy.owners_may_unblock_pin) {
                return Err(AppError::Forbidden(
                    "policy: only helpdesk or an admin may unblock a PIN with the escrowed PUK"
                        .into(),
                ));
            }
            if !state.is_usable() {
                return Err(AppError::Conflict(format!(
                    "device {serial} is {state}: no PIN unblock"
                )));
            }
        }
        _ => {
            if !(operator || owner) {
                return Err(AppError::Forbidden(format!("device {serial} is not yours")));
            }
            if !state.is_usable() {
                return Err(AppError::Conflict(format!(
                    "device {serial} is {state}; operations are allowed on registered and active devices"
                )));
            }
        }
    }
    Ok(())
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
) -> Result<Value, AppError> {
    let serial = serial.get();
    match op {
        Operation::SetPin => to_value(SetPinParams {
            serial,
            current_pin: enc(key, &current.pin)?,
            new_pin: enc(key, &next.pin)?,
        }),
        Operation::SetPuk => to_value(SetPukParams {
            serial,
            current_puk: enc(key, &current.puk)?,
            new_puk: enc(key, &next.puk)?,
        }),
        Operation::UnblockPin => to_value(UnblockPinParams {
            serial,
            puk: enc(key, &current.puk)?,
            new_pin: enc(key, &next.pin)?,
        }),
        Operation::RotateManagementKey => to_value(RotateManagementKeyParams {
            serial,
            current_management_key: enc(key, &current.management_key)?,
            new_management_key: enc(key, &next.management_key)?,
            algorithm: next.management_key_algorithm,
            require_touch: false,
        }),
        _ => Err(missing_next()),
    }
}

/// The agent key registered on the caller's session.
async fn session_agent_key(
    state: &AppState,
    u: &CurrentUser,
) -> Result<(RsaPublicKey, String), AppError> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT agent_pubkey FROM user_sessions WHERE id = $1")
            .bind(u.session_id)
            .fetch_optional(&state.db)
            .await?;
    let pem = row.and_then(|r| r.0).ok_or_else(|| {
        AppError::Conflict("no workstation agent is registered with this session".into())
    })?;
    parse_agent_public_key(&pem)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored agent key: {e}")))
}

/// The values the device holds now: the confirmed escrow version, or the factory defaults.
async fn confirmed_secrets(state: &AppState, d: &DeviceRow) -> Result<DeviceSecrets, AppError> {
    match d.secrets_version {
        None => Ok(DeviceSecrets::factory(d.firmware_5_7_or_later())),
        Some(v) => Ok(escrow(state)
            .read(d.serial(), u64::try_from(v).unwrap_or(0))
            .await?),
    }
}

fn escrow(state: &AppState) -> Escrow<'_> {
    Escrow {
        bao: &state.bao,
        mount: &state.config.openbao.kv_mount,
    }
}

fn enc(key: &RsaPublicKey, s: &str) -> Result<EncryptedSecret, AppError> {
    EncryptedSecret::encrypt(key, s.as_bytes(), &mut OsRng)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("RSA-OAEP: {e:?}")))
}

pub async fn authorize(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    req: OperationRequest,
) -> Result<AuthorizedOperation, AppError> {
    let d = load_visible(state, u, serial).await?;
    let policy = settings::policy(&state.db).await?;
    authorize_kind(u, &d, req.operation, &policy)?;
    if let Some(p) = &req.new_pin {
        if !matches!(req.operation, Operation::SetPin | Operation::UnblockPin) {
            return Err(AppError::BadRequest(
                "new_pin only goes with set_pin or unblock_pin".into(),
            ));
        }
        if !acceptable_pin(p, policy.pin_min_length, policy.pin_max_length) {
            return Err(AppError::Unprocessable(format!(
                "policy: a PIN has {}–{} digits, no repeated or sequential digits, and is not a well-known PIN",
                policy.pin_min_length, policy.pin_max_length
            )));
        }
    }
    let (agent_key, fingerprint) = session_agent_key(state, u).await?;
    if let Some(p) = db::pending_secret_change(&state.db, serial).await? {
        if secret_changing(req.operation) || req.operation == Operation::Reset {
            return Err(AppError::Conflict(format!(
                "operation {} ({}) on {serial} has not been confirmed yet; resume or resolve it first",
                p.id, p.kind
            )));
        }
    }
    let current = confirmed_secrets(state, &d).await?;
    let id = Uuid::new_v4();
    let mut details = json!({});

    // Validate the shape of the non-secret parameters before anything is written.
    let key_spec = if req.operation == Operation::GenerateCsr {
        let slot = req.slot.unwrap_or(PivSlot::Authentication);
        let alg = req.algorithm.unwrap_or(KeyAlgorithm::EccP256);
        let pin = req.pin_policy.unwrap_or(PinPolicy::Once);
        let touch = req.touch_policy.unwrap_or(TouchPolicy::Never);
        policy
            .check_key(&slot_name(slot), alg, pin, touch)
            .map_err(AppError::Unprocessable)?;
        details = json!({"slot": slot_name(slot), "algorithm": algorithm_name(alg), "pin_policy": pin, "touch_policy": touch});
        Some((slot, alg, pin, touch))
    } else {
        None
    };
    let import = if req.operation == Operation::ImportCertificate {
        let cid = req.certificate_id.ok_or_else(|| {
            AppError::BadRequest("certificate_id is required for import_certificate".into())
        })?;
        let c = db::certificate(&state.db, cid)
            .await?
            .filter(|c| c.device_serial == serial.as_i64())
            .ok_or_else(|| {
                AppError::NotFound(format!("no certificate {cid} for device {serial}"))
            })?;
        if c.status != "issued" {
            return Err(AppError::Conflict("that certificate is revoked".into()));
        }
        let slot = match c.slot.as_str() {
            "9a" => PivSlot::Authentication,
            "9c" => PivSlot::Signature,
            "9d" => PivSlot::KeyManagement,
            _ => PivSlot::CardAuthentication,
        };
        details =
            json!({"slot": c.slot, "certificate_id": cid, "certificate_serial": c.serial_number});
        Some((slot, c.pem))
    } else {
        None
    };
    if req.operation == Operation::Attest {
        let slot = req
            .slot
            .ok_or_else(|| AppError::BadRequest("slot is required for attest".into()))?;
        details = json!({"slot": slot_name(slot)});
    }

    // 1. The operation exists (pending) before anything else is written.
    let mut tx = state.db.begin().await?;
    db::insert_operation(
        &mut tx,
        &NewOperation {
            id,
            serial,
            kind: req.operation.as_str(),
            actor_id: u.user_id,
            actor_name: &u.username,
            session_id: u.session_id,
            agent_key_fingerprint: &fingerprint,
            secrets_version_prev: d.secrets_version,
            details: details.clone(),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("operation.authorize")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({"operation": req.operation.as_str(), "operation_id": id, "agent_key": fingerprint, "details": details})),
    )
    .await?;
    tx.commit().await?;

    // 2. A new secret is durable in OpenBao before any ticket exists.
    let mut new_version = None;
    let mut next = None;
    if secret_changing(req.operation) {
        let mut n = current.clone();
        match req.operation {
            Operation::SetPin | Operation::UnblockPin => {
                n.pin = req.new_pin.clone().unwrap_or_else(|| {
                    secrets::generate_pin(&mut OsRng, policy.pin_min_length, policy.pin_max_length)
                });
            }
            Operation::SetPuk => {
                n.puk = secrets::generate_pin(&mut OsRng, policy.puk_length, policy.puk_length)
            }
            _ => {
                n.management_key_algorithm = policy.management_key_algorithm;
                n.management_key =
                    secrets::generate_management_key(&mut OsRng, policy.management_key_algorithm);
            }
        }
        let esc = escrow(state);
        let written = async {
            let (latest, _) = esc.versions(serial).await?;
            esc.write_next(serial, latest, &n, id).await
        }
        .await;
        match written {
            Ok(v) => new_version = Some(v),
            Err(e) => {
                fail_operation(state, id, "escrow_failed").await;
                return Err(e.into());
            }
        }
        next = Some(n);
    }

    // 3. The agent's parameters, encrypted to this session's agent key.
    let params: Value = match req.operation {
        op @ (Operation::SetPin
        | Operation::SetPuk
        | Operation::UnblockPin
        | Operation::RotateManagementKey) => {
            let n = next.as_ref().ok_or_else(missing_next)?;
            secret_change_params(op, serial, &agent_key, &current, n)?
        }
        Operation::GenerateCsr => {
            let (slot, algorithm, pin_policy, touch_policy) = key_spec.ok_or_else(missing_next)?;
            let owner = owner_names(state, &d).await?;
            to_value(GenerateCsrParams {
                serial: serial.get(),
                slot,
                algorithm,
                pin_policy,
                touch_policy,
                subject: format!("CN={}", rfc4514_escape(&owner.common_name)),
                management_key: enc(&agent_key, &current.management_key)?,
                pin: if pin_policy == PinPolicy::Never {
                    None
                } else {
                    Some(enc(&agent_key, &current.pin)?)
                },
            })?
        }
        Operation::ImportCertificate => {
            let (slot, pem) = import.ok_or_else(missing_next)?;
            to_value(ImportCertificateParams {
                serial: serial.get(),
                slot,
                certificate_pem: pem,
                management_key: enc(&agent_key, &current.management_key)?,
            })?
        }
        Operation::Attest => to_value(AttestParams {
            serial: serial.get(),
            slot: req.slot.unwrap_or(PivSlot::Authentication),
        })?,
        Operation::Reset => to_value(ResetParams {
            serial: serial.get(),
        })?,
    };
    let hash = params_hash(&params).map_err(|e| AppError::Internal(e.into()))?;
    let now = OffsetDateTime::now_utc();
    let expires = now + time::Duration::seconds(TICKET_LIFETIME_SECS.min(TICKET_MAX_LIFETIME_SECS));
    let claims = TicketClaims {
        id,
        operation: req.operation,
        serial: serial.get(),
        agent_key_fingerprint: fingerprint.clone(),
        params_hash: hash.clone(),
        issued_at: now.unix_timestamp(),
        expires_at: expires.unix_timestamp(),
    };
    let ticket = state.fleet.ticket_key.sign(&claims);

    // 4. Record the new version and the ticket; only now does the page get it.
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE operations SET secrets_version_new = $2, params_hash = $3, ticket_expires_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(new_version.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    .bind(&hash)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    let secrets_sent: Vec<&str> = params
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.is_string() && looks_encrypted(v))
                .map(|(k, _)| k.as_str())
                .collect()
        })
        .unwrap_or_default();
    audit::record(
        &mut tx,
        AuditEvent::new("ticket.issue")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "operation": req.operation.as_str(),
                "operation_id": id,
                "secrets_version_new": new_version,
                "secrets_encrypted_to_agent": secrets_sent,
                "agent_key": fingerprint,
                "expires_at": expires.unix_timestamp(),
            })),
    )
    .await?;
    tx.commit().await?;

    Ok(AuthorizedOperation {
        operation_id: id,
        operation: req.operation,
        serial,
        agent_path: req.operation.path(),
        request: json!(SignedRequest { ticket, params }),
        expires_at: expires,
    })
}

fn looks_encrypted(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() > 300)
}

fn missing_next() -> AppError {
    AppError::Internal(anyhow::anyhow!("operation parameters were not prepared"))
}

fn to_value<P: OperationParams>(p: P) -> Result<Value, AppError> {
    serde_json::to_value(&p).map_err(|e| AppError::Internal(e.into()))
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

async fn fail_operation(state: &AppState, id: Uuid, code: &str) {
    let r = sqlx::query("UPDATE operations SET state = 'failed', error = $2, finished_at = now() WHERE id = $1 AND state = 'pending'")
        .bind(id)
        .bind(code)
        .execute(&state.db)
        .await;
    if let Err(e) = r {
        tracing::error!(operation = %id, error = %e, "could not mark the operation failed; it stays pending");
    }
}

/// The certificate names, all from Kleidia's record of the device's owner.
async fn owner_names(state: &AppState, d: &DeviceRow) -> Result<CertificateNames, AppError> {
    let owner = d.owner_id.ok_or_else(|| {
        AppError::Conflict(format!("device {} has no owner; assign it first", d.serial))
    })?;
    let o = crate::db::users::by_id(&state.db, owner)
        .await?
        .ok_or_else(|| AppError::Conflict("the device's owner no longer exists".into()))?;
    Ok(CertificateNames {
        common_name: o.display_name.clone(),
        upn: o.email.clone(),
        email: o.email,
    })
}

/// `GET /api/yubikey/{serial}/secrets?operation_id=…`: the agent request of a
/// pending operation again (after a reload), secrets freshly encrypted to the
/// session's current agent key, under a new ticket.
pub async fn reissue(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    op_id: Uuid,
) -> Result<AuthorizedOperation, AppError> {
    let d = load_visible(state, u, serial).await?;
    let op = db::operation(&state.db, op_id)
        .await?
        .filter(|o| o.device_serial == serial.as_i64())
        .ok_or_else(|| AppError::NotFound(format!("no operation {op_id} on {serial}")))?;
    if op.actor_id != Some(u.user_id) && !is_operator(u) {
        return Err(AppError::Forbidden(
            "that operation was started by someone else".into(),
        ));
    }
    if op.state != "pending" {
        return Err(AppError::Conflict(format!(
            "operation {op_id} is already {}",
            op.state
        )));
    }
    let operation: Operation =
        serde_json::from_value(json!(op.kind)).map_err(|e| AppError::Internal(e.into()))?;
    let policy = settings::policy(&state.db).await?;
    authorize_kind(u, &d, operation, &policy)?;
    let (agent_key, fingerprint) = session_agent_key(state, u).await?;
    let current = confirmed_secrets(state, &d).await?;
    let next = match op.secrets_version_new {
        Some(v) => Some(
            escrow(state)
                .read(serial, u64::try_from(v).unwrap_or(0))
                .await?,
        ),
        None => None,
    };
    let params = match next.as_ref() {
        Some(n) if secret_changing(operation) => {
            secret_change_params(operation, serial, &agent_key, &current, n)?
        }
        _ => {
            return Err(AppError::Conflict(
                "only an unconfirmed secret change can be resumed; start the operation again"
                    .into(),
            ))
        }
    };
    let hash = params_hash(&params).map_err(|e| AppError::Internal(e.into()))?;
    let now = OffsetDateTime::now_utc();
    let expires = now + time::Duration::seconds(TICKET_LIFETIME_SECS);
    let ticket = state.fleet.ticket_key.sign(&TicketClaims {
        id: Uuid::new_v4(),
        operation,
        serial: serial.get(),
        agent_key_fingerprint: fingerprint.clone(),
        params_hash: hash.clone(),
        issued_at: now.unix_timestamp(),
        expires_at: expires.unix_timestamp(),
    });
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE operations SET params_hash = $2, ticket_expires_at = $3, agent_key_fingerprint = $4 WHERE id = $1")
        .bind(op_id)
        .bind(&hash)
        .bind(expires)
        .bind(&fingerprint)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("secret.read")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({"operation_id": op_id, "operation": op.kind, "encrypted_to_agent": fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(AuthorizedOperation {
        operation_id: op_id,
        operation,
        serial,
        agent_path: operation.path(),
        request: json!(SignedRequest { ticket, params }),
        expires_at: expires,
    })
}

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

pub async fn report(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    op_id: Uuid,
    r: OperationResult,
) -> Result<OperationRow, AppError> {
    // The caller must be able to see the device at all.
    load_visible(state, u, serial).await?;
    let op = db::operation(&state.db, op_id)
        .await?
        .filter(|o| o.device_serial == serial.as_i64())
        .ok_or_else(|| AppError::NotFound(format!("no operation {op_id} on {serial}")))?;
    if op.actor_id != Some(u.user_id) && !is_operator(u) {
        return Err(AppError::Forbidden(
            "that operation was started by someone else".into(),
        ));
    }
    let wanted = if r.success { "succeeded" } else { "failed" };
    if op.state == wanted {
        return Ok(op);
    }
    if op.state != "pending" {
        return Err(AppError::Conflict(format!(
            "operation {op_id} is already {}",
            op.state
        )));
    }
    let error: Option<String> = r.error.as_deref().map(|e| {
        e.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect()
    });
    // A wipe revokes the device's certificates in OpenBao before it is recorded.
    let mut revoked = Vec::new();
    if r.success && op.kind == Operation::Reset.as_str() {
        revoked = revoke_device_certificates(state, serial).await?;
    }
    let mut tx = state.db.begin().await?;
    let op = db::operation_for_update(&mut tx, op_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no operation {op_id}")))?;
    if op.state != "pending" {
        return Err(AppError::Conflict(format!(
            "operation {op_id} is already {}",
            op.state
        )));
    }
    let locked = db::device_for_update(&mut tx, serial)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no device {serial}")))?;
    sqlx::query("UPDATE operations SET state = $2, error = $3, finished_at = now() WHERE id = $1")
        .bind(op_id)
        .bind(wanted)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
    let mut device_change = Value::Null;
    if r.success {
        if let Some(v) = op.secrets_version_new {
            sqlx::query("UPDATE devices SET secrets_version = $2, last_seen_at = now(), updated_at = now() WHERE serial = $1")
                .bind(serial.as_i64())
                .bind(v)
                .execute(&mut *tx)
                .await?;
            device_change = json!({"secrets_version": v});
        }
        if op.kind == Operation::ImportCertificate.as_str()
            && locked.state() == DeviceState::Registered
        {
            sqlx::query("UPDATE devices SET state = 'active', enrolled_at = now(), updated_at = now() WHERE serial = $1")
                .bind(serial.as_i64())
                .execute(&mut *tx)
                .await?;
            device_change = json!({"state": "active"});
        }
        if op.kind == Operation::Reset.as_str() {
            // Factory state again. A wiped enrolled key goes back to the pool
            // without an owner; a rolled-back enrollment stays registered to
            // its owner, ready to start over.
            let rolled_back = locked.state() == DeviceState::Registered;
            sqlx::query(
                "UPDATE devices SET state = CASE WHEN $2 THEN 'registered' ELSE 'returned' END, \
                 owner_id = CASE WHEN $2 THEN owner_id END, secrets_version = NULL, \
                 enrolled_at = NULL, updated_at = now() WHERE serial = $1",
            )
            .bind(serial.as_i64())
            .bind(rolled_back)
            .execute(&mut *tx)
            .await?;
            for id in &revoked {
                db::mark_certificate_revoked(&mut tx, *id, "device wiped").await?;
            }
            device_change = json!({
                "state": if rolled_back { "registered" } else { "returned" },
                "certificates_revoked": revoked.len(),
            });
        }
    }
    audit::record(
        &mut tx,
        AuditEvent::new(if r.success {
            "operation.succeeded"
        } else {
            "operation.failed"
        })
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
    if !revoked.is_empty() {
        state.fleet.pki_cache.invalidate();
    }
    db::operation(&state.db, op_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no operation {op_id}")))
}

// ----------------------------------------------------------- certificates

/// `POST /api/yubikey/{serial}/sign-csr`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignCsrRequest {
    /// The `generate_csr` operation that produced this CSR.
    pub operation_id: Uuid,
    pub csr_pem: String,
    /// Slot attestation certificate, then the device (f9) certificate.
    pub attestation_chain_pem: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SignedCertificate {
    pub certificate_id: Uuid,
    pub certificate_pem: String,
    pub serial_number: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

pub async fn sign_csr(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    req: SignCsrRequest,
) -> Result<SignedCertificate, AppError> {
    let d = load_visible(state, u, serial).await?;
    let op = db::operation(&state.db, req.operation_id)
        .await?
        .filter(|o| o.device_serial == serial.as_i64() && o.kind == Operation::GenerateCsr.as_str())
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "no key generation {} on {serial}",
                req.operation_id
            ))
        })?;
    if op.actor_id != Some(u.user_id) && !is_operator(u) {
        return Err(AppError::Forbidden(
            "that key generation was started by someone else".into(),
        ));
    }
    if op.state == "failed" {
        return Err(AppError::Conflict("that key generation failed".into()));
    }
    let policy = settings::policy(&state.db).await?;
    authorize_kind(u, &d, Operation::GenerateCsr, &policy)?;
    let already: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM certificates WHERE operation_id = $1")
            .bind(op.id)
            .fetch_optional(&state.db)
            .await?;
    if already.is_some() {
        return Err(AppError::Conflict(
            "a certificate was already issued for that key generation".into(),
        ));
    }
    let slot = op
        .details
        .get("slot")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let want_alg = op
        .details
        .get("algorithm")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    let refuse = |msg: String| async {
        let _ = audit::record_alone(
            &state.db,
            AuditEvent::new("certificate.refused")
                .actor(u)
                .from_client(meta)
                .target("device", serial)
                .details(json!({"operation_id": req.operation_id, "reason": msg})),
        )
        .await;
        AppError::Unprocessable(msg)
    };
    let csr = match verify_csr(&req.csr_pem) {
        Ok(c) => c,
        Err(e) => return Err(refuse(e.to_string()).await),
    };
    if algorithm_name(csr.algorithm) != want_alg {
        return Err(refuse(format!(
            "the CSR's key is {}, but {want_alg} was generated",
            algorithm_name(csr.algorithm)
        ))
        .await);
    }
    if let Err(e) = policy.slot(&slot).and_then(|sp| {
        if sp.algorithms.contains(&csr.algorithm) {
            Ok(())
        } else {
            Err(format!(
                "policy: slot {slot} does not allow {}",
                algorithm_name(csr.algorithm)
            ))
        }
    }) {
        return Err(refuse(e).await);
    }
    if state.fleet.attestation_roots.0.is_empty() {
        return Err(refuse("no attestation roots are configured (attestation.roots_file); Kleidia signs only attested keys".into()).await);
    }
    let attested = match attestation::verify(
        &state.fleet.attestation_roots,
        &req.attestation_chain_pem,
        serial.get(),
        &csr.spki_der,
    ) {
        Ok(a) => a,
        Err(e) => return Err(refuse(format!("attestation refused: {e}")).await),
    };
    let want_pin: Option<PinPolicy> = op
        .details
        .get("pin_policy")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let want_touch: Option<TouchPolicy> = op
        .details
        .get("touch_policy")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if attested.pin_policy.is_some() && attested.pin_policy != want_pin
        || attested.touch_policy.is_some() && attested.touch_policy != want_touch
    {
        return Err(refuse(
            "the attested PIN/touch policy is not the one that was requested".into(),
        )
        .await);
    }
    let names = owner_names(state, &d).await?;
    let pki = Pki {
        bao: &state.bao,
        mount: &state.config.openbao.pki_mount,
    };
    let issued = pki
        .sign(
            &csr,
            &names,
            u64::from(policy.certificate_lifetime_days) * 86_400,
        )
        .await?;
    let cid = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE operations SET state = 'succeeded', finished_at = now() WHERE id = $1 AND state = 'pending'")
        .bind(op.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO certificates (id, device_serial, slot, serial_number, subject, key_algorithm, not_before, \
             not_after, pem, operation_id, issued_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(cid)
    .bind(serial.as_i64())
    .bind(&slot)
    .bind(&issued.serial_number)
    .bind(&issued.subject)
    .bind(algorithm_name(csr.algorithm))
    .bind(issued.not_before)
    .bind(issued.not_after)
    .bind(&issued.pem)
    .bind(op.id)
    .bind(u.user_id)
    .execute(&mut *tx)
    .await?;
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
                "algorithm": algorithm_name(csr.algorithm),
                "attested_firmware": attested.firmware.map(|(a, b, c)| format!("{a}.{b}.{c}")),
                "not_after": issued.not_after.unix_timestamp(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: String,
}

pub async fn revoke_certificate(
    state: &AppState,
    u: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
    r: RevokeRequest,
) -> Result<db::CertificateRow, AppError> {
    if !is_operator(u) {
        return Err(AppError::Forbidden(
            "only admins and helpdesk revoke certificates".into(),
        ));
    }
    let reason = r.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(AppError::Unprocessable(
            "give a reason (at most 500 characters)".into(),
        ));
    }
    let c = db::certificate(&state.db, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no certificate {id}")))?;
    if c.status == "revoked" {
        return Ok(c);
    }
    Pki {
        bao: &state.bao,
        mount: &state.config.openbao.pki_mount,
    }
    .revoke(&c.serial_number)
    .await?;
    let mut tx = state.db.begin().await?;
    db::mark_certificate_revoked(&mut tx, id, reason).await?;
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
    state.fleet.pki_cache.invalidate();
    db::certificate(&state.db, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no certificate {id}")))
}

// ------------------------------------------------------------- start-up

/// The ticket signing key, shared by every replica through OpenBao
/// (`{app_mount}/data/kleidia/ticket-signing`), created at first start.
pub async fn load_ticket_key(
    bao: &crate::vault::Bao,
    app_mount: &str,
) -> anyhow::Result<TicketSigningKey> {
    use base64::Engine as _;
    let fresh = TicketSigningKey::generate(&mut OsRng);
    let seed = base64::engine::general_purpose::STANDARD.encode(*fresh.to_bytes());
    let stored = crate::vault::kv::get_or_create(
        bao,
        app_mount,
        "kleidia/ticket-signing",
        json!({"ed25519_seed": seed}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ticket signing key in OpenBao: {e}"))?;
    let b64 = stored
        .get("ed25519_seed")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("kleidia/ticket-signing has no ed25519_seed"))?;
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow::anyhow!("kleidia/ticket-signing is not base64"))?,
    );
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("kleidia/ticket-signing is not 32 bytes"))?;
    Ok(TicketSigningKey::from_bytes(&bytes))
}

pub fn build_context(ticket_key: TicketSigningKey, roots: AttestationRoots) -> Arc<FleetContext> {
    Arc::new(FleetContext {
        ticket_key,
        attestation_roots: roots,
        pki_cache: super::pki_cache::PkiCache::default(),
    })
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
