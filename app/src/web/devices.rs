//! Device pages: the fleet list (`/devices`), one's own keys (`/my/devices`),
//! a device's page (`/devices/{serial}`), its form actions, and `/settings`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::fleet_api::{device_details, parse_serial, parse_uuid, DeviceDetails, CHANGERS};
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser, Role};
use crate::error::AppError;
use crate::fleet::db::{self, DeviceFilter, DeviceRow};
use crate::fleet::device::DeviceState;
use crate::fleet::policy::{ManagementKeyAlgorithm, Policy};
use crate::fleet::service::{self, AssignOwner, RevokeRequest, Transition};
use crate::fleet::settings;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/devices", Access::STAFF, list_page),
        RouteDef::post("/devices", CHANGERS, register_form),
        RouteDef::get("/my/devices", Access::SignedIn, my_page),
        RouteDef::get("/devices/{serial}", Access::SignedIn, device_page),
        RouteDef::post("/devices/{serial}/state", CHANGERS, state_form),
        RouteDef::post("/devices/{serial}/owner", Access::OPERATORS, owner_form),
        RouteDef::post(
            "/certificates/{cert}/revoke",
            Access::OPERATORS,
            revoke_form,
        ),
        RouteDef::get("/enroll", CHANGERS, enroll_page),
        RouteDef::get("/agent", Access::SignedIn, agent_page),
        RouteDef::get("/settings", Access::ADMIN, settings_page),
        RouteDef::post("/settings", Access::ADMIN, settings_form),
    ]
}

fn is_htmx(h: &HeaderMap) -> bool {
    h.contains_key("hx-request") && !h.contains_key("hx-boosted")
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    me: Option<Nav>,
    title: &'static str,
    base: &'static str,
    f: FilterView,
    rows: Vec<DeviceRow>,
    next: Option<String>,
    states: Vec<&'static str>,
    can_register: bool,
    can_register_for_others: bool,
}

#[derive(Template)]
#[template(path = "devices_table_partial.html")]
struct DevicesTable {
    rows: Vec<DeviceRow>,
    next: Option<String>,
}

#[derive(Default)]
struct FilterView {
    q: String,
    state: String,
    owner: String,
    firmware: String,
}

fn next_link(base: &str, f: &DeviceFilter, rows: &[DeviceRow]) -> Option<String> {
    let limit = f.limit.unwrap_or(50).clamp(1, 200);
    if rows.len() as i64 != limit {
        return None;
    }
    let last = rows.last()?.serial;
    let mut q = vec![format!("after={last}")];
    for (k, v) in [
        ("q", &f.q),
        ("state", &f.state),
        ("owner", &f.owner),
        ("firmware", &f.firmware),
    ] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
            q.push(format!("{k}={}", super::pages::urlencode(v)));
        }
    }
    if let Some(d) = f.expiring_days {
        q.push(format!("expiring_days={d}"));
    }
    if let Some(b) = f.factory {
        q.push(format!("factory={b}"));
    }
    Some(format!("{base}?{}", q.join("&")))
}

async fn list_common(
    state: &AppState,
    me: &CurrentUser,
    headers: &HeaderMap,
    f: DeviceFilter,
    only_mine: bool,
) -> Result<Response, AppError> {
    let base = if only_mine { "/my/devices" } else { "/devices" };
    let rows = db::search(&state.db, &f, only_mine.then_some(me.user_id)).await?;
    let next = next_link(base, &f, &rows);
    if is_htmx(headers) {
        return Ok(render(&DevicesTable { rows, next })?.into_response());
    }
    Ok(render(&DevicesPage {
        me: nav(me),
        title: if only_mine { "My YubiKeys" } else { "Devices" },
        base,
        f: FilterView {
            q: f.q.unwrap_or_default(),
            state: f.state.unwrap_or_default(),
            owner: f.owner.unwrap_or_default(),
            firmware: f.firmware.unwrap_or_default(),
        },
        rows,
        next,
        states: DeviceState::ALL.iter().map(|s| s.as_str()).collect(),
        can_register: me.role != Role::Auditor,
        can_register_for_others: matches!(me.role, Role::Admin | Role::Helpdesk),
    })?
    .into_response())
}

async fn list_page(
    State(state): State<AppState>,
    me: CurrentUser,
    headers: HeaderMap,
    Query(f): Query<DeviceFilter>,
) -> Result<Response, AppError> {
    list_common(&state, &me, &headers, f, false).await
}

