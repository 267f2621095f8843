//! Router, the request guard (Host, Origin/CORS, content type) and handlers.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kleidia_protocol::agent::*;
use kleidia_protocol::ticket::Operation;
use serde::de::DeserializeOwned;

use crate::card::{self, CardError, CsrRequest};
use crate::error::ApiError;
use crate::state::{AppState, Authorized};

/// Largest request body accepted (a certificate PEM fits many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/kleidia-agent", get(well_known))
        .route("/health", get(health))
        .route("/pubkey", get(pubkey))
        .route("/system/info", get(system_info))
        .route("/discover", get(discover))
        .route("/piv/info", get(piv_info))
        .route("/piv/check-defaults", get(check_defaults))
        .route("/piv/set-pin", post(set_pin))
        .route("/piv/set-puk", post(set_puk))
        .route("/piv/unblock-pin", post(unblock_pin))
        .route("/piv/rotate-management-key", post(rotate_management_key))
        .route("/piv/generate-csr", post(generate_csr))
        .route("/piv/import-certificate", post(import_certificate))
        .route("/piv/attest", post(attest))
        .route("/piv/reset", post(reset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
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

/// Only a loopback name with our own port: a page on a rebound DNS name
/// (evil.example → 127.0.0.1) sends its own name here and is refused.
fn host_allowed(headers: &HeaderMap, port: u16) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
    .contains(&host)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Runs before every handler. The order matters: nothing reaches a handler
/// (and so nothing reaches a ticket check, a decryption or a card) unless
/// Host, Origin and, for POST, the content type are right.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !host_allowed(headers, st.port) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            codes::BAD_HOST,
            "the Host header must be 127.0.0.1, localhost or [::1] with the agent's port",
        )
        .into_response();
    }
    // Exact, byte-for-byte match with the configured Kleidia origin: no
    // prefix/suffix matching, no `null`, no http variant of an https origin.
    let origin = headers.get(header::ORIGIN).cloned();
    let origin_ok = origin
        .as_ref()
        .is_some_and(|o| o.as_bytes() == st.config.allowed_origin.as_bytes());

    if req.method() == Method::OPTIONS {
        let Some(origin) = origin.filter(|_| origin_ok) else {
            return origin_refused();
        };
        let method_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| m == "GET" || m == "POST");
        if !method_ok {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                codes::METHOD_NOT_ALLOWED,
                "only GET and POST are allowed",
            )
            .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        // Chrome's Private Network Access: a public https page may call loopback
        // only if the loopback service opts in on the preflight.
        h.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    }

    let liveness_probe =
        origin.is_none() && req.method() == Method::GET && req.uri().path() == "/health";
    if !origin_ok && !liveness_probe {
        return origin_refused();
    }
    if req.method() == Method::POST && !is_json(req.headers()) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "state-changing requests must be POST with Content-Type: application/json",
        )
        .into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Some(origin) = origin.filter(|_| origin_ok) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn origin_refused() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        codes::ORIGIN_NOT_ALLOWED,
        "this origin may not use the Kleidia agent",
    )
    .into_response()
}

/// A JSON body of at most [`MAX_BODY_BYTES`] holding a [`SignedRequest`].
pub struct Signed<P>(pub SignedRequest<P>);

impl<S: Send + Sync, P: DeserializeOwned> FromRequest<S> for Signed<P> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            })?;
        serde_json::from_slice(&bytes)
            .map(Signed)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
    }
}

/// `?serial=` of the read-only card endpoints.
pub struct SerialArg(pub u32);

impl<S: Send + Sync> FromRequestParts<S> for SerialArg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<SerialQuery>::try_from_uri(&parts.uri)
            .map(|q| SerialArg(q.0.serial))
            .map_err(|_| ApiError::invalid("expected ?serial=<YubiKey serial number>"))
    }
}

/// Run PC/SC work off the async threads, one card session at a time: opening
/// a key SELECTs the PIV application on every allowed card, which would
/// reset the PIN and management key state of an operation running on
/// another key. (Same-key concurrency is refused earlier with 409.)
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

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

async fn well_known(State(st): State<AppState>) -> Json<WellKnown> {
    Json(WellKnown {
        service: "kleidia-agent".into(),
        status: "ok".into(),
        version: version(),
        agent_key_fingerprint: st.key.fingerprint.clone(),
    })
}

async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: version(),
        decryptions: st.decryptions(),
    })
}

async fn pubkey(State(st): State<AppState>) -> Json<PubKey> {
    Json(PubKey {
        public_key_pem: st.key.public_pem.clone(),
        agent_key_fingerprint: st.key.fingerprint.clone(),
        algorithm: "RSA-OAEP-256".into(),
        bits: crate::state::AGENT_KEY_BITS,
    })
}

