//! Exports of the inventory and the audit log, as CSV or JSON lines, with the
//! same filters as the pages (`/devices`, `/audit`):
//! - `GET /api/export/devices.csv`, `GET /api/export/devices.jsonl` (staff);
//! - `GET /api/export/audit.csv`, `GET /api/export/audit.jsonl` (auditors, admins).
//!
//! The body is streamed: the rows are read in keyset batches (the same
//! queries as the pages' "next page") and each batch is written and sent
//! before the next is read, so memory stays constant however many rows there
//! are. A database error in the middle ends the stream early (the client
//! sees a truncated transfer, never a silently short file with a 200 that
//! completed). The export itself is audited with its filters.
//!
//! CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`,
//! tab, CR at the start) are prefixed with `'` (OWASP's advice for CSV
//! injection); JSON lines carry the values unchanged.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use serde_json::json;

use super::api_doc::Body as ApiBody;
use super::extract::QueryParams;
use super::RouteDef;
use crate::audit::query::{self as audit_query, AuditEntry, AuditFilter, AuditParams};
use crate::audit::{self, AuditEvent};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::domain::DeviceState;
use crate::error::AppError;
use crate::fleet::db::{devices, DeviceFilter, DeviceRow};
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/api/export/devices.csv", Access::STAFF, devices_csv)
            .query::<DeviceFilter>()
            .gives_body(200, "the devices as CSV", ApiBody::text("text/csv")),
        RouteDef::get("/api/export/devices.jsonl", Access::STAFF, devices_jsonl)
            .query::<DeviceFilter>()
            .gives_body(
                200,
                "the devices as JSON lines (one DeviceRow a line)",
                ApiBody::text("application/x-ndjson"),
            ),
        RouteDef::get("/api/export/audit.csv", Access::AUDIT, audit_csv)
            .query::<AuditParams>()
            .gives_body(200, "the audit log as CSV", ApiBody::text("text/csv")),
        RouteDef::get("/api/export/audit.jsonl", Access::AUDIT, audit_jsonl)
            .query::<AuditParams>()
            .gives_body(
                200,
                "the audit log as JSON lines (one AuditEntry a line)",
                ApiBody::text("application/x-ndjson"),
            ),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
        }
    }
}

/// Rows per batch for the inventory (the device search's page limit).
const DEVICE_BATCH: i64 = 200;
/// Rows per batch for the audit log (its page limit).
const AUDIT_BATCH: i64 = audit_query::MAX_LIMIT;

const DEVICE_HEADER: &[&str] = &[
    "serial",
    "model",
    "firmware",
    "form_factor",
    "owner_username",
    "owner_display_name",
    "state",
    "secrets_version",
    "enrolled_at",
    "last_seen_at",
    "created_at",
    "updated_at",
];

const AUDIT_HEADER: &[&str] = &[
    "id",
    "created_at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "ip",
    "details",
];

