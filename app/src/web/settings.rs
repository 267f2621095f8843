//! The policy: `/settings` (page and form, admins), `/api/settings/policy`
//! (read for staff, replace for admins) and `/api/policy/enrollment`, the
//! keys enrollment generates.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use kleidia_protocol::agent::{KeyAlgorithm, PinPolicy, PivSlot, TouchPolicy};
use serde::{Deserialize, Serialize};

use super::extract::JsonBody;
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::fleet::policy::{CertificateApproval, ManagementKeyAlgorithm, Offboarding, Policy};
use crate::fleet::secrets::acceptable_pin;
use crate::fleet::settings;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/settings", Access::ADMIN, settings_page),
        RouteDef::post("/settings", Access::ADMIN, settings_form),
        RouteDef::get("/api/settings/policy", Access::STAFF, get_policy)
            .gives::<Policy>(200, "the device policy"),
        RouteDef::put("/api/settings/policy", Access::ADMIN, put_policy)
            .takes::<Policy>()
            .gives::<Policy>(200, "the policy as saved"),
        RouteDef::get("/api/policy/enrollment", Access::SignedIn, enrollment_plan)
            .gives::<EnrollmentPlan>(200, "what enrollment generates, by policy"),
        RouteDef::post("/api/policy/pin-check", Access::SignedIn, pin_check)
            .takes::<PinCheck>()
            .gives::<PinAcceptable>(
                200,
                "the policy accepts the PIN (422 names the rule it breaks)",
            ),
    ]
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    me: Option<Nav>,
    p: Policy,
    policy_json: String,
    saved: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedQuery {
    #[serde(default)]
    saved: Option<String>,
}

async fn settings_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<SavedQuery>,
) -> Result<Html<String>, AppError> {
    let p = settings::policy(&state.db).await?;
    let policy_json = serde_json::to_string_pretty(&p).map_err(|e| AppError::Internal(e.into()))?;
    render(&SettingsPage {
        me: nav(&me),
        p,
        policy_json,
        saved: q.saved.is_some(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsForm {
    pin_min_length: usize,
    pin_max_length: usize,
    management_key_algorithm: String,
    certificate_lifetime_days: u32,
    expiry_warning_days: u32,
    #[serde(default)]
    owners_may_unblock_pin: Option<String>,
    certificate_approval: String,
    /// Absent: unchanged (a form from before the setting).
    #[serde(default)]
    offboarding: Option<String>,
}

async fn settings_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<SettingsForm>,
) -> Result<Response, AppError> {
    let mut p = settings::policy(&state.db).await?;
    p.pin_min_length = f.pin_min_length;
    p.pin_max_length = f.pin_max_length;
    p.management_key_algorithm = match f.management_key_algorithm.as_str() {
        "aes192" => ManagementKeyAlgorithm::Aes192,
        "aes256" => ManagementKeyAlgorithm::Aes256,
        other => {
            return Err(AppError::Unprocessable(format!(
                "management key algorithm {other:?} is not allowed"
            )))
        }
    };
    p.certificate_lifetime_days = f.certificate_lifetime_days;
    p.expiry_warning_days = f.expiry_warning_days;
    p.owners_may_unblock_pin = f.owners_may_unblock_pin.is_some();
    p.certificate_approval = match f.certificate_approval.as_str() {
        "off" => CertificateApproval::Off,
        "owner_or_second_admin" => CertificateApproval::OwnerOrSecondAdmin,
        other => {
            return Err(AppError::Unprocessable(format!(
                "certificate approval {other:?} is not one of off, owner_or_second_admin"
            )))
        }
    };
    if let Some(o) = f.offboarding.as_deref() {
        p.offboarding = match o {
            "sessions_only" => Offboarding::SessionsOnly,
            "suspend_and_hold" => Offboarding::SuspendAndHold,
            "suspend_and_revoke" => Offboarding::SuspendAndRevoke,
            other => {
                return Err(AppError::Unprocessable(format!(
                    "offboarding {other:?} is not one of sessions_only, suspend_and_hold, suspend_and_revoke"
                )))
            }
        };
    }
    settings::save(&state.db, &me, &meta, p).await?;
    Ok(Redirect::to("/settings?saved=1").into_response())
}

/// The form's value for the policy's management key algorithm.
pub fn mgmt_alg(p: &Policy) -> &'static str {
    match p.management_key_algorithm {
        ManagementKeyAlgorithm::Aes256 => "aes256",
        ManagementKeyAlgorithm::Aes192 => "aes192",
        ManagementKeyAlgorithm::Aes128 => "aes128",
        ManagementKeyAlgorithm::TripleDes => "3des",
    }
}

/// A management key algorithm as people read it.
pub fn mgmt_alg_name(a: &ManagementKeyAlgorithm) -> &'static str {
    match a {
        ManagementKeyAlgorithm::Aes256 => "AES-256",
        ManagementKeyAlgorithm::Aes192 => "AES-192",
        ManagementKeyAlgorithm::Aes128 => "AES-128",
        ManagementKeyAlgorithm::TripleDes => "3DES",
    }
}

async fn get_policy(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    Ok(Json(settings::policy(&state.db).await?))
}

async fn put_policy(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(p): JsonBody<Policy>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(settings::save(&state.db, &me, &meta, p).await?))
}

