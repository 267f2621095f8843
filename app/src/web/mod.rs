//! Router assembly and cross-cutting middleware.
//!
//! Every route is declared once in a [`RouteDef`] with its [`Access`] rule;
//! [`router`] wraps each handler in the guard that enforces the rule, and
//! [`route_table`] lists them for the route × role test
//! (`web::rbac_tests`), which fails for a route it has no expectation for.
//! A feature module adds `pub fn routes() -> Vec<RouteDef>` and is listed in
//! [`routes`].

pub mod agent;
pub mod api_doc;
pub mod approvals;
mod assets;
pub mod audit;
pub mod auth;
mod auth_next;
pub mod certificates;
pub mod csrf;
pub mod devices;
pub mod error_pages;
pub mod export;
pub mod extract;
mod fleet_errors;
mod health;
pub mod license;
pub mod lockouts;
pub mod oidc;
// s4-fleet: bulk work and expiry notices.
pub mod bulk;
pub mod import;
pub mod notices;
pub mod openapi;
pub mod operations;
pub mod pages;
pub mod pki;
pub mod security;
pub mod settings;
pub mod users;

#[cfg(test)]
pub(crate) mod rbac_tests;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{self, MethodRouter};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::SessionManagerLayer;

use self::api_doc::{Answer, ApiDoc, Body};
use crate::auth::store::PgSessionStore;
use crate::auth::Access;
use crate::domain::SessionKind;
use crate::error::AppError;
use crate::state::AppState;

/// One route: method, path (axum syntax), access rule, handler.
pub struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
    /// What an `/api` route takes and answers (`/api/openapi.json`).
    pub doc: Option<ApiDoc>,
}

macro_rules! route_ctor {
    ($name:ident, $method:expr, $router:path) => {
        pub fn $name<H, T>(path: &'static str, access: Access, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            Self {
                method: $method,
                path,
                access,
                handler: $router(handler),
                doc: None,
            }
        }
    };
}

impl RouteDef {
    route_ctor!(get, Method::GET, routing::get);
    route_ctor!(post, Method::POST, routing::post);
    route_ctor!(put, Method::PUT, routing::put);
    route_ctor!(patch, Method::PATCH, routing::patch);
    route_ctor!(delete, Method::DELETE, routing::delete);

    fn doc_mut(&mut self) -> &mut ApiDoc {
        self.doc.get_or_insert_with(ApiDoc::default)
    }

    /// The query string is `T` (the handler's `QueryParams<T>`).
    pub fn query<T: utoipa::IntoParams>(mut self) -> Self {
        self.doc_mut().query = Some(api_doc::query_params::<T>);
        self
    }

    /// The request body is JSON of type `T` (the handler's `JsonBody<T>`).
    pub fn takes<T: utoipa::ToSchema>(self) -> Self {
        self.takes_body(Body::json::<T>())
    }

    /// The request body is `body` (another media type).
    pub fn takes_body(mut self, body: Body) -> Self {
        self.doc_mut().request = Some(Some(body));
        self
    }

    /// A POST that takes no body.
    pub fn takes_nothing(mut self) -> Self {
        self.doc_mut().request = Some(None);
        self
    }

    /// Answers `status` with JSON of type `T`.
    pub fn gives<T: utoipa::ToSchema>(self, status: u16, description: &'static str) -> Self {
        self.gives_body(status, description, Body::json::<T>())
    }

    /// Answers `status` with a JSON array of `T`.
    pub fn gives_list<T: utoipa::ToSchema>(self, status: u16, description: &'static str) -> Self {
        self.gives_body(status, description, Body::json_array::<T>())
    }

    /// Answers `status` with `body`.
    pub fn gives_body(mut self, status: u16, description: &'static str, body: Body) -> Self {
        self.doc_mut().answers.push(Answer {
            status,
            description,
            body: Some(body),
        });
        self
    }

    /// Answers `status` with no body.
    pub fn gives_nothing(mut self, status: u16, description: &'static str) -> Self {
        self.doc_mut().answers.push(Answer {
            status,
            description,
            body: None,
        });
        self
    }
}