/// A cell a spreadsheet will not evaluate.
fn cell(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

fn rfc3339(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn opt_time(t: &Option<time::OffsetDateTime>) -> String {
    t.as_ref().map(rfc3339).unwrap_or_default()
}

fn device_record(d: &DeviceRow) -> Vec<String> {
    vec![
        d.serial.to_string(),
        cell(&d.model),
        cell(d.firmware.as_deref().unwrap_or_default()),
        cell(d.form_factor.as_deref().unwrap_or_default()),
        cell(d.owner_username.as_deref().unwrap_or_default()),
        cell(d.owner_display_name.as_deref().unwrap_or_default()),
        d.state.as_str().to_string(),
        d.secrets_version.map(|v| v.to_string()).unwrap_or_default(),
        opt_time(&d.enrolled_at),
        opt_time(&d.last_seen_at),
        rfc3339(&d.created_at),
        rfc3339(&d.updated_at),
    ]
}

fn audit_record(e: &AuditEntry) -> Vec<String> {
    vec![
        e.id.to_string(),
        rfc3339(&e.created_at),
        cell(&e.actor_name),
        cell(&e.action),
        cell(e.target_type.as_deref().unwrap_or_default()),
        cell(e.target_id.as_deref().unwrap_or_default()),
        cell(e.ip.as_deref().unwrap_or_default()),
        cell(&e.details.to_string()),
    ]
}

/// One batch written out: CSV records (with the header first) or JSON lines.
fn write_batch<T: Serialize>(
    format: Format,
    header: Option<&[&str]>,
    rows: &[T],
    record: fn(&T) -> Vec<String>,
) -> Result<Bytes, std::io::Error> {
    match format {
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::with_capacity(rows.len() * 160));
            if let Some(h) = header {
                w.write_record(h)?;
            }
            for r in rows {
                w.write_record(record(r))?;
            }
            w.into_inner()
                .map(Bytes::from)
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
        Format::Jsonl => {
            let mut out = Vec::with_capacity(rows.len() * 300);
            for r in rows {
                serde_json::to_writer(&mut out, r)?;
                out.push(b'\n');
            }
            Ok(Bytes::from(out))
        }
    }
}

fn attachment(format: Format, what: &str, body: Body) -> Response {
    let day = time::OffsetDateTime::now_utc().date();
    let name = format!(
        "kleidia-{what}-{}{:02}{:02}.{}",
        day.year(),
        u8::from(day.month()),
        day.day(),
        format.as_str()
    );
    (
        [
            (header::CONTENT_TYPE, format.mime().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response()
}

async fn audited(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    action: &str,
    format: Format,
    filters: serde_json::Value,
) -> Result<(), AppError> {
    audit::record_alone(
        &state.db,
        AuditEvent::new(action)
            .actor(me)
            .from_client(meta)
            .details(json!({"format": format.as_str(), "filters": filters})),
    )
    .await?;
    Ok(())
}

fn device_stream(
    state: AppState,
    mut f: DeviceFilter,
    wanted: Option<DeviceState>,
    format: Format,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    f.limit = Some(DEVICE_BATCH);
    stream::unfold(Some((f, true)), move |cursor| {
        let state = state.clone();
        async move {
            let (mut f, first) = cursor?;
            let rows = match devices::search(&state.db, &f, wanted, None).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "device export stopped by a database error");
                    return Some((Err(std::io::Error::other("database error")), None));
                }
            };
            let header = first.then_some(DEVICE_HEADER);
            let chunk = write_batch(format, header, &rows, device_record);
            let next = (rows.len() as i64 == DEVICE_BATCH).then(|| {
                f.after = rows.last().map(|d| d.serial.as_i64());
                (f, false)
            });
            Some((chunk, next))
        }
    })
}

fn audit_stream(
    state: AppState,
    mut f: AuditFilter,
    format: Format,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    f.limit = Some(AUDIT_BATCH);
    stream::unfold(Some((f, true)), move |cursor| {
        let state = state.clone();
        async move {
            let (mut f, first) = cursor?;
            let page = match audit_query::page(&state.db, &f).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "audit export stopped by a database error");
                    return Some((Err(std::io::Error::other("database error")), None));
                }
            };
            let header = first.then_some(AUDIT_HEADER);
            let chunk = write_batch(format, header, &page.entries, audit_record);
            let next = page.next_before.map(|b| {
                f.before = Some(b);
                (f, false)
            });
            Some((chunk, next))
        }
    })
}

async fn devices_export(
    state: AppState,
    me: CurrentUser,
    meta: ClientMeta,
    f: DeviceFilter,
    format: Format,
) -> Result<Response, AppError> {
    let wanted = f.state()?;
    let filters = json!({
        "q": f.q, "state": f.state, "owner": f.owner, "firmware": f.firmware,
        "after": f.after, "expiring_days": f.expiring_days, "factory": f.factory,
    });
    audited(&state, &me, &meta, "export.devices", format, filters).await?;
    let body = Body::from_stream(device_stream(state, f, wanted, format));
    Ok(attachment(format, "devices", body))
}

async fn audit_export(
    state: AppState,
    me: CurrentUser,
    meta: ClientMeta,
    params: AuditParams,
    format: Format,
) -> Result<Response, AppError> {
    let f = params.to_filter()?;
    let filters = serde_json::to_value(&params).unwrap_or_default();
    audited(&state, &me, &meta, "export.audit", format, filters).await?;
    let body = Body::from_stream(audit_stream(state, f, format));
    Ok(attachment(format, "audit", body))
}

async fn devices_csv(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(f): QueryParams<DeviceFilter>,
) -> Result<Response, AppError> {
    devices_export(state, me, meta, f, Format::Csv).await
}

async fn devices_jsonl(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(f): QueryParams<DeviceFilter>,
) -> Result<Response, AppError> {
    devices_export(state, me, meta, f, Format::Jsonl).await
}

async fn audit_csv(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(p): QueryParams<AuditParams>,
) -> Result<Response, AppError> {
    audit_export(state, me, meta, p, Format::Csv).await
}

async fn audit_jsonl(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    QueryParams(p): QueryParams<AuditParams>,
) -> Result<Response, AppError> {
    audit_export(state, me, meta, p, Format::Jsonl).await
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formula_cells_are_defused_and_others_kept() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("alice"), "alice");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a=b"), "a=b");
    }
}
