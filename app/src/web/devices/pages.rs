//! Device pages: the fleet list (`/devices`), one's own keys (`/my/devices`),
//! a device's page (`/devices/{serial}`) and its form actions.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use super::{owner_by_name, CHANGERS};
use crate::auth::{Access, ClientMeta, CurrentUser, Role};
use crate::domain::{DeviceState, Serial};
use crate::error::AppError;
use crate::fleet::access;
use crate::fleet::db::{devices, DeviceFilter, DeviceRow};
use crate::fleet::details::{device_details, DeviceDetails};
use crate::fleet::registry::{self, AssignOwner, RegisterDevice, Transition};
use crate::fleet::settings;
use crate::licensing;
use crate::state::AppState;
use crate::web::extract::HxRequest;
use crate::web::pages::{nav, render, Nav};
use crate::web::RouteDef;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/devices", Access::STAFF, list_page),
        RouteDef::post("/devices", CHANGERS, register_form),
        RouteDef::get("/my/devices", Access::SignedIn, my_page),
        RouteDef::get("/devices/{serial}", Access::SignedIn, device_page),
        RouteDef::post("/devices/{serial}/state", CHANGERS, state_form),
        RouteDef::post("/devices/{serial}/owner", Access::OPERATORS, owner_form),
    ]
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
    export: Option<String>,
    states: [DeviceState; 7],
    can_register: bool,
    can_register_for_others: bool,
    // s4-fleet: the bulk-action and import links (admins).
    bulk: bool,
}

#[derive(Template)]
#[template(path = "devices_table_partial.html")]
struct DevicesTable {
    rows: Vec<DeviceRow>,
    next: Option<String>,
    /// The filters as a query string for the export links (the whole
    /// fleet's list only); `None` on "My YubiKeys".
    export: Option<String>,
    // s4-fleet: the bulk-action and import links (admins).
    bulk: bool,
}

#[derive(Default)]
struct FilterView {
    q: String,
    state: Option<DeviceState>,
    owner: String,
    firmware: String,
}

impl FilterView {
    fn selects(&self, s: &DeviceState) -> bool {
        self.state == Some(*s)
    }
}

fn next_link(base: &str, f: &DeviceFilter, rows: &[DeviceRow]) -> Option<String> {
    if rows.len() as i64 != f.limit() {
        return None;
    }
    let last = rows.last()?.serial;
    let mut q = vec![format!("after={last}")];
    q.extend(filter_pairs(f));
    Some(format!("{base}?{}", q.join("&")))
}

/// The filters (not the cursor) as `key=value` pairs.
fn filter_pairs(f: &DeviceFilter) -> Vec<String> {
    let mut q = Vec::new();
    for (k, v) in [
        ("q", &f.q),
        ("state", &f.state),
        ("owner", &f.owner),
        ("firmware", &f.firmware),
    ] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
            q.push(format!("{k}={}", crate::web::pages::urlencode(v)));
        }
    }
    if let Some(d) = f.expiring_days {
        q.push(format!("expiring_days={d}"));
    }
    if let Some(b) = f.factory {
        q.push(format!("factory={b}"));
    }
    q
}

async fn list_common(
    state: &AppState,
    me: &CurrentUser,
    hx: HxRequest,
    f: DeviceFilter,
    only_mine: bool,
) -> Result<Response, AppError> {
    let base = if only_mine { "/my/devices" } else { "/devices" };
    let wanted = f.state()?;
    let rows = devices::search(&state.db, &f, wanted, only_mine.then_some(me.user_id)).await?;
    let next = next_link(base, &f, &rows);
    let export = (!only_mine && me.role.reads_all_users()).then(|| filter_pairs(&f).join("&"));
    let bulk = !only_mine && me.role == Role::Admin;
    if hx.wants_partial() {
        return Ok(render(&DevicesTable {
            rows,
            next,
            export,
            bulk,
        })?
        .into_response());
    }
    Ok(render(&DevicesPage {
        me: nav(me),
        title: if only_mine { "My YubiKeys" } else { "Devices" },
        base,
        f: FilterView {
            q: f.q.unwrap_or_default(),
            state: wanted,
            owner: f.owner.unwrap_or_default(),
            firmware: f.firmware.unwrap_or_default(),
        },
        rows,
        next,
        export,
        states: DeviceState::ALL,
        can_register: me.role != Role::Auditor,
        can_register_for_others: access::is_operator(me),
        bulk,
    })?
    .into_response())
}

