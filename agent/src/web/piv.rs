//! The state-changing endpoints: each takes a [`Signed`] request, has the
//! ticket checked, decrypts its secrets and runs one card operation.

use axum::extract::State;
use axum::Json;
use kleidia_protocol::agent::*;
use kleidia_protocol::ticket::{EncryptedSecret, Operation};

use super::{blocking, Signed};
use crate::card::{self, CardError, CsrRequest, ReaderPolicy};
use crate::error::ApiError;
use crate::state::{AppState, Authorized};

fn done(auth: &Authorized, operation: Operation, serial: u32) -> Json<OperationDone> {
    settled(auth, operation, serial, None)
}

fn settled(
    auth: &Authorized,
    operation: Operation,
    serial: u32,
    settled: Option<card::Settled>,
) -> Json<OperationDone> {
    tracing::info!(operation = operation.as_str(), serial, ticket_id = %auth.claims.id, settled = settled.map(|s| s.as_str()), "operation done");
    Json(OperationDone {
        ok: true,
        operation,
        serial,
        ticket_id: auth.claims.id.to_string(),
        settled,
        oath: None,
    })
}

/// Run a card operation holding the YubiKey's busy guard until it finishes,
/// even if the client goes away meanwhile.
async fn run<T: Send + 'static>(
    st: &AppState,
    auth: &mut Authorized,
    f: impl FnOnce() -> Result<T, CardError> + Send + 'static,
) -> Result<T, ApiError> {
    let guard = auth.guard.take();
    let operation = auth.claims.operation;
    let serial = auth.claims.serial;
    let policy = st.reader_policy();
    let r = blocking(st, move || {
        let _guard = guard;
        f().map_err(|e| card::explain_failure(serial, policy, e))
    })
    .await;
    if let Err(e) = &r {
        tracing::warn!(
            operation = operation.as_str(),
            serial,
            code = e.code,
            "operation failed"
        );
    }
    r
}

/// The PIN, PUK and management key changes: decrypt the current and the new
/// value (in that order), then make the change on the card (first finding
/// out which value it holds when the signed parameters say `settle`).
async fn change<P: OperationParams + Send + Sync>(
    st: &AppState,
    req: SignedRequest<P>,
    secrets: fn(&P) -> ([&EncryptedSecret; 2], bool),
    change: impl FnOnce(u32, ReaderPolicy, &[u8], &[u8], bool) -> Result<Option<card::Settled>, CardError>
        + Send
        + 'static,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let ([current, new], settle) = secrets(&p);
    let current = st.decrypt(&auth, current)?;
    let new = st.decrypt(&auth, new)?;
    let (serial, policy) = (p.serial(), st.reader_policy());
    let found = run(st, &mut auth, move || {
        change(serial, policy, &current, &new, settle)
    })
    .await?;
    Ok(settled(&auth, P::OPERATION, serial, found))
}

pub(super) async fn set_pin(
    State(st): State<AppState>,
    Signed(req): Signed<SetPinParams>,
) -> Result<Json<OperationDone>, ApiError> {
    change(
        &st,
        req,
        |p| ([&p.current_pin, &p.new_pin], p.settle),
        card::set_pin,
    )
    .await
}

pub(super) async fn set_puk(
    State(st): State<AppState>,
    Signed(req): Signed<SetPukParams>,
) -> Result<Json<OperationDone>, ApiError> {
    change(
        &st,
        req,
        |p| ([&p.current_puk, &p.new_puk], p.settle),
        card::set_puk,
    )
    .await
}

pub(super) async fn unblock_pin(
    State(st): State<AppState>,
    Signed(req): Signed<UnblockPinParams>,
) -> Result<Json<OperationDone>, ApiError> {
    change(
        &st,
        req,
        |p| ([&p.puk, &p.new_pin], p.settle),
        card::unblock_pin,
    )
    .await
}

pub(super) async fn rotate_management_key(
    State(st): State<AppState>,
    Signed(req): Signed<RotateManagementKeyParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let (alg, touch) = (req.params.algorithm, req.params.require_touch);
    change(
        &st,
        req,
        |p| ([&p.current_management_key, &p.new_management_key], p.settle),
        move |serial, policy, current, new, settle| {
            card::rotate_management_key(serial, policy, current, new, alg, touch, settle)
        },
    )
    .await
}

