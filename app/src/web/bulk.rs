//! Bulk device actions (`fleet::bulk`), admins only:
//! - `POST /api/devices/bulk/preview` `{action, filter}` → what would happen;
//! - `POST /api/devices/bulk` `{action, reason, filter, serials, count}` → done;
//! - `GET /devices/bulk?action=…&<filters>` the confirmation page naming the
//!   count, `POST /devices/bulk` its form, answered with every outcome.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::extract::JsonBody;
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::domain::Serial;
use crate::error::AppError;
use crate::fleet::bulk::{
    self, BulkAction, BulkError, BulkFilter, BulkReport, BulkRequest, Preview,
};
use crate::state::AppState;
use crate::web::pages::{nav, render, urlencode, Nav};

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::post("/api/devices/bulk/preview", Access::ADMIN, preview_api)
            .takes::<PreviewBody>()
            .gives::<Preview>(
                200,
                "each device the filter matches and what the action does to it",
            ),
        RouteDef::post("/api/devices/bulk", Access::ADMIN, apply_api)
            .takes::<BulkRequest>()
            .gives::<BulkReport>(200, "the batch and each device's outcome"),
        RouteDef::get("/devices/bulk", Access::ADMIN, preview_page),
        RouteDef::post("/devices/bulk", Access::ADMIN, apply_form),
    ]
}

impl From<BulkError> for AppError {
    fn from(e: BulkError) -> Self {
        match e {
            BulkError::NotAdmin => AppError::Forbidden(e.to_string()),
            BulkError::SetChanged { .. } => AppError::Conflict(e.to_string()),
            BulkError::Db(e) => e.into(),
            e => AppError::Unprocessable(e.to_string()),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    action: BulkAction,
    filter: BulkFilter,
}

async fn preview_api(
    State(state): State<AppState>,
    me: CurrentUser,
    JsonBody(b): JsonBody<PreviewBody>,
) -> Result<Json<Preview>, AppError> {
    Ok(Json(
        bulk::preview(&state.db, &me, b.action, b.filter).await?,
    ))
}

async fn apply_api(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<Json<BulkReport>, AppError> {
    Ok(Json(
        bulk::apply(&state.db, &state.pki(), &me, &meta, req).await?,
    ))
}

/// The page's query and form: the action, the filters, and (posting) the
/// confirmation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BulkForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    firmware: String,
    #[serde(default)]
    expiring_days: String,
    #[serde(default)]
    factory: String,
    // Posting only.
    #[serde(default)]
    reason: String,
    /// Comma-separated serials the page listed.
    #[serde(default)]
    serials: String,
    #[serde(default)]
    count: String,
}

impl BulkForm {
    fn filter(&self) -> Result<BulkFilter, AppError> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let expiring_days =
            match self.expiring_days.trim() {
                "" => None,
                d => Some(d.parse().map_err(|_| {
                    AppError::Unprocessable("expiring_days must be a number".into())
                })?),
            };
        let factory = match self.factory.trim() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                return Err(AppError::Unprocessable(
                    "factory must be true or false".into(),
                ))
            }
        };
        Ok(BulkFilter {
            q: opt(&self.q),
            state: opt(&self.state),
            owner: opt(&self.owner),
            firmware: opt(&self.firmware),
            expiring_days,
            factory,
        })
    }

    fn action(&self) -> Result<BulkAction, AppError> {
        BulkAction::parse(self.action.trim()).ok_or_else(|| {
            AppError::Unprocessable("choose an action: suspend, revoke or lost".into())
        })
    }
}

/// The filter as a query string (for links back to the list).
fn filter_query(f: &BulkFilter) -> String {
    let mut q = Vec::new();
    for (k, v) in [
        ("q", &f.q),
        ("state", &f.state),
        ("owner", &f.owner),
        ("firmware", &f.firmware),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", urlencode(v)));
        }
    }
    if let Some(d) = f.expiring_days {
        q.push(format!("expiring_days={d}"));
    }
    if let Some(b) = f.factory {
        q.push(format!("factory={b}"));
    }
    q.join("&")
}

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    me: Option<Nav>,
    f: BulkFilter,
    list_query: String,
    actions: [BulkAction; 3],
    action: Option<BulkAction>,
    preview: Option<Preview>,
    serials: String,
    /// Why there is nothing to confirm (no filter, nothing matches, too many).
    problem: Option<String>,
    report: Option<BulkReport>,
}

impl BulkPage {
    fn selects(&self, a: &BulkAction) -> bool {
        self.action == Some(*a)
    }

    fn text(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or("")
    }

    fn q(&self) -> &str {
        Self::text(&self.f.q)
    }
    fn state_f(&self) -> &str {
        Self::text(&self.f.state)
    }
    fn owner(&self) -> &str {
        Self::text(&self.f.owner)
    }
    fn firmware(&self) -> &str {
        Self::text(&self.f.firmware)
    }
    fn expiring_days(&self) -> String {
        self.f
            .expiring_days
            .map(|d| d.to_string())
            .unwrap_or_default()
    }
    fn factory(&self) -> String {
        self.f.factory.map(|b| b.to_string()).unwrap_or_default()
    }
}

async fn preview_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(form): Query<BulkForm>,
) -> Result<Html<String>, AppError> {
    let f = form.filter()?;
    let action = BulkAction::parse(form.action.trim());
    let (preview, problem) = match action {
        None => (None, None),
        Some(a) => match bulk::preview(&state.db, &me, a, f.clone()).await {
            Ok(p) if p.count == 0 => (None, Some("No device matches these filters.".into())),
            Ok(p) => (Some(p), None),
            Err(e @ (BulkError::NoFilter | BulkError::TooMany | BulkError::State(_))) => {
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        },
    };
    let serials = preview
        .as_ref()
        .map(|p| {
            p.devices
                .iter()
                .map(|d| d.serial.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    render(&BulkPage {
        me: nav(&me),
        list_query: filter_query(&f),
        f,
        actions: [BulkAction::Suspend, BulkAction::Revoke, BulkAction::Lost],
        action,
        preview,
        serials,
        problem,
        report: None,
    })
}

async fn apply_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(form): Form<BulkForm>,
) -> Result<Response, AppError> {
    let f = form.filter()?;
    let action = form.action()?;
    let serials = form
        .serials
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Serial::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let count = form
        .count
        .trim()
        .parse()
        .map_err(|_| AppError::Unprocessable("the confirmed count is missing".into()))?;
    let req = BulkRequest {
        action,
        reason: form.reason.clone(),
        filter: f.clone(),
        serials,
        count,
    };
    let report = bulk::apply(&state.db, &state.pki(), &me, &meta, req).await?;
    Ok(render(&BulkPage {
        me: nav(&me),
        list_query: filter_query(&f),
        f,
        actions: [BulkAction::Suspend, BulkAction::Revoke, BulkAction::Lost],
        action: Some(action),
        preview: None,
        serials: String::new(),
        problem: None,
        report: Some(report),
    })?
    .into_response())
}
