//! Certificates in another person's name (`fleet::approvals`): the page of
//! approval requests (`/approvals`, with approve and reject forms) and
//! `/api/certificate-approvals`. Everybody signed in may call them; who sees
//! and decides which request is the fleet's rule (owners their devices',
//! admins all, never the requester).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::HxRequest;
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::fleet::approvals::{self, Decision};
use crate::fleet::db::approvals::ApprovalRow;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/approvals", Access::SignedIn, approvals_page),
        RouteDef::post(
            "/approvals/{approval}/approve",
            Access::SignedIn,
            approve_form,
        ),
        RouteDef::post(
            "/approvals/{approval}/reject",
            Access::SignedIn,
            reject_form,
        ),
        RouteDef::get("/api/certificate-approvals", Access::SignedIn, api_list)
            .gives_list::<ApiApproval>(200, "the requests the caller may see"),
        RouteDef::post(
            "/api/certificate-approvals/{approval}/approve",
            Access::SignedIn,
            api_approve,
        )
        .takes_nothing()
        .gives::<ApprovalRow>(200, "the request, approved"),
        RouteDef::post(
            "/api/certificate-approvals/{approval}/reject",
            Access::SignedIn,
            api_reject,
        )
        .takes_nothing()
        .gives::<ApprovalRow>(200, "the request, rejected"),
    ]
}

/// One request as the page shows it.
pub struct ApprovalLine {
    pub a: ApprovalRow,
    pub status: &'static str,
    pub may_decide: bool,
    pub mine: bool,
}

fn lines(me: &CurrentUser, rows: Vec<ApprovalRow>) -> Vec<ApprovalLine> {
    let now = OffsetDateTime::now_utc();
    rows.into_iter()
        .map(|a| ApprovalLine {
            status: a.shown_status(now),
            may_decide: approvals::may_decide(me, &a, now),
            mine: a.requester_id == me.user_id,
            a,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    me: Option<Nav>,
    rows: Vec<ApprovalLine>,
}

#[derive(Template)]
#[template(path = "approvals_table_partial.html")]
struct ApprovalsTable {
    rows: Vec<ApprovalLine>,
}

async fn approvals_page(
    State(state): State<AppState>,
    me: CurrentUser,
    hx: HxRequest,
) -> Result<Html<String>, AppError> {
    let rows = lines(&me, approvals::list(&state.db, &me).await?);
    if hx.wants_partial() {
        return render(&ApprovalsTable { rows });
    }
    render(&ApprovalsPage { me: nav(&me), rows })
}

/// The form's answer: the refreshed table for htmx, the page otherwise.
async fn decide_form(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    hx: HxRequest,
    id: Uuid,
    decision: Decision,
) -> Result<Response, AppError> {
    approvals::decide(&state.db, me, meta, id, decision).await?;
    if hx.wants_partial() {
        let rows = lines(me, approvals::list(&state.db, me).await?);
        return Ok(render(&ApprovalsTable { rows })?.into_response());
    }
    Ok(Redirect::to("/approvals").into_response())
}

async fn approve_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    hx: HxRequest,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    decide_form(&state, &me, &meta, hx, id, Decision::Approve).await
}

async fn reject_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    hx: HxRequest,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    decide_form(&state, &me, &meta, hx, id, Decision::Reject).await
}

/// One request in `GET /api/certificate-approvals`: the row's fields, with
/// the status as shown (`expired` once an open request is past
/// `expires_at`) and whether the caller may decide it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ApiApproval {
    id: Uuid,
    device_serial: crate::domain::Serial,
    slot: kleidia_protocol::agent::PivSlot,
    requester_id: Uuid,
    requester_name: String,
    owner_id: Uuid,
    owner_name: String,
    /// `pending`, `approved`, `rejected`, `used` or `expired`.
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    decided_by: Option<Uuid>,
    decided_by_name: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    decided_at: Option<OffsetDateTime>,
    operation_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    used_at: Option<OffsetDateTime>,
    may_decide: bool,
}

impl From<ApprovalLine> for ApiApproval {
    fn from(l: ApprovalLine) -> Self {
        let a = l.a;
        ApiApproval {
            id: a.id,
            device_serial: a.device_serial,
            slot: a.slot,
            requester_id: a.requester_id,
            requester_name: a.requester_name,
            owner_id: a.owner_id,
            owner_name: a.owner_name,
            status: l.status,
            created_at: a.created_at,
            expires_at: a.expires_at,
            decided_by: a.decided_by,
            decided_by_name: a.decided_by_name,
            decided_at: a.decided_at,
            operation_id: a.operation_id,
            used_at: a.used_at,
            may_decide: l.may_decide,
        }
    }
}

async fn api_list(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Json<Vec<ApiApproval>>, AppError> {
    let rows = lines(&me, approvals::list(&state.db, &me).await?);
    Ok(Json(rows.into_iter().map(ApiApproval::from).collect()))
}

async fn api_approve(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<Uuid>,
) -> Result<Json<ApprovalRow>, AppError> {
    Ok(Json(
        approvals::decide(&state.db, &me, &meta, id, Decision::Approve).await?,
    ))
}

async fn api_reject(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<Uuid>,
) -> Result<Json<ApprovalRow>, AppError> {
    Ok(Json(
        approvals::decide(&state.db, &me, &meta, id, Decision::Reject).await?,
    ))
}
