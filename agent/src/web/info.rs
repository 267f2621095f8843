//! The read-only endpoints: the agent itself, and what the cards say.

use axum::extract::State;
use axum::Json;
use kleidia_protocol::agent::{
    CheckDefaults, Discover, Health, PivInfo, PubKey, SystemInfo, WellKnown,
};

use super::{reading, SerialArg};
use crate::card;
use crate::error::ApiError;
use crate::state::AppState;

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Waits for the agent key while the agent starts (`/health` does not).
pub(super) async fn well_known(State(st): State<AppState>) -> Result<Json<WellKnown>, ApiError> {
    let key = st.key().await?;
    Ok(Json(WellKnown {
        service: "kleidia-agent".into(),
        status: "ok".into(),
        version: version(),
        agent_key_fingerprint: key.fingerprint.clone(),
    }))
}

/// Answers at once: `starting` while the agent key is being made, then `ok`.
pub(super) async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: st.key_status().into(),
        version: version(),
        decryptions: st.decryptions(),
    })
}

pub(super) async fn pubkey(State(st): State<AppState>) -> Result<Json<PubKey>, ApiError> {
    let key = st.key().await?;
    Ok(Json(PubKey {
        public_key_pem: key.public_pem.clone(),
        agent_key_fingerprint: key.fingerprint.clone(),
        algorithm: "RSA-OAEP-256".into(),
        bits: crate::state::AGENT_KEY_BITS,
    }))
}

pub(super) async fn system_info(State(st): State<AppState>) -> Result<Json<SystemInfo>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let key = st.key().await?;
    Ok(Json(SystemInfo {
        version: version(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        pid: std::process::id(),
        started_at: st.started_at,
        kleidia_url: st.config.kleidia_url.to_string(),
        allow_virtual_readers: st.config.allow_virtual_readers,
        ticket_key_loaded: st.ticket_key_loaded(),
        agent_key_fingerprint: key.fingerprint.clone(),
        decryptions: st.decryptions(),
        tickets_accepted: st.counters.tickets_accepted.load(Relaxed),
        tickets_refused: st.counters.tickets_refused.load(Relaxed),
    }))
}

pub(super) async fn discover(State(st): State<AppState>) -> Result<Json<Discover>, ApiError> {
    let policy = st.reader_policy();
    let yubikeys = reading(&st, move || card::discover(policy)).await?;
    Ok(Json(Discover { yubikeys }))
}

pub(super) async fn piv_info(
    State(st): State<AppState>,
    SerialArg(serial): SerialArg,
) -> Result<Json<PivInfo>, ApiError> {
    let policy = st.reader_policy();
    Ok(Json(
        reading(&st, move || card::info(serial, policy)).await?,
    ))
}

pub(super) async fn check_defaults(
    State(st): State<AppState>,
    SerialArg(serial): SerialArg,
) -> Result<Json<CheckDefaults>, ApiError> {
    let policy = st.reader_policy();
    let (metadata_supported, defaults) =
        reading(&st, move || card::check_defaults(serial, policy)).await?;
    Ok(Json(CheckDefaults {
        serial,
        metadata_supported,
        defaults,
    }))
}
