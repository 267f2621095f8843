//! JSON API for devices, operations, certificates, the agent key and policies.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kleidia_protocol::ticket::{parse_agent_public_key, AgentKeyError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::RouteDef;
use crate::audit::{self, AuditEvent};
use crate::auth::{Access, ClientMeta, CurrentUser, Role};
use crate::error::AppError;
use crate::fleet::db::{self, DeviceFilter, DeviceRow};
use crate::fleet::device::Serial;
use crate::fleet::escrow::{Escrow, VersionInfo};
use crate::fleet::policy::Policy;
use crate::fleet::service::{
    self, AssignOwner, OperationRequest, OperationResult, RegisterDevice, RevokeRequest,
    SignCsrRequest, Transition,
};
use crate::fleet::settings;
use crate::state::AppState;

/// Everyone who may change something: not auditors.
pub const CHANGERS: Access = Access::Roles(&[Role::Admin, Role::Helpdesk, Role::User]);

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/api/devices", Access::STAFF, list),
        RouteDef::post("/api/devices", CHANGERS, register),
        RouteDef::get("/api/my/devices", Access::SignedIn, my_devices),
        RouteDef::get("/api/devices/{serial}", Access::SignedIn, get_device),
        RouteDef::post("/api/devices/{serial}/state", CHANGERS, transition),
        RouteDef::put(
            "/api/devices/{serial}/owner",
            Access::OPERATORS,
            assign_owner,
        ),
        RouteDef::post("/api/yubikey/{serial}/operations", CHANGERS, authorize),
        RouteDef::get("/api/yubikey/{serial}/secrets", CHANGERS, secrets),
        RouteDef::post(
            "/api/yubikey/{serial}/operations/{op}/result",
            CHANGERS,
            report,
        ),
        RouteDef::post("/api/yubikey/{serial}/sign-csr", CHANGERS, sign_csr),
        RouteDef::post("/api/certificates/{cert}/revoke", Access::OPERATORS, revoke),
        RouteDef::post(
            "/api/session/{session}/register-agent",
            Access::SignedIn,
            register_agent,
        ),
        RouteDef::get("/api/agent/ticket-key", Access::Public, ticket_key),
        RouteDef::get("/api/session/agent", Access::SignedIn, session_agent),
        RouteDef::get("/api/policy/enrollment", Access::SignedIn, enrollment_plan),
        RouteDef::get("/api/settings/policy", Access::STAFF, get_policy),
        RouteDef::put("/api/settings/policy", Access::ADMIN, put_policy),
    ]
}

pub fn parse_serial(s: &str) -> Result<Serial, AppError> {
    Serial::parse(s).map_err(AppError::BadRequest)
}

pub fn parse_uuid(s: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(s).map_err(|_| AppError::BadRequest(format!("{what} must be a UUID")))
}

/// A JSON body with a clear 400/415/422 instead of axum's default text.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(AppError::BadRequest(e.body_text())),
        }
    }
}

#[derive(Serialize)]
struct DevicePage {
    devices: Vec<DeviceRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next_after: Option<i64>,
}

fn page(devices: Vec<DeviceRow>, limit: Option<i64>) -> DevicePage {
    let limit = limit.unwrap_or(50).clamp(1, 200);
    let next_after = (devices.len() as i64 == limit)
        .then(|| devices.last().map(|d| d.serial))
        .flatten();
    DevicePage {
        devices,
        next_after,
    }
}

async fn list(
    State(state): State<AppState>,
    Query(f): Query<DeviceFilter>,
) -> Result<impl IntoResponse, AppError> {
    let rows = db::search(&state.db, &f, None).await?;
    Ok(Json(page(rows, f.limit)))
}

async fn my_devices(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(f): Query<DeviceFilter>,
) -> Result<impl IntoResponse, AppError> {
    let rows = db::search(&state.db, &f, Some(me.user_id)).await?;
    Ok(Json(page(rows, f.limit)))
}

