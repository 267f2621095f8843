//! `/license` (admins: status, limits against usage, upload, history) and
//! `GET|POST /api/license`.
//!
//! The app never verifies a license itself: the file goes to the license
//! service, whose answer (the new status, or why it refused) is shown as it
//! is. Every upload attempt is one `license.upload` audit row, accepted or
//! not. `GET /api/license` is open to staff (admins, helpdesk, auditors):
//! helpdesk meet the limits when they enroll keys and auditors read
//! everything; the page with the upload form is for admins only.

use axum::body::Bytes;
use axum::extract::{Multipart, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use kleidia_license_client::{ClientError, Problem};
use kleidia_protocol::license::{LicenseHistoryEntry, LicenseStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::extract::QueryParams;
use super::pages::{nav, render};
use super::RouteDef;
use crate::audit::{self, AuditEvent};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::error::AppError;
use crate::licensing::{self, Usage};
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/license", Access::ADMIN, license_page),
        RouteDef::post("/license", Access::ADMIN, upload_form),
        RouteDef::get("/api/license", Access::STAFF, api_get)
            .query::<ApiParams>()
            .gives::<ApiLicense>(200, "the license status, usage and upload history"),
        RouteDef::post("/api/license", Access::ADMIN, api_upload)
            .takes::<kleidia_protocol::license::SignedLicense>()
            .gives::<ApiLicense>(200, "the license was accepted; the new status"),
    ]
}

mod page;

use page::page;

// ---- upload, shared by the page and the API --------------------------------

/// Send `document` to the license service and audit the attempt.
async fn upload(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    document: Vec<u8>,
) -> Result<LicenseStatus, AppError> {
    if document.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::Unprocessable(
            "no license: choose the license file (or paste its content) first".into(),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&document));
    let size = document.len();
    let result = state.license.upload(document, Some(&me.username)).await;
    let mut event = AuditEvent::new("license.upload")
        .actor(me)
        .from_client(meta);
    event = match &result {
        Ok(s) => {
            let id = s
                .license
                .as_ref()
                .map(|l| l.license_id.clone())
                .unwrap_or_default();
            event.target("license", &id).details(json!({
                "result": "ok",
                "sha256": sha256,
                "bytes": size,
                "license_id": id,
                "customer": s.license.as_ref().map(|l| l.customer.clone()),
                "not_after": s.license.as_ref().map(|l| l.not_after),
                "limits": s.limits.map(|l| json!({"max_users": l.max_users, "max_devices": l.max_devices})),
                "status": s.status.as_str(),
            }))
        }
        Err(ClientError::Refused { status, body }) => event.details(json!({
            "result": "refused",
            "sha256": sha256,
            "bytes": size,
            "http_status": status,
            "error": body.error,
            "reason": body.message,
        })),
        Err(e) => event.details(json!({
            "result": "error",
            "sha256": sha256,
            "bytes": size,
            "reason": e.to_string(),
        })),
    };
    let mut tx = state.db.begin().await?;
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    match result {
        Ok(s) => {
            tracing::info!(status = %s.status, actor = %me.username, "license uploaded");
            Ok(s)
        }
        Err(e) => Err(upload_error(e)),
    }
}

fn upload_error(e: ClientError) -> AppError {
    match e {
        // The service's own words: signature, installation, expiry, size, format.
        ClientError::Refused {
            status: 400 | 413 | 422,
            body,
        } => AppError::Unprocessable(format!(
            "the license was refused: {} Nothing was stored.",
            sentence(&body.message)
        )),
        ClientError::Refused { status, body } => {
            tracing::error!(status, error = %body.error, message = %body.message, "the license service refused the app's call");
            let hint = if matches!(status, 401 | 403) {
                " (check license.api_token: the app and the service must share it)"
            } else {
                ""
            };
            AppError::Unavailable(format!(
                "the license service cannot take the license now: {}{hint} Nothing was stored.",
                sentence(&body.message)
            ))
        }
        ClientError::Unreachable(cause) => {
            tracing::error!(%cause, "license upload: the license service is unreachable");
            AppError::Unavailable(
                "the license service is unreachable; nothing was uploaded, try again later".into(),
            )
        }
        e @ ClientError::Unexpected(_) => {
            AppError::Internal(anyhow::anyhow!("license upload: {e}"))
        }
    }
}

fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.ends_with(['.', '!', '?']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

// ---- what the page and the API show ------------------------------------------

/// Status, usage and history (history is `None` when the service could not
/// give it; `history_error` then says why).
struct Overview {
    status: LicenseStatus,
    usage: Usage,
    enrollment: Result<(), String>,
    history: Option<Vec<LicenseHistoryEntry>>,
    history_error: Option<String>,
    /// Why the service gave no status (a 401 is a configuration error).
    problem: Option<Problem>,
}

async fn overview(state: &AppState, fresh: bool) -> Result<Overview, AppError> {
    if fresh {
        state.license.invalidate().await;
    }
    let status = state.license.status().await;
    let problem = state.license.problem().await;
    let usage = licensing::usage(&state.db).await?;
    let enrollment =
        licensing::enrollment_allowed(&status, usage.devices).map_err(|e| e.to_string());
    let (history, history_error) = if status.degraded {
        (
            None,
            Some(
                problem
                    .as_ref()
                    .map_or("the license service gave no status".to_string(), |p| {
                        p.message.clone()
                    }),
            ),
        )
    } else {
        match state.license.history().await {
            Ok(h) => (Some(h.entries), None),
            Err(e) => {
                tracing::warn!(error = %e, "license history unavailable");
                (None, Some(e.to_string()))
            }
        }
    };
    Ok(Overview {
        status,
        usage,
        enrollment,
        history,
        history_error,
        problem,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageParams {
    done: Option<String>,
}

async fn license_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(p): Query<PageParams>,
) -> Result<Html<String>, AppError> {
    // An admin looking at the page sees the service's answer of this moment.
    let o = overview(&state, true).await?;
    let notice = (p.done.as_deref() == Some("uploaded")).then_some("The license was accepted.");
    render(&page(nav(&me), o, notice, None))
}

/// The page's form: `multipart/form-data` with a `file` field (the license
/// file) or a `license` field (its content pasted); the file wins.
async fn upload_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    mut form: Multipart,
) -> Result<Response, AppError> {
    let mut file = Vec::new();
    let mut pasted = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| AppError::BadRequest(format!("unreadable form: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| AppError::BadRequest(format!("unreadable form: {e}")))?;
        match name.as_str() {
            "file" => file = bytes.to_vec(),
            "license" => pasted = bytes.to_vec(),
            _ => {}
        }
    }
    let document = if file.iter().all(u8::is_ascii_whitespace) {
        pasted
    } else {
        file
    };
    match upload(&state, &me, &meta, document).await {
        Ok(_) => Ok(Redirect::to("/license?done=uploaded").into_response()),
        Err(e @ AppError::Internal(_)) => Err(e),
        Err(e) => {
            // Show the reason on the page itself, next to the form.
            let status = e.status();
            let o = overview(&state, false).await?;
            let html = render(&page(nav(&me), o, None, Some(e.public_message())))?;
            Ok((status, html).into_response())
        }
    }
}

/// `GET /api/license`: the service's status, and what the app adds to it,
/// in one object.
#[derive(Serialize)]
struct ApiLicense {
    #[serde(flatten)]
    status: LicenseStatus,
    #[serde(flatten)]
    more: LicenseMore,
}

/// The schema is [`LicenseStatus`]'s properties and [`LicenseMore`]'s in one
/// object: utoipa would make `allOf` of the two, which no body satisfies
/// since the status does not allow properties it does not name
/// (`deny_unknown_fields`, for the service's answers).
impl utoipa::PartialSchema for ApiLicense {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        match (LicenseStatus::schema(), LicenseMore::schema()) {
            (RefOr::T(Schema::Object(mut status)), RefOr::T(Schema::Object(more))) => {
                status.properties.extend(more.properties);
                status.required.extend(more.required);
                status.additional_properties = None;
                status.description = Some("The license status, usage and upload history".into());
                RefOr::T(Schema::Object(status))
            }
            // Both are derived structs, so objects; anything else is a bug
            // the openapi unit tests show.
            (_, more) => more,
        }
    }
}

impl utoipa::ToSchema for ApiLicense {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        LicenseStatus::schemas(schemas);
        LicenseMore::schemas(schemas);
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct LicenseMore {
    usage: Usage,
    new_enrollments: Enrollments,
    /// Every accepted upload, oldest first; `null` if the service could not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<LicenseHistoryEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_error: Option<String>,
    /// Why the license service gave no status, when it did not:
    /// `{"kind": "unreachable" | "configuration" | "service_error", "message", "at"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Enrollments {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn api_body(o: Overview) -> ApiLicense {
    ApiLicense {
        status: o.status,
        more: LicenseMore {
            usage: o.usage,
            new_enrollments: Enrollments {
                allowed: o.enrollment.is_ok(),
                reason: o.enrollment.err(),
            },
            history: o.history,
            history_error: o.history_error,
            problem: o.problem,
        },
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ApiParams {
    /// `?fresh=true`: ask the service now instead of using the cache.
    fresh: bool,
}

async fn api_get(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<ApiParams>,
) -> Result<Json<ApiLicense>, AppError> {
    Ok(Json(api_body(overview(&state, p.fresh).await?)))
}

/// Body: the license file as it is (what `kleidia-license issue` wrote).
async fn api_upload(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    body: Bytes,
) -> Result<Json<ApiLicense>, AppError> {
    upload(&state, &me, &meta, body.to_vec()).await?;
    Ok(Json(api_body(overview(&state, false).await?)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use askama::Template;
    use axum::http::StatusCode;
    use kleidia_license_client::fallback;
    use kleidia_protocol::ErrorBody;

    use super::*;

    #[test]
    fn a_refused_file_shows_the_services_reason_and_says_nothing_was_stored() {
        let e = upload_error(ClientError::Refused {
            status: 422,
            body: ErrorBody {
                error: "bad_signature".into(),
                message: "the signature does not verify".into(),
            },
        });
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.public_message(),
            "the license was refused: the signature does not verify. Nothing was stored."
        );
        let e = upload_error(ClientError::Unreachable("connection refused".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_degraded_page_renders_the_banner_and_escapes_the_reason() {
        let mut status = fallback(&ClientError::Unreachable("<script>x</script>".into()));
        status.clock_rollback = true;
        let o = Overview {
            status,
            usage: Usage {
                users: 3,
                devices: 25,
            },
            enrollment: Err("the TRIAL license allows 25 YubiKeys".into()),
            history: None,
            history_error: Some("the license service is unreachable".into()),
            problem: Some(Problem {
                kind: kleidia_license_client::ProblemKind::Configuration,
                message: "the license service refused the app's API token <b>".into(),
                at: 0,
            }),
        };
        let p = page(None, o, None, None);
        let html = p.render().unwrap();
        assert!(
            html.contains(
                "Degraded: the license service gave no status, the last verified status applies"
            ),
            "{html}"
        );
        assert!(html.contains(r#"id="license-config-error""#), "{html}");
        assert!(!html.contains("token <b>"), "{html}");
        assert!(html.contains("clock"), "{html}");
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("TRIAL"));
        assert!(html.contains("allows 25 YubiKeys"));
    }
}