/// Every route of the server.
pub fn routes() -> Vec<RouteDef> {
    let mut v = vec![
        RouteDef::get("/healthz", Access::Public, health::healthz),
        RouteDef::get("/readyz", Access::Public, health::readyz),
        RouteDef::get("/metrics", Access::Public, health::metrics),
        RouteDef::get("/static/{file}", Access::Public, assets::serve),
        RouteDef::get("/favicon.ico", Access::Public, assets::favicon),
        RouteDef::get("/", Access::SignedIn, pages::index),
        RouteDef::get("/api/openapi.json", Access::Public, openapi::serve).gives_body(
            200,
            "this document (OpenAPI 3.1)",
            Body::any_json(),
        ),
    ];
    v.extend(auth::routes());
    v.extend(oidc::routes());
    v.extend(users::routes());
    v.extend(lockouts::routes());
    v.extend(audit::routes());
    v.extend(export::routes());
    v.extend(devices::routes());
    v.extend(operations::routes());
    v.extend(certificates::routes());
    v.extend(approvals::routes());
    v.extend(agent::routes());
    v.extend(settings::routes());
    v.extend(pki::routes());
    v.extend(license::routes());
    // s4-fleet: bulk work and expiry notices.
    v.extend(bulk::routes());
    v.extend(import::routes());
    v.extend(notices::routes());
    v
}

/// (method, path, rule) of every route, for tests and documentation.
pub fn route_table() -> Vec<(Method, &'static str, Access)> {
    routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.access))
        .collect()
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    access: Access,
}

/// What a signed-in account that still has a one-time password may reach:
/// changing it, who am I, and signing out. Pages lead to the password form,
/// everything else (the whole API, whichever way the session was made) is
/// refused with 403.
const ALLOWED_BEFORE_PASSWORD_CHANGE: [&str; 5] = [
    "/account/password",
    "/logout",
    "/api/auth/password",
    "/api/auth/logout",
    "/api/auth/me",
];

/// Enforces a route's [`Access`]: 401 without a live session, 403 for a
/// role the rule does not list. Someone who must change their password
/// reaches only [`ALLOWED_BEFORE_PASSWORD_CHANGE`].
async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if g.access == Access::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let user = match extract::resolve(&mut parts, &g.state).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let role = user.as_ref().map(|u| u.role);
    if !g.access.allows(role) {
        // s4-fleet: a signed-in person's attempt to change something their
        // role does not allow (a bulk action, an import) is audited.
        if let Some(u) = user.as_ref().filter(|_| !csrf::is_safe(&parts.method)) {
            let meta =
                extract::client_meta(&parts, g.state.config.server.client_ip_header.as_deref());
            let event = crate::audit::AuditEvent::new("request.role_refused")
                .actor(u)
                .from_client(&meta)
                .details(serde_json::json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "role": u.role,
                }));
            if let Err(e) = crate::audit::record_alone(&g.state.db, event).await {
                tracing::error!(error = %e, "could not audit a refused request");
            }
        }
        return match role {
            None => AppError::Unauthorized.into_response(),
            Some(_) => AppError::Forbidden("your role does not allow this".into()).into_response(),
        };
    }
    if let Some(u) = user.as_ref().filter(|u| u.must_change_password) {
        let path = parts.uri.path();
        if !ALLOWED_BEFORE_PASSWORD_CHANGE.contains(&path) {
            if u.via == SessionKind::Browser && !path.starts_with("/api/") {
                return Redirect::to("/account/password").into_response();
            }
            return AppError::Forbidden(
                "this account still has a one-time password: change it first \
                 (POST /api/auth/password, or the Change password page)"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

pub fn session_layer(state: &AppState) -> SessionManagerLayer<PgSessionStore> {
    // No Max-Age: the cookie lives as long as the browser session; the
    // server enforces the idle and absolute timeouts on the row.
    SessionManagerLayer::new(PgSessionStore::new(state.db.clone()))
        .with_name(state.config.session_cookie_name())
        .with_secure(state.config.cookie_secure())
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let mut router = Router::new();
    for def in routes() {
        let g = Guard {
            state: state.clone(),
            access: def.access,
        };
        router = router.route(
            def.path,
            def.handler
                .route_layer(middleware::from_fn_with_state(g, guard)),
        );
    }
    router
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(session_layer(&state))
        .layer(middleware::from_fn_with_state(state.clone(), csrf::protect))
        .layer(middleware::from_fn(error_pages::negotiate))
        .layer(middleware::from_fn_with_state(
            HeaderValue::from_str(&security::csp(
                &state.config.agent.url.origin().ascii_serialization(),
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            security::headers,
        ))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(middleware::from_fn_with_state(
            state.config.clone(),
            csrf::check_host,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(oidc::request_span))
        .with_state(state)
}
