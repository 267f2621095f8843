//! `/api/users`: the JSON side of user administration.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{admin, create, parse_id, reset_password, set_disabled, visible_user, ListParams};
use crate::auth::accounts::{self, ChangedBy, NewAccount, NewPassword, ProfileChange};
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::db::users::UserView;
use crate::domain::Role;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::extract::{JsonBody, QueryParams};
use crate::web::RouteDef;

pub(super) fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/api/users", Access::STAFF, list)
            .query::<ListParams>()
            .gives::<UserList>(200, "a page of users"),
        RouteDef::post("/api/users", Access::ADMIN, create_user)
            .takes::<ApiCreate>()
            .gives::<Created>(201, "the new user (and its one-time password)"),
        RouteDef::get("/api/users/{id}", Access::SignedIn, get).gives::<UserView>(200, "the user"),
        RouteDef::patch("/api/users/{id}", Access::ADMIN, update)
            .takes::<ApiUpdate>()
            .gives::<UserView>(200, "the user as changed"),
        RouteDef::post("/api/users/{id}/disable", Access::ADMIN, disable)
            .takes_nothing()
            .gives::<UserView>(200, "the user, disabled; their sessions ended"),
        RouteDef::post("/api/users/{id}/enable", Access::ADMIN, enable)
            .takes_nothing()
            .gives::<UserView>(200, "the user, enabled"),
        RouteDef::post("/api/users/{id}/reset-password", Access::ADMIN, reset)
            .takes_nothing()
            .gives::<Reset>(200, "the user and their new one-time password"),
    ]
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserList {
    users: Vec<UserView>,
    /// Pass as `after` for the next page.
    next_after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<ListParams>,
) -> Result<Json<UserList>, AppError> {
    let (users, next_after) = super::list_users(&state.db, &p).await?;
    Ok(Json(UserList { users, next_after }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiCreate {
    username: String,
    display_name: String,
    #[serde(default)]
    email: Option<String>,
    role: Role,
    /// Omit to have a one-time password generated and returned once.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Created {
    user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<String>,
}

async fn create_user(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    JsonBody(b): JsonBody<ApiCreate>,
) -> Result<(StatusCode, Json<Created>), AppError> {
    let created = create(
        &state,
        admin(&me, &meta),
        NewAccount {
            username: b.username,
            display_name: Some(b.display_name),
            email: b.email,
            role: b.role,
            password: b.password.map_or(NewPassword::Generate, NewPassword::Given),
            // A password someone else chose is changed at the first sign-in.
            must_change_password: true,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            user: created.user.view(),
            one_time_password: created.one_time_password,
        }),
    ))
}

async fn get(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(visible_user(&state.db, &me, id).await?.view()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiUpdate {
    #[serde(default)]
    display_name: Option<String>,
    /// `null` clears the address; absent leaves it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
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

async fn update(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ApiUpdate>,
) -> Result<Json<UserView>, AppError> {
    let id = parse_id(&id)?;
    let change = ProfileChange {
        display_name: b.display_name,
        email: b.email,
        role: b.role,
    };
    let row = accounts::update(&state.db, admin(&me, &meta), id, change).await?;
    state.sessions.forget_user(id);
    Ok(Json(row.view()))
}

async fn disable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    toggle(&state, admin(&me, &meta), &id, true).await
}

async fn enable(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    toggle(&state, admin(&me, &meta), &id, false).await
}

async fn toggle(
    state: &AppState,
    by: ChangedBy<'_>,
    id: &str,
    disabled: bool,
) -> Result<Json<UserView>, AppError> {
    let row = set_disabled(state, by, parse_id(id)?, disabled).await?;
    Ok(Json(row.view()))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Reset {
    user: UserView,
    one_time_password: String,
}

async fn reset(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Json<Reset>, AppError> {
    let id = parse_id(&id)?;
    let (row, pw) = reset_password(&state, admin(&me, &meta), id).await?;
    Ok(Json(Reset {
        user: row.view(),
        one_time_password: pw,
    }))
}