async fn my_page(
    State(state): State<AppState>,
    me: CurrentUser,
    headers: HeaderMap,
    Query(f): Query<DeviceFilter>,
) -> Result<Response, AppError> {
    list_common(&state, &me, &headers, f, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterForm {
    serial: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    firmware: String,
    /// Username of the owner (empty: the caller).
    #[serde(default)]
    owner: String,
}

async fn register_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<RegisterForm>,
) -> Result<Response, AppError> {
    let serial = parse_serial(&f.serial)?;
    let owner_id = owner_by_name(&state, &f.owner).await?;
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    service::register_device(
        &state,
        &me,
        &meta,
        service::RegisterDevice {
            serial,
            model: blank(&f.model),
            firmware: blank(&f.firmware),
            form_factor: None,
            owner_id,
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/devices/{serial}")).into_response())
}

/// The user a form names by username; `None` for an empty field.
async fn owner_by_name(state: &AppState, name: &str) -> Result<Option<uuid::Uuid>, AppError> {
    match name.trim() {
        "" => Ok(None),
        name => Ok(Some(
            crate::db::users::by_username(&state.db, &name.to_lowercase())
                .await?
                .ok_or_else(|| AppError::Unprocessable(format!("no user named {name}")))?
                .id,
        )),
    }
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    me: Option<Nav>,
    d: DeviceDetails,
    transitions: Vec<&'static str>,
    is_operator: bool,
    is_staff: bool,
    is_admin: bool,
    /// The caller may run operations on this key through their agent.
    can_operate: bool,
    may_unblock: bool,
    is_owner: bool,
    pending: Option<String>,
    /// The unconfirmed secret change, for the "settle it" card: (id, kind, when).
    pending_op: Option<(String, String, String)>,
}

async fn device_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(serial): Path<String>,
) -> Result<Html<String>, AppError> {
    let serial = parse_serial(&serial)?;
    let d = device_details(&state, &me, serial).await?;
    let from = d.device.state();
    let transitions = DeviceState::ALL
        .into_iter()
        .filter(|to| {
            from.can_transition(*to)
                && !(from == DeviceState::Registered && *to == DeviceState::Active)
        })
        .filter(|to| match me.role {
            Role::Admin => true,
            Role::Helpdesk => matches!(
                to,
                DeviceState::Suspended | DeviceState::Active | DeviceState::Lost
            ),
            Role::User => *to == DeviceState::Lost,
            Role::Auditor => false,
        })
        .map(|s| s.as_str())
        .collect();
    let policy = settings::policy(&state.db).await?;
    let is_operator = matches!(me.role, Role::Admin | Role::Helpdesk);
    let owner = d.device.owner_id == Some(me.user_id);
    let pending = d
        .operations
        .iter()
        .find(|o| o.state == "pending" && o.secrets_version_new.is_some())
        .map(|o| o.kind.clone());
    let pending_op = d
        .operations
        .iter()
        .find(|o| o.state == "pending" && o.secrets_version_new.is_some())
        .filter(|o| is_operator || o.actor_id == Some(me.user_id))
        .map(|o| (o.id.to_string(), o.kind.clone(), o.created_str()));
    render(&DevicePage {
        me: nav(&me),
        transitions,
        is_operator,
        is_staff: me.role != Role::User,
        is_admin: me.role == Role::Admin,
        can_operate: (is_operator || owner) && d.device.state().is_usable(),
        may_unblock: d.device.state().is_usable()
            && (is_operator || owner && policy.owners_may_unblock_pin),
        is_owner: owner,
        pending,
        pending_op,
        d,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateForm {
    state: String,
    reason: String,
}

async fn state_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    Form(f): Form<StateForm>,
) -> Result<Response, AppError> {
    let serial = parse_serial(&serial)?;
    service::transition(
        &state,
        &me,
        &meta,
        serial,
        Transition {
            state: f.state,
            reason: f.reason,
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/devices/{serial}")).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerForm {
    /// Username; empty to unassign.
    owner: String,
}

async fn owner_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    Form(f): Form<OwnerForm>,
) -> Result<Response, AppError> {
    let serial = parse_serial(&serial)?;
    let owner_id = owner_by_name(&state, &f.owner).await?;
    service::assign_owner(&state, &me, &meta, serial, AssignOwner { owner_id }).await?;
    Ok(Redirect::to(&format!("/devices/{serial}")).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeForm {
    reason: String,
}

async fn revoke_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(cert): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Result<Response, AppError> {
    let id = parse_uuid(&cert, "certificate id")?;
    let c = service::revoke_certificate(&state, &me, &meta, id, RevokeRequest { reason: f.reason })
        .await?;
    Ok(Redirect::to(&format!("/devices/{}", c.device_serial)).into_response())
}

#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage {
    me: Option<Nav>,
    pin_min: usize,
    pin_max: usize,
    serial: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollQuery {
    #[serde(default)]
    serial: Option<String>,
}

/// The enrollment wizard: everything happens in the browser between the
/// server's API and the local agent (`static/agent.js`).
async fn enroll_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<EnrollQuery>,
) -> Result<Html<String>, AppError> {
    let p = settings::policy(&state.db).await?;
    let serial = match q.serial.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => parse_serial(s)?.to_string(),
        None => String::new(),
    };
    render(&EnrollPage {
        me: nav(&me),
        pin_min: p.pin_min_length,
        pin_max: p.pin_max_length,
        serial,
    })
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    me: Option<Nav>,
    public_url: String,
    agent_port: u16,
}

/// How to install and start the workstation agent for this server.
async fn agent_page(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Html<String>, AppError> {
    render(&AgentPage {
        me: nav(&me),
        public_url: state
            .config
            .server
            .public_url
            .origin()
            .ascii_serialization(),
        agent_port: state
            .config
            .agent
            .url
            .port_or_known_default()
            .unwrap_or(56123),
    })
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
    settings::save(&state.db, &me, &meta, p).await?;
    Ok(Redirect::to("/settings?saved=1").into_response())
}

/// Display helpers used by the templates.
pub fn mgmt_alg(p: &Policy) -> &'static str {
    match p.management_key_algorithm {
        ManagementKeyAlgorithm::Aes256 => "aes256",
        ManagementKeyAlgorithm::Aes192 => "aes192",
        ManagementKeyAlgorithm::Aes128 => "aes128",
        ManagementKeyAlgorithm::TripleDes => "3des",
    }
}
