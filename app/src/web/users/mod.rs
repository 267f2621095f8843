//! User administration, pages here and the JSON API in [`api`]; the
//! operations themselves are `auth::accounts`, shared with the command line.
//!
//! Admins create, edit, disable/enable users and reset passwords; helpdesk
//! and auditors read; a plain user sees only their own profile. Reading
//! someone else's profile without the right answers 404, the same as an id
//! that does not exist.

mod api;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::extract::HxRequest;
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::accounts::{self, ChangedBy, NewAccount, NewPassword, ProfileChange};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::db::sessions::{self, SessionInfo};
use crate::db::users::{self, UserRow, UserView};
use crate::domain::Role;
use crate::error::AppError;
use crate::fleet::offboarding::{self, Plan};
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    let mut v = vec![
        RouteDef::get("/users", Access::STAFF, list_page),
        RouteDef::get("/users/new", Access::ADMIN, new_page),
        RouteDef::post("/users", Access::ADMIN, create_form),
        RouteDef::get("/users/{id}", Access::SignedIn, user_page),
        RouteDef::post("/users/{id}", Access::ADMIN, edit_form),
        RouteDef::post("/users/{id}/disable", Access::ADMIN, disable_form),
        RouteDef::post("/users/{id}/enable", Access::ADMIN, enable_form),
        RouteDef::post("/users/{id}/reset-password", Access::ADMIN, reset_form),
    ];
    v.extend(api::routes());
    v
}

fn not_found() -> AppError {
    AppError::NotFound("no such user".into())
}

/// The user, if `me` may see them; otherwise the same 404 as a missing id.
async fn visible_user(db: &PgPool, me: &CurrentUser, id: Uuid) -> Result<UserRow, AppError> {
    if !me.may_read_user(id) {
        return Err(not_found());
    }
    users::by_id(db, id).await?.ok_or_else(not_found)
}

fn parse_id(s: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(s).map_err(|_| not_found())
}

/// An administrator acting from this client.
fn admin<'a>(me: &'a CurrentUser, meta: &'a ClientMeta) -> ChangedBy<'a> {
    ChangedBy::Admin { me, meta }
}

/// Creating an account, or enabling a disabled one, needs room under the
/// license's `max_users`.
async fn create(
    state: &AppState,
    by: ChangedBy<'_>,
    new: NewAccount,
) -> Result<accounts::WithPassword, AppError> {
    crate::licensing::check_new_user(&state.license, &state.db).await?;
    accounts::create(&state.db, &state.passwords, by, new).await
}

/// See [`create`] for the license check on enabling.
async fn set_disabled(
    state: &AppState,
    by: ChangedBy<'_>,
    id: Uuid,
    disabled: bool,
) -> Result<UserRow, AppError> {
    if !disabled
        && users::by_id(&state.db, id)
            .await?
            .is_some_and(|u| u.disabled)
    {
        crate::licensing::check_new_user(&state.license, &state.db).await?;
    }
    let row = accounts::set_disabled(&state.db, by, id, disabled).await?;
    state.sessions.forget_user(id);
    // Offboarding by policy (issue 14 §10); again on every disable, so a
    // revocation OpenBao refused the first time is finished by the next.
    if let (true, ChangedBy::Admin { me, meta }) = (disabled, by) {
        offboarding::offboard(&state.db, &state.pki(), me, meta, id, &row.username).await?;
    }
    Ok(row)
}

