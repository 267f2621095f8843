//! User administration (pages and API) and sign-in lockouts.
//!
//! Admins create, edit, disable/enable users and reset passwords; helpdesk
//! and auditors read; a plain user sees only their own profile. Reading
//! someone else's profile without the right answers 404, the same as an id
//! that does not exist.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::audit::{self, AuditEvent};
use crate::auth::password::{check_new_password, generate_password};
use crate::auth::throttle::{self, Lockout, Scope};
use crate::auth::{Access, ClientMeta, CurrentUser, Role};
use crate::db::sessions::{self, SessionInfo};
use crate::db::users::{self, NewUser, UserRow, UserView};
use crate::error::AppError;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/users", Access::STAFF, list_page),
        RouteDef::get("/users/new", Access::ADMIN, new_page),
        RouteDef::post("/users", Access::ADMIN, create_form),
        RouteDef::get("/users/{id}", Access::SignedIn, user_page),
        RouteDef::post("/users/{id}", Access::ADMIN, edit_form),
        RouteDef::post("/users/{id}/disable", Access::ADMIN, disable_form),
        RouteDef::post("/users/{id}/enable", Access::ADMIN, enable_form),
        RouteDef::post("/users/{id}/reset-password", Access::ADMIN, reset_form),
        RouteDef::get("/lockouts", Access::ADMIN, lockouts_page),
        RouteDef::post("/lockouts/clear", Access::ADMIN, clear_lockout_form),
        RouteDef::get("/api/users", Access::STAFF, api_list),
        RouteDef::post("/api/users", Access::ADMIN, api_create),
        RouteDef::get("/api/users/{id}", Access::SignedIn, api_get),
        RouteDef::patch("/api/users/{id}", Access::ADMIN, api_update),
        RouteDef::post("/api/users/{id}/disable", Access::ADMIN, api_disable),
        RouteDef::post("/api/users/{id}/enable", Access::ADMIN, api_enable),
        RouteDef::post("/api/users/{id}/reset-password", Access::ADMIN, api_reset),
        RouteDef::get("/api/lockouts", Access::ADMIN, api_lockouts),
        RouteDef::delete(
            "/api/lockouts/{scope}/{key}",
            Access::ADMIN,
            api_clear_lockout,
        ),
    ]
}

fn not_found() -> AppError {
    AppError::NotFound("no such user".into())
}

/// The user, if `me` may see them; otherwise the same 404 as a missing id.
async fn visible_user(state: &AppState, me: &CurrentUser, id: Uuid) -> Result<UserRow, AppError> {
    if !me.may_read_user(id) {
        return Err(not_found());
    }
    users::by_id(&state.db, id).await?.ok_or_else(not_found)
}

fn parse_id(s: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(s).map_err(|_| not_found())
}

// ---- operations shared by pages and API ---------------------------------

struct CreateInput {
    username: String,
    display_name: String,
    email: Option<String>,
    role: Role,
    password: Option<SecretString>,
}

