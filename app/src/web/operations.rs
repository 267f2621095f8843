//! Operations on a YubiKey through the caller's agent (`/api/yubikey/…`):
//! authorise, resume an unconfirmed secret change, report the result, have
//! the generated key's CSR signed; and `/enroll`, the wizard that runs them.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::devices::CHANGERS;
use super::extract::{parse_uuid, JsonBody};
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::Serial;
use crate::error::AppError;
use crate::fleet::certificates::{self, SignCsrRequest, SignedCertificate};
use crate::fleet::db::OperationRow;
use crate::fleet::operations::{self, AuthorizedOperation, OperationRequest, OperationResult};
use crate::fleet::presence::{self, PresenceChallenge, PresenceSubmission, Purpose};
use crate::fleet::settings;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::post("/api/yubikey/{serial}/operations", CHANGERS, authorize)
            .takes::<OperationRequest>()
            .gives::<PresenceChallenge>(202, "the operation releases secrets: prove the card first")
            .gives::<AuthorizedOperation>(201, "authorised: the ticket for the agent"),
        RouteDef::post("/api/yubikey/{serial}/secrets", CHANGERS, secrets)
            .takes::<SecretsRequest>()
            .gives::<PresenceChallenge>(202, "prove the card to resume the unconfirmed change"),
        RouteDef::post(
            "/api/yubikey/{serial}/operations/{op}/result",
            CHANGERS,
            report,
        )
        .takes::<OperationResult>()
        .gives::<OperationRow>(200, "the operation as recorded"),
        RouteDef::post(
            "/api/yubikey/{serial}/operations/{op}/presence",
            CHANGERS,
            presence,
        )
        .takes::<PresenceSubmission>()
        .gives::<AuthorizedOperation>(201, "the card is proven: the operation is authorised")
        .gives::<AuthorizedOperation>(200, "the card is proven: the unconfirmed change resumes"),
        RouteDef::post("/api/yubikey/{serial}/sign-csr", CHANGERS, sign_csr)
            .takes::<SignCsrRequest>()
            .gives::<SignedCertificate>(201, "the signed certificate"),
        RouteDef::get("/enroll", CHANGERS, enroll_page),
    ]
}

async fn authorize(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(req): JsonBody<OperationRequest>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    // An operation that releases a secret first gets a presence challenge
    // for the card (202); the secrets come from `presence` below.
    if presence::needs_presence(req.operation) {
        let c = operations::challenge(&state.db, &state.fleet, &me, &meta, serial, &req);
        return Ok((StatusCode::ACCEPTED, Json(json!(c.await?))));
    }
    let escrow = state.escrow();
    let op = operations::authorize(
        &state.db,
        &escrow,
        &state.fleet,
        &me,
        &meta,
        serial,
        req,
        None,
    );
    Ok((StatusCode::CREATED, Json(json!(op.await?))))
}

/// The card's answer to a presence challenge; when it checks out, the
/// operation is authorised (201) or the unconfirmed change resumed (200).
async fn presence(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path((serial, op)): Path<(String, String)>,
    JsonBody(sub): JsonBody<PresenceSubmission>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    let op = parse_uuid(&op, "operation id")?;
    let proven = presence::verify(&state.db, &state.fleet, &me, &meta, serial, op, &sub).await?;
    let escrow = state.escrow();
    match proven.purpose() {
        Purpose::Authorize => {
            let mut req: OperationRequest = serde_json::from_value(proven.request().clone())
                .map_err(|e| AppError::Internal(e.into()))?;
            req.new_pin = sub.new_pin;
            let (db, fleet) = (&state.db, &state.fleet);
            let authorized =
                operations::authorize(db, &escrow, fleet, &me, &meta, serial, req, Some(&proven));
            Ok((StatusCode::CREATED, Json(authorized.await?)))
        }
        Purpose::Resume => {
            let again = operations::reissue(
                &state.db,
                &escrow,
                &state.fleet,
                &me,
                &meta,
                serial,
                op,
                &proven,
            );
            Ok((StatusCode::OK, Json(again.await?)))
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretsRequest {
    #[schema(format = Uuid)]
    operation_id: String,
}

/// Resume an unconfirmed secret change. A POST (and so behind the CSRF
/// check), never a GET: it opens a presence challenge and, once proven,
/// issues a new ticket and rewrites the operation, and a GET can be fired
/// by any page with an `<img>` (issue 14, §4).
async fn secrets(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(q): JsonBody<SecretsRequest>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    let op = parse_uuid(&q.operation_id, "operation_id")?;
    // Resuming releases secrets too: a presence challenge first.
    let c = operations::resume_challenge(&state.db, &state.fleet, &me, &meta, serial, op);
    Ok((StatusCode::ACCEPTED, Json(c.await?)))
}

async fn report(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path((serial, op)): Path<(String, String)>,
    JsonBody(r): JsonBody<OperationResult>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    let op = parse_uuid(&op, "operation id")?;
    let pki = state.pki();
    Ok(Json(
        operations::report(&state.db, &pki, &me, &meta, serial, op, r).await?,
    ))
}

async fn sign_csr(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(serial): Path<String>,
    JsonBody(req): JsonBody<SignCsrRequest>,
) -> Result<impl IntoResponse, AppError> {
    let serial = Serial::parse(&serial)?;
    let pki = state.pki();
    let signed = certificates::sign_csr(&state.db, &pki, &state.fleet, &me, &meta, serial, req);
    Ok((StatusCode::CREATED, Json(signed.await?)))
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
        Some(s) => Serial::parse(s)?.to_string(),
        None => String::new(),
    };
    render(&EnrollPage {
        me: nav(&me),
        pin_min: p.pin_min_length,
        pin_max: p.pin_max_length,
        serial,
    })
}
