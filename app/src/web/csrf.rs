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

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kleidia_protocol::ErrorBody;

use crate::config::Config;
use crate::error::AppError;

pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn protect(State(config): State<Arc<Config>>, req: Request, next: Next) -> Response {
    if is_safe(req.method()) {
        return next.run(req).await;
    }
    let h = req.headers();
    let bearer = h
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if bearer {
        return next.run(req).await;
    }
    if let Some(site) = h.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return refuse(
                req.method(),
                req.uri().path(),
                &format!("Sec-Fetch-Site: {site}"),
            );
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
            return refuse(req.method(), req.uri().path(), &format!("Origin: {origin}"));
        }
    }
    next.run(req).await
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

fn refuse(method: &Method, path: &str, why: &str) -> Response {
    tracing::warn!(%method, path, why, "cross-site request refused");
    AppError::Forbidden("cross-site request refused".into()).into_response()
}
