//! What every request passes before a handler runs, and the extractors that
//! read the request bodies and queries strictly.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kleidia_protocol::agent::{codes, SerialQuery, SignedRequest};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted (a certificate PEM fits many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
pub(super) async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
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
