//! CSV imports (`fleet::import`), admins only:
//! - `POST /api/import/users` and `POST /api/import/assignments`, the CSV as
//!   the body, `?dry_run=true` for the preview and `?accept_partial=true` to
//!   apply the good rows while others fail. A refusal is 422 with
//!   `{error, message, report}`: every row's outcome;
//! - `GET /import` the page, `POST /import/users` and
//!   `POST /import/assignments` its forms (a file or pasted text, "Preview"
//!   or "Import"), answered with the per-row outcome.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::api_doc::Body;
use super::extract::QueryParams;
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::fleet::import::{
    ImportError, ImportKind, ImportMode, ImportReport, Importer, MAX_BYTES, MAX_ROWS,
};
use crate::licensing;
use crate::state::AppState;
use crate::web::pages::{nav, render, Nav};

const REFUSED: &str =
    "refused: nothing applied; the reason, and every row's outcome when the file could be read";

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::post("/api/import/users", Access::ADMIN, users_api)
            .query::<ModeQuery>()
            .takes_body(Body::text("text/csv"))
            .gives::<ImportReport>(200, "the dry run: every row's outcome")
            .gives::<ImportReport>(
                201,
                "imported: every row's outcome and the new accounts' one-time passwords",
            )
            .gives::<ImportRefused>(422, REFUSED),
        RouteDef::post("/api/import/assignments", Access::ADMIN, assignments_api)
            .query::<ModeQuery>()
            .takes_body(Body::text("text/csv"))
            .gives::<ImportReport>(200, "the dry run: every row's outcome")
            .gives::<ImportReport>(201, "imported: every row's outcome")
            .gives::<ImportRefused>(422, REFUSED),
        RouteDef::get("/import", Access::ADMIN, page),
        RouteDef::post("/import/users", Access::ADMIN, users_form),
        RouteDef::post("/import/assignments", Access::ADMIN, assignments_form),
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ModeQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    accept_partial: bool,
}

async fn run(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    kind: ImportKind,
    bytes: &[u8],
    mode: ImportMode,
) -> Result<ImportReport, ImportError> {
    let importer = Importer {
        db: &state.db,
        passwords: &state.passwords,
        me,
        meta,
    };
    importer
        .run(kind, bytes, mode, |n| async move {
            // The license's user limit, for `n` more accounts at once.
            let status = state.license.status().await;
            let u = licensing::usage(&state.db).await?;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            licensing::user_allowed(&status, u.users.saturating_add(n).saturating_sub(1))
        })
        .await
}

/// A refused import: the error body every route gives, plus the report of
/// every row when the file could be read.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportRefused {
    /// `import_refused`.
    error: &'static str,
    message: String,
    report: Option<ImportReport>,
}

fn error_response(e: ImportError) -> Response {
    match e {
        ImportError::App(e) => e.into_response(),
        ImportError::Db(e) => AppError::from(e).into_response(),
        e => {
            let refused = ImportRefused {
                error: "import_refused",
                message: e.to_string(),
                report: e.report().cloned(),
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Json(refused)).into_response()
        }
    }
}

async fn api(
    state: AppState,
    me: CurrentUser,
    meta: ClientMeta,
    kind: ImportKind,
    q: ModeQuery,
    body: Bytes,
) -> Response {
    let mode = ImportMode {
        dry_run: q.dry_run,
        accept_partial: q.accept_partial,
    };
    match run(&state, &me, &meta, kind, &body, mode).await {
        Ok(r) => {
            let status = if r.applied {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            // One-time passwords are in the body: never cached.
            (
                status,
                [(axum::http::header::CACHE_CONTROL, "no-store")],
                Json(r),
            )
                .into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn users_api(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(q): QueryParams<ModeQuery>,
    body: Bytes,
) -> Response {
    api(state, me, meta, ImportKind::Users, q, body).await
}

async fn assignments_api(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(q): QueryParams<ModeQuery>,
    body: Bytes,
) -> Response {
    api(state, me, meta, ImportKind::Assignments, q, body).await
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    me: Option<Nav>,
    max_rows: usize,
    max_kib: usize,
    /// Which form the result belongs to.
    kind: Option<ImportKind>,
    /// The text to put back in that form's box (a preview keeps it).
    text: String,
    accept_partial: bool,
    report: Option<ImportReport>,
    /// Why the import was refused.
    problem: Option<String>,
}

impl ImportPage {
    fn empty(me: &CurrentUser) -> Self {
        Self {
            me: nav(me),
            max_rows: MAX_ROWS,
            max_kib: MAX_BYTES / 1024,
            kind: None,
            text: String::new(),
            accept_partial: false,
            report: None,
            problem: None,
        }
    }

    fn is(&self, k: &str) -> bool {
        self.kind.map(ImportKind::as_str) == Some(k)
    }

    fn text_for(&self, k: &str) -> &str {
        if self.is(k) {
            &self.text
        } else {
            ""
        }
    }
}

async fn page(me: CurrentUser) -> Result<Html<String>, AppError> {
    render(&ImportPage::empty(&me))
}

/// The form's fields: a file (wins when given) or pasted text, the
/// partial-import box and the button pressed.
async fn read_form(mut mp: Multipart) -> Result<(Vec<u8>, bool, bool), AppError> {
    let bad = |_| AppError::BadRequest("the form could not be read".into());
    let (mut file, mut text, mut partial, mut import) = (Vec::new(), String::new(), false, false);
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => file = field.bytes().await.map_err(bad)?.to_vec(),
            "csv" => text = field.text().await.map_err(bad)?,
            "accept_partial" => partial = !field.text().await.map_err(bad)?.is_empty(),
            "mode" => import = field.text().await.map_err(bad)? == "import",
            _ => return Err(AppError::BadRequest("unknown form field".into())),
        }
    }
    let bytes = if file.is_empty() {
        text.into_bytes()
    } else {
        file
    };
    Ok((bytes, partial, import))
}

async fn form(
    state: AppState,
    me: CurrentUser,
    meta: ClientMeta,
    kind: ImportKind,
    mp: Multipart,
) -> Result<Response, AppError> {
    let (bytes, accept_partial, import) = read_form(mp).await?;
    let mode = ImportMode {
        dry_run: !import,
        accept_partial,
    };
    let mut p = ImportPage::empty(&me);
    p.kind = Some(kind);
    p.accept_partial = accept_partial;
    let r = run(&state, &me, &meta, kind, &bytes, mode).await;
    // Keep the text for another try, unless it was applied.
    if !matches!(&r, Ok(rep) if rep.applied) && bytes.len() <= MAX_BYTES {
        p.text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let status = match r {
        Ok(rep) => {
            p.report = Some(rep);
            StatusCode::OK
        }
        Err(ImportError::App(e)) => return Err(e),
        Err(ImportError::Db(e)) => return Err(e.into()),
        Err(e) => {
            p.problem = Some(e.to_string());
            p.report = e.report().cloned();
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    Ok((status, render(&p)?).into_response())
}

async fn users_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    mp: Multipart,
) -> Result<Response, AppError> {
    form(state, me, meta, ImportKind::Users, mp).await
}

async fn assignments_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    mp: Multipart,
) -> Result<Response, AppError> {
    form(state, me, meta, ImportKind::Assignments, mp).await
}