/// `POST /api/policy/pin-check`: a PIN to check against the policy.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PinCheck {
    pin: String,
}

/// The policy accepts the PIN.
#[derive(Serialize, utoipa::ToSchema)]
struct PinAcceptable {
    acceptable: bool,
}

/// Whether the policy accepts a PIN, asked by the enrollment wizard before
/// it registers or changes anything (a refused PIN must not leave a
/// half-enrolled key behind). Stateless: nothing is stored or logged; the
/// same rule is enforced again when the PIN is set.
async fn pin_check(
    State(state): State<AppState>,
    JsonBody(c): JsonBody<PinCheck>,
) -> Result<impl IntoResponse, AppError> {
    let p = settings::policy(&state.db).await?;
    let pin = zeroize::Zeroizing::new(c.pin);
    if !acceptable_pin(&pin, p.pin_min_length, p.pin_max_length) {
        return Err(AppError::Unprocessable(format!(
            "policy: a PIN has {}–{} digits, no repeated or sequential digits, and is not a well-known PIN",
            p.pin_min_length, p.pin_max_length
        )));
    }
    Ok(Json(PinAcceptable { acceptable: true }))
}

/// The keys enrollment generates, by policy: per slot the first allowed
/// algorithm and PIN/touch policy.
async fn enrollment_plan(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let p = settings::policy(&state.db).await?;
    let slots = p
        .enrollment_slots
        .iter()
        .filter_map(|&slot| {
            let sp = p.slots.get(&slot)?;
            Some(PlannedKey {
                slot,
                algorithm: *sp.algorithms.first()?,
                pin_policy: *sp.pin_policies.first()?,
                touch_policy: *sp.touch_policies.first()?,
            })
        })
        .collect();
    Ok(Json(EnrollmentPlan {
        slots,
        pin_min_length: p.pin_min_length,
        pin_max_length: p.pin_max_length,
        owners_may_unblock_pin: p.owners_may_unblock_pin,
        certificate_approval: p.certificate_approval,
    }))
}

/// `GET /api/policy/enrollment`.
#[derive(Serialize, utoipa::ToSchema)]
struct EnrollmentPlan {
    slots: Vec<PlannedKey>,
    pin_min_length: usize,
    pin_max_length: usize,
    owners_may_unblock_pin: bool,
    certificate_approval: CertificateApproval,
}

/// The key enrollment generates in one slot.
#[derive(Serialize, utoipa::ToSchema)]
struct PlannedKey {
    slot: PivSlot,
    algorithm: KeyAlgorithm,
    pin_policy: PinPolicy,
    touch_policy: TouchPolicy,
}
