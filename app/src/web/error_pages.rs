//! What a browser gets for an error: `AppError` renders JSON tagged with
//! [`ErrorInfo`]; the [`negotiate`] middleware turns tagged responses to
//! requests outside `/api` into
//! - for htmx requests (`HX-Request`): 401 → `HX-Redirect: /login`; 500/503 →
//!   the error page's card swapped into `#main`; any other 4xx → a toast
//!   partial appended to `#toasts` (`HX-Retarget`/`HX-Reswap`; base.html's
//!   htmx-config lets htmx swap those statuses);
//! - for plain page loads and form posts: 401 → 303 to `/login?next=…`,
//!   anything else → the full error page with the same status.
//!
//! Under `/api`, extractor rejections get the same JSON body as every other
//! error ([`json_rejection`]).

use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use kleidia_protocol::ErrorBody;

use super::extract::HxRequest;
use super::pages::{urlencode, Nav};
use crate::error::ErrorInfo;

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub me: Option<Nav>,
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

#[derive(Template)]
#[template(path = "error.html", block = "content")]
pub struct ErrorCard {
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

#[derive(Template)]
#[template(path = "toast_partial.html")]
pub struct Toast {
    pub kind: &'static str,
    pub message: String,
}

fn title_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Sign in required",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        422 => "Check your input",
        429 => "Too many attempts",
        503 => "Temporarily unavailable",
        _ => "Something went wrong",
    }
}

fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    match body {
        Ok(b) => (status, Html(b)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering an error page failed");
            (status, "error").into_response()
        }
    }
}

/// Who the request turned out to be, filled in by `extract::resolve` when a
/// handler looked the user up, so an error page (a 403, a 404 on a device)
/// keeps the signed-in header instead of offering "Sign in".
#[derive(Clone, Default)]
pub struct SignedIn(Arc<Mutex<Option<Nav>>>);

impl SignedIn {
    pub fn set(&self, user: &crate::auth::CurrentUser) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Nav::from(user));
        }
    }

    fn take(&self) -> Option<Nav> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Middleware: re-render tagged error responses for browsers (see the module docs).
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let signed_in = SignedIn::default();
    req.extensions_mut().insert(signed_in.clone());
    let path = req.uri().path().to_string();
    let is_api = path == "/api" || path.starts_with("/api/");
    let is_htmx = HxRequest::from_headers(req.headers()).htmx;
    let next_url = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let is_get = req.method() == Method::GET;
    let resp = next.run(req).await;
    if is_api {
        return json_rejection(resp).await;
    }
    let Some(info) = resp.extensions().get::<ErrorInfo>().cloned() else {
        return resp;
    };
    let status = info.status;
    if is_htmx {
        if status == StatusCode::UNAUTHORIZED {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut()
                .insert("hx-redirect", HeaderValue::from_static("/login"));
            return r;
        }
        if status.is_server_error() {
            let mut r = html(
                status,
                ErrorCard {
                    status: status.as_u16(),
                    title: title_for(status),
                    message: info.message,
                }
                .render(),
            );
            r.headers_mut()
                .insert("hx-retarget", HeaderValue::from_static("#main"));
            r.headers_mut()
                .insert("hx-reswap", HeaderValue::from_static("innerHTML"));
            return r;
        }
        let mut r = html(
            status,
            Toast {
                kind: "error",
                message: info.message,
            }
            .render(),
        );
        r.headers_mut()
            .insert("hx-retarget", HeaderValue::from_static("#toasts"));
        r.headers_mut()
            .insert("hx-reswap", HeaderValue::from_static("beforeend"));
        return r;
    }
    if status == StatusCode::UNAUTHORIZED {
        let target = if is_get && next_url != "/" {
            format!("/login?next={}", urlencode(&next_url))
        } else {
            "/login".to_string()
        };
        return Redirect::to(&target).into_response();
    }
    html(
        status,
        ErrorPage {
            me: signed_in.take(),
            status: status.as_u16(),
            title: title_for(status),
            message: info.message,
        }
        .render(),
    )
}

/// Extractor rejections (malformed JSON, a wrong content type, an unknown
/// field, a bad query string) answer plain text; under `/api` they get the
/// same JSON body as every other error, with axum's message, which names
/// the problem without internals.
async fn json_rejection(resp: Response) -> Response {
    let status = resp.status();
    let is_text = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !status.is_client_error() || !is_text || resp.extensions().get::<ErrorInfo>().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        _ => "bad_request",
    };
    let body = ErrorBody {
        error: code.into(),
        message: text,
    };
    let mut out = (status, Json(body)).into_response();
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}