async fn register(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(req): JsonBody<RegisterDevice>,
) -> Result<impl IntoResponse, AppError> {
    let d = service::register_device(&state, &me, &meta, req).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Everything the device page shows, as JSON.
#[derive(Serialize)]
pub struct DeviceDetails {
    pub device: DeviceRow,
    /// Escrow history: dates and versions, never values.
    pub secret_versions: Vec<SecretVersion>,
    pub certificates: Vec<db::CertificateRow>,
    pub operations: Vec<db::OperationRow>,
    pub audit: Vec<Value>,
}

#[derive(Serialize)]
pub struct SecretVersion {
    #[serde(flatten)]
    pub info: VersionInfo,
    /// Who wrote it and for what (from the operation that wrote it).
    pub operation: Option<String>,
    pub by: Option<String>,
    pub current: bool,
}

pub async fn device_details(
    state: &AppState,
    me: &CurrentUser,
    serial: Serial,
) -> Result<DeviceDetails, AppError> {
    let device = service::load_visible(state, me, serial).await?;
    let (_, versions) = Escrow {
        bao: &state.bao,
        mount: &state.config.openbao.kv_mount,
    }
    .versions(serial)
    .await?;
    let operations = db::operations_of(&state.db, serial, 50).await?;
    let secret_versions = versions
        .into_iter()
        .map(|info| {
            let op = operations
                .iter()
                .find(|o| o.secrets_version_new == i64::try_from(info.version).ok());
            SecretVersion {
                current: device.secrets_version == i64::try_from(info.version).ok(),
                operation: op.map(|o| format!("{} ({})", o.kind, o.state)),
                by: op.map(|o| o.actor_name.clone()),
                info,
            }
        })
        .collect();
    let certificates = db::certificates_of(&state.db, serial).await?;
    let audit = if me.role == Role::User {
        Vec::new()
    } else {
        sqlx::query_scalar::<_, Value>(
            "SELECT json_build_object('id', id, 'at', created_at, 'actor', actor_name, 'action', action, 'details', details) \
             FROM audit_log WHERE target_type = 'device' AND target_id = $1 ORDER BY id DESC LIMIT 50",
        )
        .bind(serial.to_string())
        .fetch_all(&state.db)
        .await?
    };
    Ok(DeviceDetails {
        device,
        secret_versions,
        certificates,
        operations,
        audit,
    })
}

async fn get_device(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(serial): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    Ok(Json(device_details(&state, &me, serial).await?))
}

async fn transition(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(t): JsonBody<Transition>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    Ok(Json(
        service::transition(&state, &me, &meta, serial, t).await?,
    ))
}

async fn assign_owner(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(a): JsonBody<AssignOwner>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    Ok(Json(
        service::assign_owner(&state, &me, &meta, serial, a).await?,
    ))
}

async fn authorize(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(req): JsonBody<OperationRequest>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    Ok((
        StatusCode::CREATED,
        Json(service::authorize(&state, &me, &meta, serial, req).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsQuery {
    operation_id: String,
}

async fn secrets(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    Query(q): Query<SecretsQuery>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    let op = parse_uuid(&q.operation_id, "operation_id")?;
    Ok(Json(
        service::reissue(&state, &me, &meta, serial, op).await?,
    ))
}

async fn report(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path((serial, op)): Path<(String, String)>,
    JsonBody(r): JsonBody<OperationResult>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    let op = parse_uuid(&op, "operation id")?;
    Ok(Json(
        service::report(&state, &me, &meta, serial, op, r).await?,
    ))
}

async fn sign_csr(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(req): JsonBody<SignCsrRequest>,
) -> Result<impl IntoResponse, AppError> {
    let serial = parse_serial(&serial)?;
    Ok((
        StatusCode::CREATED,
        Json(service::sign_csr(&state, &me, &meta, serial, req).await?),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(cert): Path<String>,
    JsonBody(r): JsonBody<RevokeRequest>,
) -> Result<impl IntoResponse, AppError> {
    let id = parse_uuid(&cert, "certificate id")?;
    Ok(Json(
        service::revoke_certificate(&state, &me, &meta, id, r).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// PEM SubjectPublicKeyInfo of the agent's RSA key (≥ 3072 bits).
    pub public_key: String,
}

async fn register_agent(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(session): Path<String>,
    JsonBody(body): JsonBody<RegisterAgent>,
) -> Result<impl IntoResponse, AppError> {
    let sid = parse_uuid(&session, "session id")?;
    // Only ever the caller's own session: a key registered elsewhere would let
    // someone else's secrets be encrypted to it.
    if sid != me.session_id {
        return Err(AppError::Forbidden(
            "you can register an agent only with your own session".into(),
        ));
    }
    if body.public_key.len() > 8192 {
        return Err(AppError::BadRequest("public_key is too large".into()));
    }
    let (_, fingerprint) = parse_agent_public_key(&body.public_key).map_err(|e| match e {
        AgentKeyError::TooSmall(_) => AppError::Unprocessable(e.to_string()),
        other => AppError::BadRequest(other.to_string()),
    })?;
    let mut tx = state.db.begin().await?;
    let updated = sqlx::query(
        "UPDATE user_sessions SET agent_pubkey = $2, agent_key_fingerprint = $3 WHERE id = $1",
    )
    .bind(sid)
    .bind(body.public_key.trim())
    .bind(&fingerprint)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(AppError::Unauthorized);
    }
    audit::record(
        &mut tx,
        AuditEvent::new("agent.register")
            .actor(&me)
            .from_client(&meta)
            .target("session", sid)
            .details(json!({"agent_key": fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(
        json!({"status": "ok", "agent_key_fingerprint": fingerprint}),
    ))
}

/// What the page needs to find and register the agent: this session's id,
/// where the agent listens, and the fingerprint registered so far (a
/// different one at the agent means it restarted with a new key).
async fn session_agent(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<impl IntoResponse, AppError> {
    let fp: Option<(Option<String>,)> =
        sqlx::query_as("SELECT agent_key_fingerprint FROM user_sessions WHERE id = $1")
            .bind(me.session_id)
            .fetch_optional(&state.db)
            .await?;
    Ok(Json(json!({
        "session_id": me.session_id,
        "agent_url": state.config.agent.url.as_str().trim_end_matches('/'),
        "agent_key_fingerprint": fp.and_then(|r| r.0),
        "role": me.role,
    })))
}

/// The keys enrollment generates, by policy: per slot the first allowed
/// algorithm and PIN/touch policy.
async fn enrollment_plan(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let p = settings::policy(&state.db).await?;
    let slots: Vec<Value> = p
        .enrollment_slots
        .iter()
        .filter_map(|s| {
            let sp = p.slots.get(s)?;
            Some(json!({
                "slot": s,
                "algorithm": sp.algorithms.first()?,
                "pin_policy": sp.pin_policies.first()?,
                "touch_policy": sp.touch_policies.first()?,
            }))
        })
        .collect();
    Ok(Json(json!({
        "slots": slots,
        "pin_min_length": p.pin_min_length,
        "pin_max_length": p.pin_max_length,
        "owners_may_unblock_pin": p.owners_may_unblock_pin,
    })))
}

async fn ticket_key(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.fleet.ticket_key.verifying_key().response())
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

impl SecretVersion {
    pub fn created_str(&self) -> String {
        self.info
            .created_at
            .as_ref()
            .map(crate::fleet::db::fmt_time)
            .unwrap_or_default()
    }
    pub fn by_str(&self) -> &str {
        self.by.as_deref().unwrap_or("")
    }
    pub fn operation_str(&self) -> &str {
        self.operation.as_deref().unwrap_or("")
    }
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