pub(super) async fn generate_csr(
    State(st): State<AppState>,
    Signed(req): Signed<GenerateCsrParams>,
) -> Result<Json<GeneratedCsr>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let mgm = st.decrypt(&auth, &p.management_key)?;
    let pin = p.pin.as_ref().map(|s| st.decrypt(&auth, s)).transpose()?;
    let policy = st.reader_policy();
    let (serial, slot, algorithm) = (p.serial, p.slot, p.algorithm);
    let r = run(&st, &mut auth, move || {
        card::generate_csr(
            p.serial,
            policy,
            CsrRequest {
                slot: p.slot,
                algorithm: p.algorithm,
                pin_policy: p.pin_policy,
                touch_policy: p.touch_policy,
                subject: &p.subject,
                management_key: &mgm,
                pin: pin.as_ref().map(|p| p.as_slice()),
            },
        )
    })
    .await?;
    tracing::info!(operation = Operation::GenerateCsr.as_str(), serial, ticket_id = %auth.claims.id, "operation done");
    Ok(Json(GeneratedCsr {
        serial,
        slot,
        algorithm,
        csr_pem: r.csr_pem,
        public_key_pem: r.public_key_pem,
        attestation_chain_pem: r.attestation_chain_pem,
        ticket_id: auth.claims.id.to_string(),
    }))
}

pub(super) async fn import_certificate(
    State(st): State<AppState>,
    Signed(req): Signed<ImportCertificateParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let mgm = st.decrypt(&auth, &p.management_key)?;
    let policy = st.reader_policy();
    let serial = p.serial;
    run(&st, &mut auth, move || {
        card::import_certificate(p.serial, policy, p.slot, &p.certificate_pem, &mgm)
    })
    .await?;
    Ok(done(&auth, Operation::ImportCertificate, serial))
}

pub(super) async fn attest(
    State(st): State<AppState>,
    Signed(req): Signed<AttestParams>,
) -> Result<Json<Attestation>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let policy = st.reader_policy();
    let chain = run(&st, &mut auth, move || {
        card::attest(p.serial, policy, p.slot)
    })
    .await?;
    Ok(Json(Attestation {
        serial: p.serial,
        slot: p.slot,
        attestation_chain_pem: chain,
        ticket_id: auth.claims.id.to_string(),
    }))
}

pub(super) async fn reset(
    State(st): State<AppState>,
    Signed(req): Signed<ResetParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let policy = st.reader_policy();
    let oath = run(&st, &mut auth, move || card::reset(p.serial, policy)).await?;
    tracing::info!(
        serial = p.serial,
        oath = oath.as_str(),
        "OATH application after the wipe"
    );
    let Json(mut answer) = done(&auth, Operation::Reset, p.serial);
    answer.oath = Some(oath);
    Ok(Json(answer))
}

/// Sign the server's presence challenge for one operation, over this agent's
/// own key fingerprint (not one the page names): the server then encrypts
/// secrets only to the key whose agent stands next to the card.
pub(super) async fn prove_presence(
    State(st): State<AppState>,
    Signed(req): Signed<ProvePresenceParams>,
) -> Result<Json<PresenceProof>, ApiError> {
    use base64::Engine as _;
    let p = req.params;
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(&p.nonce)
        .ok()
        .filter(|n| n.len() == PRESENCE_NONCE_LEN)
        .ok_or_else(|| ApiError::invalid("nonce must be base64 of 32 bytes"))?;
    let operation_id = uuid::Uuid::parse_str(&p.operation_id)
        .map_err(|_| ApiError::invalid("operation_id must be a UUID"))?;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let fingerprint = auth.key.fingerprint.clone();
    let digest = presence_digest(&nonce, &operation_id, &fingerprint);
    let policy = st.reader_policy();
    let (serial, establish) = (p.serial, p.establish);
    let r = run(&st, &mut auth, move || {
        card::prove_presence(serial, policy, &digest, establish)
    })
    .await?;
    tracing::info!(operation = Operation::ProvePresence.as_str(), serial, establish, ticket_id = %auth.claims.id, "operation done");
    let b64 = base64::engine::general_purpose::STANDARD;
    let (public_key_pem, attestation_chain_pem) = match r.established {
        Some((k, c)) => (Some(k), Some(c)),
        None => (None, None),
    };
    Ok(Json(PresenceProof {
        signature: b64.encode(&r.signature),
        agent_key_fingerprint: fingerprint,
        public_key_pem,
        attestation_chain_pem,
        ticket_id: auth.claims.id.to_string(),
    }))
}
