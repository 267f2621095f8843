//! Router, the request guard (Host, Origin/CORS, content type) and handlers.

mod guard;
mod info;
mod piv;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use kleidia_protocol::agent::codes;
use kleidia_protocol::ticket::Operation;

use crate::card::CardError;
use crate::error::ApiError;
use crate::state::AppState;

pub use guard::{SerialArg, Signed, MAX_BODY_BYTES};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/kleidia-agent", get(info::well_known))
        .route("/health", get(info::health))
        .route("/pubkey", get(info::pubkey))
        .route("/system/info", get(info::system_info))
        .route("/discover", get(info::discover))
        .route("/piv/info", get(info::piv_info))
        .route("/piv/check-defaults", get(info::check_defaults))
        .route(Operation::SetPin.path(), post(piv::set_pin))
        .route(Operation::SetPuk.path(), post(piv::set_puk))
        .route(Operation::UnblockPin.path(), post(piv::unblock_pin))
        .route(
            Operation::RotateManagementKey.path(),
            post(piv::rotate_management_key),
        )
        .route(Operation::GenerateCsr.path(), post(piv::generate_csr))
        .route(
            Operation::ImportCertificate.path(),
            post(piv::import_certificate),
        )
        .route(Operation::Attest.path(), post(piv::attest))
        .route(Operation::Reset.path(), post(piv::reset))
        .route(Operation::ProvePresence.path(), post(piv::prove_presence))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed: reads are GET, changes are POST",
    )
}

/// Run PC/SC work off the async threads, one card session at a time: opening
/// a key SELECTs the PIV application on every allowed card, which would
/// reset the PIN and management key state of an operation running on
/// another key. (Same-key concurrency is refused earlier with 409.)
/// [`blocking`] for a read of what a card says. Reads do not claim the
/// YubiKey (an operation is not refused with 409 because a page or another
/// local process polls `/piv/info`), and they queue for the card one at a
/// time behind the state's `read_gate`: the card lock is fair (first come,
/// first served), so an operation waits for at most the read in progress
/// and one more, however many reads are sent.
async fn reading<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> Result<T, CardError> + Send + 'static,
) -> Result<T, ApiError> {
    let _gate = st.read_gate.lock().await;
    blocking(st, f).await
}

async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> Result<T, CardError> + Send + 'static,
) -> Result<T, ApiError> {
    let card = st.card_lock.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _card = card;
        f()
    })
    .await
    .map_err(|e| ApiError::internal("YubiKey task failed", e))?
    .map_err(ApiError::from)
}
