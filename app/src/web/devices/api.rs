//! `/api/devices…`: list, register, read, move through the lifecycle, assign.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::CHANGERS;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::domain::Serial;
use crate::error::AppError;
use crate::fleet::claim::{self, ClaimChallenge, ClaimRequest};
use crate::fleet::db::{devices, DeviceFilter, DeviceRow};
use crate::fleet::details::{device_details, DeviceDetails};
use crate::fleet::registry::{self, AssignOwner, RegisterDevice, Transition};
use crate::licensing;
use crate::state::AppState;
use crate::web::extract::{JsonBody, QueryParams};
use crate::web::RouteDef;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/api/devices", Access::STAFF, list)
            .query::<DeviceFilter>()
            .gives::<DevicePage>(200, "a page of devices"),
        RouteDef::post("/api/devices", CHANGERS, register)
            .takes::<RegisterDevice>()
            .gives::<DeviceRow>(201, "the registered device"),
        RouteDef::post("/api/devices/claim", CHANGERS, claim)
            .takes::<ClaimRequest>()
            .gives::<ClaimChallenge>(201, "a presence challenge for the card"),
        RouteDef::get("/api/my/devices", Access::SignedIn, my_devices)
            .query::<DeviceFilter>()
            .gives::<DevicePage>(200, "a page of the caller's devices"),
        RouteDef::get("/api/devices/{serial}", Access::SignedIn, get_device)
            .gives::<DeviceDetails>(
                200,
                "the device, its secrets' versions, certificates, operations and audit",
            ),
        RouteDef::post("/api/devices/{serial}/state", CHANGERS, transition)
            .takes::<Transition>()
            .gives::<DeviceRow>(200, "the device in its new state"),
        RouteDef::put(
            "/api/devices/{serial}/owner",
            Access::OPERATORS,
            assign_owner,
        )
        .takes::<AssignOwner>()
        .gives::<DeviceRow>(200, "the device with its new owner"),
    ]
}

#[derive(Serialize, utoipa::ToSchema)]
struct DevicePage {
    devices: Vec<DeviceRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next_after: Option<Serial>,
}

async fn page(
    state: &AppState,
    f: &DeviceFilter,
    only_owner: Option<uuid::Uuid>,
) -> Result<Json<DevicePage>, AppError> {
    let devices = devices::search(&state.db, f, f.state()?, only_owner).await?;
    let next_after = (devices.len() as i64 == f.limit())
        .then(|| devices.last().map(|d| d.serial))
        .flatten();
    Ok(Json(DevicePage {
        devices,
        next_after,
    }))
}

async fn list(
    State(state): State<AppState>,
    QueryParams(f): QueryParams<DeviceFilter>,
) -> Result<impl IntoResponse, AppError> {
    page(&state, &f, None).await
}

async fn my_devices(
    State(state): State<AppState>,
    me: CurrentUser,
    QueryParams(f): QueryParams<DeviceFilter>,
) -> Result<impl IntoResponse, AppError> {
    page(&state, &f, Some(me.user_id)).await
}

async fn register(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(req): JsonBody<RegisterDevice>,
) -> Result<impl IntoResponse, AppError> {
    let license = licensing::check_new_enrollment(&state.license, &state.db);
    let d = registry::register(&state.db, &state.fleet, license, &me, &meta, req).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// A presence challenge for the card the caller wants to register to
/// themselves: the agent's answer goes with `POST /api/devices`.
async fn claim(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(req): JsonBody<ClaimRequest>,
) -> Result<impl IntoResponse, AppError> {
    let c = claim::challenge(&state.db, &state.fleet, &me, &meta, req.serial).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn get_device(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(serial): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    Ok(Json(
        device_details(&state.db, &state.escrow(), &me, serial).await?,
    ))
}

async fn transition(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(t): JsonBody<Transition>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    let d = registry::transition(&state.db, &state.pki(), &me, &meta, serial, t).await?;
    Ok(Json(d))
}

async fn assign_owner(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(a): JsonBody<AssignOwner>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    Ok(Json(
        registry::assign_owner(&state.db, &me, &meta, serial, a).await?,
    ))
}
