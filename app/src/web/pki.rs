//! The public PKI documents, without login, cached briefly: the issuing CA
//! (`/pki/ca` DER, `/pki/ca.pem`), the chain (`/pki/ca_chain`, PEM,
//! intermediate then root), the CRL (`/pki/crl` DER, `/pki/crl.pem`), and the
//! root's certificate and CRL (`/pki/root/ca`, `/pki/root/crl`) that the
//! intermediate's own AIA and CDP point to.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::RouteDef;
use crate::auth::Access;
use crate::error::AppError;
use crate::fleet::pki::Pki;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/pki/ca", Access::Public, ca),
        RouteDef::get("/pki/ca.pem", Access::Public, ca_pem),
        RouteDef::get("/pki/ca_chain", Access::Public, ca_chain),
        RouteDef::get("/pki/crl", Access::Public, crl),
        RouteDef::get("/pki/crl.pem", Access::Public, crl_pem),
        RouteDef::get("/pki/root/ca", Access::Public, root_ca),
        RouteDef::get("/pki/root/crl", Access::Public, root_crl),
    ]
}

enum Mount {
    Issuing,
    Root,
}

async fn serve(
    state: &AppState,
    mount: Mount,
    what: &str,
    mime: &'static str,
) -> Result<Response, AppError> {
    let pki = match mount {
        Mount::Issuing => state.pki(),
        Mount::Root => Pki {
            mount: &state.config.openbao.pki_root_mount,
            ..state.pki()
        },
    };
    let Some(body) = pki.document(what).await? else {
        return Ok((
            StatusCode::NOT_FOUND,
            "the CA is not set up (run kleidia bootstrap)",
        )
            .into_response());
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=30"),
        ],
        body,
    )
        .into_response())
}

async fn ca(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca", "application/pkix-cert").await
}
async fn ca_pem(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca/pem", "application/x-pem-file").await
}
async fn ca_chain(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca_chain", "application/x-pem-file").await
}
async fn crl(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "crl", "application/pkix-crl").await
}
async fn crl_pem(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "crl/pem", "application/x-pem-file").await
}
async fn root_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Root, "ca", "application/pkix-cert").await
}
async fn root_crl(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Root, "crl", "application/pkix-crl").await
}
