//! CSRF protection for every state-changing request (anything but GET, HEAD,
//! OPTIONS), forms and htmx alike, without tokens: browsers label where a
//! request comes from, and we refuse anything a browser labels cross-origin.
//!
//! - `Sec-Fetch-Site`, when present, must be `same-origin` (or `none`, a
//!   user-initiated navigation). `same-site` is refused too: a sibling
//!   subdomain is not trusted.
//! - `Origin`, when present, must be `server.public_url`'s origin or exactly
//!   the origin the request was addressed to (`Host`) when that Host is one
//!   of this server's names ([`Config::host_allowed`]). A DNS-rebinding page
//!   has an Origin equal to its Host, but its Host is not one of ours (and
//!   [`check_host`] refuses such a request before it gets here).
//! - Requests with neither header do not come from a browser (curl, scripts)
//!   and pass; they cannot ride on a victim's cookie. The cookie is also
//!   `SameSite=Strict`, so even a browser that sent neither would not attach it.
//! - A request with `Authorization: Bearer` passes: browsers never add that
//!   header on their own, and a cross-origin script cannot without CORS,
//!   which Kleidia does not allow.
//!
//! A refused request that carries the session cookie (one that would have
//! acted as somebody) is audited (`request.cross_site_refused`). One
//! without it cannot act for anyone and is only logged, so that anonymous
//! traffic cannot fill the audit log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kleidia_protocol::ErrorBody;

use crate::audit::{self, AuditEvent};
use crate::config::Config;
use crate::error::AppError;
use crate::state::AppState;

pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn protect(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match cross_site(&state.config, &req) {
        None => next.run(req).await,
        Some(why) => {
            let event = refusal(&state, &req, &why);
            drop(req);
            if let Some(event) = event {
                record(&state.db, event).await;
            }
            AppError::Forbidden("cross-site request refused".into()).into_response()
        }
    }
}

/// Why `req` must be refused as cross-site, if it must.
fn cross_site(config: &Config, req: &Request) -> Option<String> {
    if is_safe(req.method()) {
        return None;
    }
    let h = req.headers();
    let bearer = h
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if bearer {
        return None;
    }
    if let Some(site) = h.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    if let Some(origin) = h.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let public = config.server.public_url.origin().ascii_serialization();
        let host = h.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let same_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| {
                !host.is_empty() && o.eq_ignore_ascii_case(host) && config.host_allowed(host)
            });
        if origin != public && !same_host {
            return Some(format!("Origin: {origin}"));
        }
    }
    None
}

/// Paths that answer whatever the `Host`: the probes (Kubernetes addresses
/// the pod by IP), `/metrics`, which has its own token, and the public PKI
/// documents under `/pki/` (CA certificates, CRLs, OCSP: public, without
/// cookies, fetched by relying parties under whatever name they were given).
const ANY_HOST: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

fn answers_any_host(path: &str) -> bool {
    ANY_HOST.contains(&path) || path.starts_with("/pki/")
}

/// Refuse (421) a request whose `Host` is not one of this server's names:
/// an outside page that rebinds its own name to Kleidia's address reaches
/// it with its own Host, and gets nothing (no session, no sign-in).
pub async fn check_host(State(config): State<Arc<Config>>, req: Request, next: Next) -> Response {
    if answers_any_host(req.uri().path()) {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    // No Host at all is not a browser (every browser sends one, and a
    // rebinding page's request carries the page's name), so it passes.
    if host.is_empty() || config.host_allowed(host) {
        return next.run(req).await;
    }
    tracing::warn!(
        host,
        path = req.uri().path(),
        "request for an unknown Host refused"
    );
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(ErrorBody {
            error: "misdirected_request".into(),
            message: "this server does not answer for that host name".into(),
        }),
    )
        .into_response()
}

/// Log the refusal; the audit event to record if the request carried the
/// session cookie.
fn refusal(state: &AppState, req: &Request, why: &str) -> Option<AuditEvent> {
    let (method, path) = (req.method().as_str(), req.uri().path());
    tracing::warn!(method, path, why, "cross-site request refused");
    if !carries_session_cookie(req, state.config.session_cookie_name()) {
        return None;
    }
    let meta = super::extract::client_meta_of(
        req.headers(),
        req.extensions(),
        state.config.server.client_ip_header.as_deref(),
    );
    let event = AuditEvent::new("request.cross_site_refused")
        .actor_named(None, "unknown")
        .details(serde_json::json!({
            "method": method,
            "path": path.chars().take(200).collect::<String>(),
            "why": why.chars().take(200).collect::<String>(),
        }))
        .from_client(&meta);
    Some(event)
}

async fn record(db: &sqlx::PgPool, event: AuditEvent) {
    if let Err(e) = audit::record_alone(db, event).await {
        // Refused either way; a missing audit row must not let it through.
        tracing::error!(error = %e, "could not audit a cross-site refusal");
    }
}

fn carries_session_cookie(req: &Request, name: &str) -> bool {
    req.headers()
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim().split_once('=').is_some_and(|(k, _)| k == name))
}