/// A new one-time password; every session of the account ends.
async fn reset_password(
    state: &AppState,
    by: ChangedBy<'_>,
    id: Uuid,
) -> Result<(UserRow, String), AppError> {
    let r = accounts::reset_password(
        &state.db,
        &state.passwords,
        by,
        id,
        NewPassword::Generate,
        true,
    )
    .await?;
    state.sessions.forget_user(id);
    Ok((r.user, r.one_time_password.unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    q: Option<String>,
    after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// A page of users and the `after` of the next one.
async fn list_users(
    db: &PgPool,
    p: &ListParams,
) -> Result<(Vec<UserView>, Option<String>), AppError> {
    let size = p.limit.unwrap_or(users::PAGE_SIZE).clamp(1, 200);
    let mut rows = users::search(db, p.q.as_deref(), p.after.as_deref(), size + 1).await?;
    let next = if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last().map(|u| u.username.clone())
    } else {
        None
    };
    Ok((rows.iter().map(UserRow::view).collect(), next))
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    me: Option<Nav>,
    q: String,
    users: Vec<UserView>,
    next_after: Option<String>,
    can_admin: bool,
}

#[derive(Template)]
#[template(path = "users_table_partial.html")]
struct UsersTable {
    q: String,
    users: Vec<UserView>,
    next_after: Option<String>,
}

async fn list_page(
    State(state): State<AppState>,
    me: CurrentUser,
    hx: HxRequest,
    Query(p): Query<ListParams>,
) -> Result<Html<String>, AppError> {
    let (list, next_after) = list_users(&state.db, &p).await?;
    let q = p.q.clone().unwrap_or_default();
    if hx.wants_partial() {
        return render(&UsersTable {
            q,
            users: list,
            next_after,
        });
    }
    render(&UsersPage {
        me: nav(&me),
        q,
        users: list,
        next_after,
        can_admin: me.role == Role::Admin,
    })
}

#[derive(Template)]
#[template(path = "user_new.html")]
struct NewUserPage {
    me: Option<Nav>,
    roles: Vec<(&'static str, &'static str)>,
}

fn role_options() -> Vec<(&'static str, &'static str)> {
    Role::ALL.iter().map(|r| (r.as_str(), r.label())).collect()
}

async fn new_page(me: CurrentUser) -> Result<Html<String>, AppError> {
    render(&NewUserPage {
        me: nav(&me),
        roles: role_options(),
    })
}

#[derive(Template)]
#[template(path = "user_password_partial.html")]
struct OneTimePasswordCard {
    user: UserView,
    password: String,
    created: bool,
}

#[derive(Template)]
#[template(path = "user_password.html")]
struct OneTimePasswordPage {
    me: Option<Nav>,
    user: UserView,
    password: String,
    created: bool,
}

#[derive(Deserialize)]
struct CreateForm {
    username: String,
    display_name: String,
    #[serde(default)]
    email: Option<String>,
    role: String,
}

fn parse_role(s: &str) -> Result<Role, AppError> {
    Role::parse(s).map_err(|e| AppError::Unprocessable(e.to_string()))
}

async fn create_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    hx: HxRequest,
    Form(f): Form<CreateForm>,
) -> Result<Response, AppError> {
    let created = create(
        &state,
        admin(&me, &meta),
        NewAccount {
            username: f.username,
            display_name: Some(f.display_name),
            email: f.email,
            role: parse_role(&f.role)?,
            password: NewPassword::Generate,
            // A password someone else chose is changed at the first sign-in.
            must_change_password: true,
        },
    )
    .await?;
    let user = created.user.view();
    let password = created.one_time_password.unwrap_or_default();
    let page = if hx.htmx {
        render(&OneTimePasswordCard {
            user,
            password,
            created: true,
        })?
    } else {
        render(&OneTimePasswordPage {
            me: nav(&me),
            user,
            password,
            created: true,
        })?
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        page,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    me: Option<Nav>,
    user: UserView,
    sessions: Vec<SessionInfo>,
    show_sessions: bool,
    can_admin: bool,
    is_self: bool,
    roles: Vec<(&'static str, &'static str)>,
    notice: Option<&'static str>,
    /// What disabling this user will do (admins, enabled users only).
    offboarding: Option<Plan>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DoneParam {
    done: Option<String>,
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "saved" => Some("Saved."),
        "disabled" => Some("The account is disabled and its sessions have ended."),
        "enabled" => Some("The account is enabled."),
        _ => None,
    }
}

async fn user_page(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<String>,
    Query(d): Query<DoneParam>,
) -> Result<Html<String>, AppError> {
    let id = parse_id(&id)?;
    let user = visible_user(&state.db, &me, id).await?;
    let show_sessions = me.role == Role::Admin || me.user_id == id;
    let sessions = if show_sessions {
        sessions::list_for_user(&state.db, id).await?
    } else {
        vec![]
    };
    let offboarding = if me.role == Role::Admin && !user.disabled {
        Some(offboarding::plan(&state.db, id).await?)
    } else {
        None
    };
    render(&UserPage {
        offboarding,
        me: nav(&me),
        user: user.view(),
        sessions,
        show_sessions,
        can_admin: me.role == Role::Admin,
        is_self: me.user_id == id,
        roles: role_options(),
        notice: notice(d.done.as_deref()),
    })
}

#[derive(Deserialize)]
struct EditForm {
    display_name: String,
    #[serde(default)]
    email: Option<String>,
    role: String,
}

async fn edit_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<EditForm>,
) -> Result<Redirect, AppError> {
    let id = parse_id(&id)?;
    let change = ProfileChange {
        display_name: Some(f.display_name),
        email: Some(f.email),
        role: Some(parse_role(&f.role)?),
    };
    accounts::update(&state.db, admin(&me, &meta), id, change).await?;
    state.sessions.forget_user(id);
    Ok(Redirect::to(&format!("/users/{id}?done=saved")))
}

async fn disable_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Redirect, AppError> {
    toggle_form(&state, admin(&me, &meta), &id, true).await
}

async fn enable_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Redirect, AppError> {
    toggle_form(&state, admin(&me, &meta), &id, false).await
}

async fn toggle_form(
    state: &AppState,
    by: ChangedBy<'_>,
    id: &str,
    disabled: bool,
) -> Result<Redirect, AppError> {
    let id = parse_id(id)?;
    set_disabled(state, by, id, disabled).await?;
    let done = if disabled { "disabled" } else { "enabled" };
    Ok(Redirect::to(&format!("/users/{id}?done={done}")))
}

async fn reset_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Html<String>, AppError> {
    let id = parse_id(&id)?;
    let (row, password) = reset_password(&state, admin(&me, &meta), id).await?;
    render(&OneTimePasswordPage {
        me: nav(&me),
        user: row.view(),
        password,
        created: false,
    })
}
