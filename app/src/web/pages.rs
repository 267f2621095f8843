//! Server-rendered pages.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::AppError;

pub fn render<T: Template>(t: &T) -> Result<Html<String>, AppError> {
    t.render()
        .map(Html)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("template: {e}")))
}

#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexPage {
    pub version: &'static str,
}

pub async fn index() -> Result<Html<String>, AppError> {
    render(&IndexPage {
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Template)]
#[template(path = "not_found.html")]
pub struct NotFoundPage;

pub async fn not_found() -> Response {
    match render(&NotFoundPage) {
        Ok(html) => (StatusCode::NOT_FOUND, html).into_response(),
        Err(e) => e.into_response(),
    }
}
