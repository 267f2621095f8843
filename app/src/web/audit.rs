//! `/audit` (page; htmx "older entries" loads the next rows) and
//! `GET /api/audit`, for auditors and admins.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::Json;

use super::extract::{HxRequest, QueryParams};
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::audit::query::{self, AuditEntry, AuditPage, AuditParams};
use crate::auth::{Access, CurrentUser};
use crate::error::AppError;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/audit", Access::AUDIT, audit_page),
        RouteDef::get("/api/audit", Access::AUDIT, api_audit)
            .query::<AuditParams>()
            .gives::<AuditPage>(200, "a page of the audit log, newest first"),
    ]
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditHtml {
    me: Option<Nav>,
    params: AuditParams,
    entries: Vec<AuditEntry>,
    next_before: Option<i64>,
    query: String,
    /// The filters without the page size, for the export links.
    export_query: String,
}

#[derive(Template)]
#[template(path = "audit_rows_partial.html")]
struct AuditRows {
    entries: Vec<AuditEntry>,
    next_before: Option<i64>,
    query: String,
}

async fn audit_page(
    State(state): State<AppState>,
    me: CurrentUser,
    hx: HxRequest,
    Query(params): Query<AuditParams>,
) -> Result<Html<String>, AppError> {
    let filter = params.to_filter()?;
    let page = query::page(&state.db, &filter).await?;
    let query = params.query_string();
    if hx.wants_partial() {
        return render(&AuditRows {
            entries: page.entries,
            next_before: page.next_before,
            query,
        });
    }
    let export_query = AuditParams {
        limit: None,
        ..params.clone()
    }
    .query_string();
    render(&AuditHtml {
        me: nav(&me),
        export_query,
        params,
        entries: page.entries,
        next_before: page.next_before,
        query,
    })
}

async fn api_audit(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<AuditPage>, AppError> {
    let filter = params.to_filter()?;
    Ok(Json(query::page(&state.db, &filter).await?))
}
