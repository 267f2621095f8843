//! Revoking a certificate: the device page's form (`/certificates/{cert}/revoke`)
//! and the API (`/api/certificates/{cert}/revoke`). Signing is an operation
//! (`web::operations`); the public CA documents are `web::pki`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};

use super::extract::{parse_uuid, JsonBody};
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::fleet::certificates::{self, RevokeRequest};
use crate::fleet::db::CertificateRow;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::post("/api/certificates/{cert}/revoke", Access::OPERATORS, revoke)
            .takes::<RevokeRequest>()
            .gives::<CertificateRow>(200, "the certificate, revoked"),
        RouteDef::post(
            "/certificates/{cert}/revoke",
            Access::OPERATORS,
            revoke_form,
        ),
    ]
}

async fn revoke_one(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    cert: &str,
    r: RevokeRequest,
) -> Result<CertificateRow, AppError> {
    let id = parse_uuid(cert, "certificate id")?;
    Ok(certificates::revoke(&state.db, &state.pki(), me, meta, id, r).await?)
}

async fn revoke(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(cert): Path<String>,
    JsonBody(r): JsonBody<RevokeRequest>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(revoke_one(&state, &me, &meta, &cert, r).await?))
}

/// The form's field is the same as the API's body.
async fn revoke_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(cert): Path<String>,
    Form(f): Form<RevokeRequest>,
) -> Result<Response, AppError> {
    let c = revoke_one(&state, &me, &meta, &cert, f).await?;
    Ok(Redirect::to(&format!("/devices/{}", c.device_serial)).into_response())
}
