//! Devices by URL: the pages (`/devices`, `/my/devices`, `/devices/{serial}`
//! and its forms) and the JSON API (`/api/devices…`), over `fleet::registry`.

mod api;
mod pages;

pub use pages::audit_line;

use super::RouteDef;
use crate::auth::{Access, Role};
use crate::error::AppError;
use crate::state::AppState;

/// Everyone who may change something: not auditors.
pub const CHANGERS: Access = Access::Roles(&[Role::Admin, Role::Helpdesk, Role::User]);

pub fn routes() -> Vec<RouteDef> {
    let mut v = api::routes();
    v.extend(pages::routes());
    v
}

/// The user a form names by username; `None` for an empty field.
async fn owner_by_name(state: &AppState, name: &str) -> Result<Option<uuid::Uuid>, AppError> {
    match name.trim() {
        "" => Ok(None),
        name => Ok(Some(
            crate::db::users::by_username(&state.db, &name.to_lowercase())
                .await?
                .ok_or_else(|| AppError::Unprocessable(format!("no user named {name}")))?
                .id,
        )),
    }
}
