//! Server-rendered pages shared by every feature: the navigation context,
//! the dashboard and the 404 page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use sqlx::PgPool;
use uuid::Uuid;

use super::extract::MaybeUser;
use crate::auth::CurrentUser;
use crate::domain::{DeviceState, Role};
use crate::error::AppError;
use crate::fleet::db::{certificates, devices};
use crate::state::AppState;

pub fn render<T: Template>(t: &T) -> Result<Html<String>, AppError> {
    t.render()
        .map(Html)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("template: {e}")))
}

/// Percent-encode for a query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What the layout needs to know about the signed-in person.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub role_label: &'static str,
    pub is_admin: bool,
    pub reads_users: bool,
    pub reads_audit: bool,
    /// False while the user must still choose their own password: every
    /// page but the password form is closed to them, so no menu is offered.
    pub menu: bool,
}

impl From<&CurrentUser> for Nav {
    fn from(u: &CurrentUser) -> Self {
        Self {
            user_id: u.user_id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            role_label: u.role.label(),
            is_admin: u.role == Role::Admin,
            reads_users: u.role.reads_all_users(),
            reads_audit: matches!(u.role, Role::Admin | Role::Auditor),
            menu: !u.must_change_password,
        }
    }
}

pub fn nav(u: &CurrentUser) -> Option<Nav> {
    Some(Nav::from(u))
}

pub struct Stats {
    pub users: i64,
    pub audit_rows: i64,
    pub lockouts: i64,
    pub my_sessions: i64,
}

#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexPage {
    pub me: Option<Nav>,
    pub version: &'static str,
    pub role_blurb: &'static str,
    pub stats: Stats,
    pub fleet: Option<FleetStats>,
    pub my_devices: i64,
}

/// The fleet at a glance (staff): every number links to the list behind it.
pub struct FleetStats {
    pub by_state: Vec<(String, i64)>,
    pub total: i64,
    pub expiring: i64,
    pub expiry_days: u32,
    pub factory: i64,
    pub recent: Vec<AuditLine>,
}

pub struct AuditLine {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
}

async fn fleet_stats(db: &PgPool, with_audit: bool) -> Result<FleetStats, AppError> {
    let counts = devices::counts_by_state(db).await?;
    let by_state: Vec<(String, i64)> = DeviceState::ALL
        .iter()
        .map(|s| {
            let n = counts
                .iter()
                .find(|(k, _)| k == s)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            (s.as_str().to_string(), n)
        })
        .collect();
    let policy = crate::fleet::settings::policy(db).await?;
    let days = i32::try_from(policy.expiry_warning_days).unwrap_or(30);
    let expiring = certificates::devices_with_expiring_certificates(db, days).await?;
    let factory = devices::factory_count(db).await?;
    let recent = if with_audit {
        sqlx::query_as::<_, (time::OffsetDateTime, String, String, Option<String>, Option<String>)>(
            "SELECT created_at, actor_name, action, target_type, target_id FROM audit_log ORDER BY id DESC LIMIT 10",
        )
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|(at, actor, action, tt, tid)| AuditLine {
            at: crate::fleet::db::fmt_time(&at),
            actor,
            action,
            target: match (tt, tid) {
                (Some(t), Some(i)) => format!("{t} {i}"),
                _ => String::new(),
            },
        })
        .collect()
    } else {
        Vec::new()
    };
    Ok(FleetStats {
        total: by_state.iter().map(|(_, n)| n).sum(),
        by_state,
        expiring,
        expiry_days: policy.expiry_warning_days,
        factory,
        recent,
    })
}

fn blurb(role: Role) -> &'static str {
    match role {
        Role::Admin => "You administer users and settings and can operate every device.",
        Role::Helpdesk => "You operate other people's devices; user and settings administration is for administrators.",
        Role::Auditor => "You can read everything, including the audit log, and change nothing.",
        Role::User => "You manage your own devices.",
    }
}

pub async fn index(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Html<String>, AppError> {
    let db = &state.db;
    let count =
        |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db).await };
    let users = if me.role.reads_all_users() {
        count("SELECT count(*) FROM users").await?
    } else {
        0
    };
    let audit_rows = if matches!(me.role, Role::Admin | Role::Auditor) {
        sqlx::query_scalar::<_, i64>("SELECT last_id FROM audit_head WHERE singleton")
            .fetch_optional(db)
            .await?
            .unwrap_or(0)
    } else {
        0
    };
    let lockouts = if me.role == Role::Admin {
        count("SELECT count(*) FROM login_throttle WHERE locked_until > now()").await?
    } else {
        0
    };
    let my_sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_sessions WHERE user_id = $1 AND expires_at > now() AND absolute_expires_at > now()",
    )
    .bind(me.user_id)
    .fetch_one(db)
    .await?;
    let fleet = if me.role.reads_all_users() {
        Some(fleet_stats(db, matches!(me.role, Role::Admin | Role::Auditor)).await?)
    } else {
        None
    };
    let my_devices: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE owner_id = $1")
        .bind(me.user_id)
        .fetch_one(db)
        .await?;
    render(&IndexPage {
        me: nav(&me),
        version: env!("CARGO_PKG_VERSION"),
        role_blurb: blurb(me.role),
        fleet,
        my_devices,
        stats: Stats {
            users,
            audit_rows,
            lockouts,
            my_sessions,
        },
    })
}

#[derive(Template)]
#[template(path = "not_found.html")]
pub struct NotFoundPage {
    pub me: Option<Nav>,
}

pub async fn not_found(me: Result<MaybeUser, AppError>) -> Response {
    let me = me.ok().and_then(|m| m.0).as_ref().map(Nav::from);
    match render(&NotFoundPage { me }) {
        Ok(html) => (StatusCode::NOT_FOUND, html).into_response(),
        Err(e) => e.into_response(),
    }
}