/// Create a user; returns the row and the one-time password when generated.
async fn create_user(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    input: CreateInput,
) -> Result<(UserRow, Option<String>), AppError> {
    use secrecy::ExposeSecret;
    crate::licensing::check_new_user(state).await?;
    let username = users::validate_username(&input.username)?;
    let display_name = users::validate_display_name(&input.display_name)?;
    let email = users::validate_email(input.email.as_deref())?;
    let (password, generated) = match input.password {
        Some(p) => {
            check_new_password(p.expose_secret())?;
            (p, None)
        }
        None => {
            let g = generate_password();
            (SecretString::from(g.clone()), Some(g))
        }
    };
    let hash = state.passwords.hash(&password).await?;
    let mut tx = state.db.begin().await?;
    let row = users::insert(
        &mut *tx,
        &NewUser {
            username,
            display_name,
            email,
            role: input.role,
            password_hash: hash,
            // A password someone else chose is changed at the first sign-in.
            must_change_password: true,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("user.create")
            .actor(me)
            .target("user", row.id)
            .details(json!({"username": row.username, "role": row.role, "display_name": row.display_name}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    Ok((row, generated))
}

#[derive(Default)]
struct UpdateInput {
    display_name: Option<String>,
    email: Option<Option<String>>,
    role: Option<Role>,
}

async fn update_user(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
    input: UpdateInput,
) -> Result<UserRow, AppError> {
    let mut tx = state.db.begin().await?;
    let cur = users::by_id_for_update(&mut *tx, id)
        .await?
        .ok_or_else(not_found)?;
    let display_name = match &input.display_name {
        Some(d) => users::validate_display_name(d)?,
        None => cur.display_name.clone(),
    };
    let email = match &input.email {
        Some(e) => users::validate_email(e.as_deref())?,
        None => cur.email.clone(),
    };
    let role = input.role.unwrap_or(cur.role);
    if cur.role == Role::Admin && role != Role::Admin && !cur.disabled {
        lock_admins(&mut tx).await?;
        if users::count_enabled_admins(&mut *tx).await? <= 1 {
            return Err(AppError::Conflict(
                "the last administrator cannot lose the admin role".into(),
            ));
        }
    }
    users::update_profile(&mut *tx, id, &display_name, email.as_deref(), role).await?;
    let mut changes = serde_json::Map::new();
    if display_name != cur.display_name {
        changes.insert(
            "display_name".into(),
            json!({"from": cur.display_name, "to": display_name}),
        );
    }
    if email != cur.email {
        changes.insert("email".into(), json!({"from": cur.email, "to": email}));
    }
    if role != cur.role {
        changes.insert(
            "role".into(),
            json!({"from": cur.role, "to": role.as_str()}),
        );
    }
    let action = if role != cur.role {
        "user.role_change"
    } else {
        "user.update"
    };
    audit::record(
        &mut tx,
        AuditEvent::new(action)
            .actor(me)
            .target("user", id)
            .details(json!({"username": cur.username, "changes": changes}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    users::by_id(&state.db, id).await?.ok_or_else(not_found)
}

/// Serialises "is this the last admin?" checks against each other.
async fn lock_admins(tx: &mut sqlx::PgConnection) -> Result<(), AppError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kleidia.last_admin'))")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn set_disabled(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
    disabled: bool,
) -> Result<UserRow, AppError> {
    let mut tx = state.db.begin().await?;
    let cur = users::by_id_for_update(&mut *tx, id)
        .await?
        .ok_or_else(not_found)?;
    if !disabled && cur.disabled {
        crate::licensing::check_new_user(state).await?;
    }
    if disabled && id == me.user_id {
        return Err(AppError::Conflict(
            "you cannot disable your own account".into(),
        ));
    }
    if disabled && cur.role == Role::Admin && !cur.disabled {
        lock_admins(&mut tx).await?;
        if users::count_enabled_admins(&mut *tx).await? <= 1 {
            return Err(AppError::Conflict(
                "the last administrator cannot be disabled".into(),
            ));
        }
    }
    users::set_disabled(&mut *tx, id, disabled).await?;
    // Disabling ends every session and so every JWT of the account at once.
    let ended = if disabled {
        sessions::delete_for_user(&mut *tx, id).await?
    } else {
        0
    };
    audit::record(
        &mut tx,
        AuditEvent::new(if disabled {
            "user.disable"
        } else {
            "user.enable"
        })
        .actor(me)
        .target("user", id)
        .details(json!({"username": cur.username, "sessions_ended": ended}))
        .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    users::by_id(&state.db, id).await?.ok_or_else(not_found)
}

/// A new one-time password; every session of the account ends.
async fn reset_password(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    id: Uuid,
) -> Result<(UserRow, String), AppError> {
    let pw = generate_password();
    let hash = state
        .passwords
        .hash(&SecretString::from(pw.clone()))
        .await?;
    let mut tx = state.db.begin().await?;
    let cur = users::by_id_for_update(&mut *tx, id)
        .await?
        .ok_or_else(not_found)?;
    users::set_password(&mut *tx, id, &hash, true).await?;
    let ended = sessions::delete_for_user(&mut *tx, id).await?;
    audit::record(
        &mut tx,
        AuditEvent::new("user.password_reset")
            .actor(me)
            .target("user", id)
            .details(json!({"username": cur.username, "sessions_ended": ended}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    Ok((cur, pw))
}

async fn clear_lockout(
    state: &AppState,
    me: &CurrentUser,
    meta: &ClientMeta,
    scope: &str,
    key: &str,
) -> Result<(), AppError> {
    let scope = Scope::parse(scope).ok_or_else(|| AppError::NotFound("no such lockout".into()))?;
    let mut tx = state.db.begin().await?;
    if !throttle::clear(&mut tx, scope, key).await? {
        return Err(AppError::NotFound("no such lockout".into()));
    }
    audit::record(
        &mut tx,
        AuditEvent::new("login.lockout_clear")
            .actor(me)
            .target(&format!("lockout.{}", scope.as_str()), key)
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---- pages ---------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ListParams {
    q: Option<String>,
    after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
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

async fn list_users(
    state: &AppState,
    p: &ListParams,
) -> Result<(Vec<UserView>, Option<String>), AppError> {
    let size = p.limit.unwrap_or(users::PAGE_SIZE).clamp(1, 200);
    let mut rows = users::search(&state.db, p.q.as_deref(), p.after.as_deref(), size + 1).await?;
    let next = if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last().map(|u| u.username.clone())
    } else {
        None
    };
    Ok((rows.iter().map(UserRow::view).collect(), next))
}

async fn list_page(
    State(state): State<AppState>,
    me: CurrentUser,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Html<String>, AppError> {
    let (list, next_after) = list_users(&state, &p).await?;
    let q = p.q.clone().unwrap_or_default();
    if headers.contains_key("hx-request") {
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
    Form(f): Form<CreateForm>,
) -> Result<Response, AppError> {
    let (row, pw) = create_user(
        &state,
        &me,
        &meta,
        CreateInput {
            username: f.username,
            display_name: f.display_name,
            email: f.email,
            role: parse_role(&f.role)?,
            password: None,
        },
    )
    .await?;
    let page = render(&OneTimePasswordPage {
        me: nav(&me),
        user: row.view(),
        password: pw.unwrap_or_default(),
        created: true,
    })?;
    Ok((StatusCode::CREATED, page).into_response())
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
    let user = visible_user(&state, &me, id).await?;
    let show_sessions = me.role == Role::Admin || me.user_id == id;
    let sessions = if show_sessions {
        sessions::list_for_user(&state.db, id).await?
    } else {
        vec![]
    };
    render(&UserPage {
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
    update_user(
        &state,
        &me,
        &meta,
        id,
        UpdateInput {
            display_name: Some(f.display_name),
            email: Some(f.email),
            role: Some(parse_role(&f.role)?),
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/users/{id}?done=saved")))
}

async fn disable_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Redirect, AppError> {
    let id = parse_id(&id)?;
    set_disabled(&state, &me, &meta, id, true).await?;
    Ok(Redirect::to(&format!("/users/{id}?done=disabled")))
}

async fn enable_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Redirect, AppError> {
    let id = parse_id(&id)?;
    set_disabled(&state, &me, &meta, id, false).await?;
    Ok(Redirect::to(&format!("/users/{id}?done=enabled")))
}

async fn reset_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Html<String>, AppError> {
    let id = parse_id(&id)?;
    let (row, password) = reset_password(&state, &me, &meta, id).await?;
    render(&OneTimePasswordPage {
        me: nav(&me),
        user: row.view(),
        password,
        created: false,
    })
}

#[derive(Template)]
#[template(path = "lockouts.html")]
struct LockoutsPage {
    me: Option<Nav>,
    lockouts: Vec<Lockout>,
}

async fn lockouts_page(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Html<String>, AppError> {
    let lockouts = throttle::list(&state.db, &state.config.throttle).await?;
    render(&LockoutsPage {
        me: nav(&me),
        lockouts,
    })
}

#[derive(Deserialize)]
struct ClearForm {
    scope: String,
    key: String,
}

async fn clear_lockout_form(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<ClearForm>,
) -> Result<Redirect, AppError> {
    clear_lockout(&state, &me, &meta, &f.scope, &f.key).await?;
    Ok(Redirect::to("/lockouts"))
}

// ---- API -----------------------------------------------------------------

#[derive(Serialize)]
struct UserList {
    users: Vec<UserView>,
    /// Pass as `after` for the next page.
    next_after: Option<String>,
}

async fn api_list(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<UserList>, AppError> {
    let (list, next_after) = list_users(&state, &p).await?;
    Ok(Json(UserList {
        users: list,
        next_after,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiCreate {
    username: String,
    display_name: String,
    #[serde(default)]
    email: Option<String>,
    role: Role,
    /// Omit to have a one-time password generated and returned once.
    #[serde(default)]
    password: Option<SecretString>,
}

#[derive(Serialize)]
struct Created {
    user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<String>,
}

async fn api_create(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Json(b): Json<ApiCreate>,
) -> Result<(StatusCode, Json<Created>), AppError> {
    let (row, pw) = create_user(
        &state,
        &me,
        &meta,
        CreateInput {
            username: b.username,
            display_name: b.display_name,
            email: b.email,
            role: b.role,
            password: b.password,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            user: row.view(),
            one_time_password: pw,
        }),
    ))
}

async fn api_get(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(visible_user(&state, &me, id).await?.view()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiUpdate {
    #[serde(default)]
    display_name: Option<String>,
    /// `null` clears the address; absent leaves it.
    #[serde(default, with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default)]
    role: Option<Role>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Ok(Some(Option::<String>::deserialize(d)?))
    }
}

async fn api_update(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Json(b): Json<ApiUpdate>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    let row = update_user(
        &state,
        &me,
        &meta,
        id,
        UpdateInput {
            display_name: b.display_name,
            email: b.email,
            role: b.role,
        },
    )
    .await?;
    Ok(Json(row.view()))
}

async fn api_disable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(
        set_disabled(&state, &me, &meta, id, true).await?.view(),
    ))
}

async fn api_enable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(
        set_disabled(&state, &me, &meta, id, false).await?.view(),
    ))
}

#[derive(Serialize)]
struct Reset {
    user: UserView,
    one_time_password: String,
}

async fn api_reset(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<Reset>, AppError> {
    let id = parse_id(&id)?;
    let (row, pw) = reset_password(&state, &me, &meta, id).await?;
    Ok(Json(Reset {
        user: row.view(),
        one_time_password: pw,
    }))
}

async fn api_lockouts(State(state): State<AppState>) -> Result<Json<Vec<Lockout>>, AppError> {
    Ok(Json(
        throttle::list(&state.db, &state.config.throttle).await?,
    ))
}

async fn api_clear_lockout(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path((scope, key)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    clear_lockout(&state, &me, &meta, &scope, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