async fn system_info(State(st): State<AppState>) -> Json<SystemInfo> {
    use std::sync::atomic::Ordering::Relaxed;
    Json(SystemInfo {
        version: version(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        pid: std::process::id(),
        started_at: st.started_at,
        kleidia_url: st.config.kleidia_url.to_string(),
        allow_virtual_readers: st.config.allow_virtual_readers,
        ticket_key_loaded: st.ticket_key_loaded(),
        agent_key_fingerprint: st.key.fingerprint.clone(),
        decryptions: st.decryptions(),
        tickets_accepted: st.counters.tickets_accepted.load(Relaxed),
        tickets_refused: st.counters.tickets_refused.load(Relaxed),
    })
}

async fn discover(State(st): State<AppState>) -> Result<Json<Discover>, ApiError> {
    let policy = st.reader_policy();
    let yubikeys = blocking(&st, move || card::discover(policy)).await?;
    Ok(Json(Discover { yubikeys }))
}

async fn piv_info(
    State(st): State<AppState>,
    SerialArg(serial): SerialArg,
) -> Result<Json<PivInfo>, ApiError> {
    let guard = st.claim(serial)?;
    let policy = st.reader_policy();
    Ok(Json(
        blocking(&st, move || {
            let _guard = guard;
            card::info(serial, policy)
        })
        .await?,
    ))
}

async fn check_defaults(
    State(st): State<AppState>,
    SerialArg(serial): SerialArg,
) -> Result<Json<CheckDefaults>, ApiError> {
    let guard = st.claim(serial)?;
    let policy = st.reader_policy();
    let (metadata_supported, defaults) = blocking(&st, move || {
        let _guard = guard;
        card::check_defaults(serial, policy)
    })
    .await?;
    Ok(Json(CheckDefaults {
        serial,
        metadata_supported,
        defaults,
    }))
}

fn done(auth: &Authorized, operation: Operation, serial: u32) -> Json<OperationDone> {
    tracing::info!(operation = operation.as_str(), serial, ticket_id = %auth.claims.id, "operation done");
    Json(OperationDone {
        ok: true,
        operation,
        serial,
        ticket_id: auth.claims.id.to_string(),
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

async fn set_pin(
    State(st): State<AppState>,
    Signed(req): Signed<SetPinParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let current = st.decrypt(&auth, &p.current_pin)?;
    let new = st.decrypt(&auth, &p.new_pin)?;
    let policy = st.reader_policy();
    run(&st, &mut auth, move || {
        card::set_pin(p.serial, policy, &current, &new)
    })
    .await?;
    Ok(done(&auth, Operation::SetPin, p.serial))
}

async fn set_puk(
    State(st): State<AppState>,
    Signed(req): Signed<SetPukParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let current = st.decrypt(&auth, &p.current_puk)?;
    let new = st.decrypt(&auth, &p.new_puk)?;
    let policy = st.reader_policy();
    run(&st, &mut auth, move || {
        card::set_puk(p.serial, policy, &current, &new)
    })
    .await?;
    Ok(done(&auth, Operation::SetPuk, p.serial))
}

async fn unblock_pin(
    State(st): State<AppState>,
    Signed(req): Signed<UnblockPinParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let puk = st.decrypt(&auth, &p.puk)?;
    let new = st.decrypt(&auth, &p.new_pin)?;
    let policy = st.reader_policy();
    run(&st, &mut auth, move || {
        card::unblock_pin(p.serial, policy, &puk, &new)
    })
    .await?;
    Ok(done(&auth, Operation::UnblockPin, p.serial))
}

async fn rotate_management_key(
    State(st): State<AppState>,
    Signed(req): Signed<RotateManagementKeyParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let current = st.decrypt(&auth, &p.current_management_key)?;
    let new = st.decrypt(&auth, &p.new_management_key)?;
    let policy = st.reader_policy();
    let (alg, touch) = (p.algorithm, p.require_touch);
    run(&st, &mut auth, move || {
        card::rotate_management_key(p.serial, policy, &current, &new, alg, touch)
    })
    .await?;
    Ok(done(&auth, Operation::RotateManagementKey, p.serial))
}

async fn generate_csr(
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
    tracing::info!(operation = "generate_csr", serial, ticket_id = %auth.claims.id, "operation done");
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

async fn import_certificate(
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

async fn attest(
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

async fn reset(
    State(st): State<AppState>,
    Signed(req): Signed<ResetParams>,
) -> Result<Json<OperationDone>, ApiError> {
    let p = req.params;
    let mut auth = st.authorize(&req.ticket, &p).await?;
    let policy = st.reader_policy();
    run(&st, &mut auth, move || card::reset(p.serial, policy)).await?;
    Ok(done(&auth, Operation::Reset, p.serial))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_loopback_hosts_with_the_agents_own_port_pass() {
        for ok in [
            "127.0.0.1:56123",
            "localhost:56123",
            "LOCALHOST:56123",
            "[::1]:56123",
        ] {
            assert!(host_allowed(&headers(header::HOST, ok), 56123), "{ok}");
        }
        for bad in [
            "evil.example:56123",
            "127.0.0.1",
            "127.0.0.1:56124",
            "localhost.evil:56123",
            "[::1]",
        ] {
            assert!(!host_allowed(&headers(header::HOST, bad), 56123), "{bad}");
        }
        assert!(!host_allowed(&HeaderMap::new(), 56123));
    }

    #[test]
    fn only_application_json_counts_as_json() {
        assert!(is_json(&headers(header::CONTENT_TYPE, "application/json")));
        assert!(is_json(&headers(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8"
        )));
        for bad in [
            "text/plain",
            "application/jsonp",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(!is_json(&headers(header::CONTENT_TYPE, bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
