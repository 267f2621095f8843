//! Router assembly and cross-cutting middleware.

mod assets;
mod health;
mod pages;
pub mod security;

use axum::routing::get;
use axum::{middleware, Router};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .route("/", get(pages::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(middleware::from_fn(security::headers))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