async fn list_page(
    State(state): State<AppState>,
    me: CurrentUser,
    hx: HxRequest,
    Query(f): Query<DeviceFilter>,
) -> Result<Response, AppError> {
    list_common(&state, &me, hx, f, false).await
}

async fn my_page(
    State(state): State<AppState>,
    me: CurrentUser,
    hx: HxRequest,
    Query(f): Query<DeviceFilter>,
) -> Result<Response, AppError> {
    list_common(&state, &me, hx, f, true).await
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
    let serial = Serial::parse(&f.serial)?;
    let owner_id = owner_by_name(&state, &f.owner).await?;
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    // A plain user's form has no card behind it: refused (they enroll
    // through the wizard, which shows the card).
    let req = RegisterDevice {
        serial: Some(serial),
        model: blank(&f.model),
        firmware: blank(&f.firmware),
        form_factor: None,
        owner_id,
        challenge_id: None,
        proof: None,
    };
    let license = licensing::check_new_enrollment(&state.license, &state.db);
    registry::register(&state.db, &state.fleet, license, &me, &meta, req).await?;
    Ok(Redirect::to(&format!("/devices/{serial}")).into_response())
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    me: Option<Nav>,
    d: DeviceDetails,
    transitions: Vec<DeviceState>,
    is_operator: bool,
    is_staff: bool,
    is_admin: bool,
    /// The caller may run operations on this key through their agent.
    can_operate: bool,
    may_unblock: bool,
    is_owner: bool,
    pending: Option<&'static str>,
    /// The unconfirmed secret change, for the "settle it" card: (id, kind, when).
    pending_op: Option<(String, &'static str, String)>,
}

async fn device_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(serial): Path<String>,
) -> Result<Html<String>, AppError> {
    let serial = Serial::parse(&serial)?;
    let d = device_details(&state.db, &state.escrow(), &me, serial).await?;
    let transitions = registry::transitions_for(&me, &d.device);
    let policy = settings::policy(&state.db).await?;
    let is_operator = access::is_operator(&me);
    let owner = access::is_owner(&me, &d.device);
    let usable = d.device.state.is_usable();
    let unconfirmed = d.unconfirmed_change();
    let pending = unconfirmed.map(|o| o.kind.as_str());
    let pending_op = unconfirmed
        .filter(|o| is_operator || o.actor_id == Some(me.user_id))
        .map(|o| (o.id.to_string(), o.kind.as_str(), o.created_str()));
    render(&DevicePage {
        me: nav(&me),
        transitions,
        is_operator,
        is_staff: me.role != Role::User,
        is_admin: me.role == Role::Admin,
        can_operate: (is_operator || owner) && usable,
        may_unblock: usable && (is_operator || owner && policy.owners_may_unblock_pin),
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
    let serial = Serial::parse(&serial)?;
    let t = Transition {
        state: f.state,
        reason: f.reason,
    };
    registry::transition(&state.db, &state.pki(), &me, &meta, serial, t).await?;
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
    let serial = Serial::parse(&serial)?;
    let owner_id = owner_by_name(&state, &f.owner).await?;
    registry::assign_owner(&state.db, &me, &meta, serial, AssignOwner { owner_id }).await?;
    Ok(Redirect::to(&format!("/devices/{serial}")).into_response())
}

/// One audit row for the device page.
pub fn audit_line(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    format!(
        "{} · {} · {}",
        s("at")
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " "),
        s("actor"),
        s("action")
    )
}
