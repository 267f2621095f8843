//! Who is asking: the signed-in user (`CurrentUser`, found from the browser
//! session cookie or a Bearer JWT by `web::extract`), route access rules,
//! account administration, password hashing, JWTs, the PostgreSQL session
//! store and sign-in throttling.

pub mod accounts;
pub mod jwt;
pub mod login;
pub mod oidc;
pub mod password;
pub mod session_cache;
pub mod store;
pub mod throttle;

use uuid::Uuid;

use crate::audit;
use crate::db::sessions::SessionUserRow;
// Re-exported where callers have always found them.
pub use crate::audit::ClientMeta;
pub use crate::domain::{Role, SessionKind};

/// Session data key holding the `user_sessions.id` of a browser session.
pub const SESSION_KEY: &str = "kleidia.sid";

/// The route-level rule every route declares (see `web::routes`). Object-level
/// rules (a user sees only their own devices) are checked in the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user; the handler restricts objects to what they may see.
    SignedIn,
    /// Only these roles.
    Roles(&'static [Role]),
}

impl Access {
    pub const ADMIN: Access = Access::Roles(&[Role::Admin]);
    /// Admin and helpdesk: device operations for other people.
    pub const OPERATORS: Access = Access::Roles(&[Role::Admin, Role::Helpdesk]);
    /// Admin and auditor: the audit log.
    pub const AUDIT: Access = Access::Roles(&[Role::Admin, Role::Auditor]);
    /// Everyone but plain users: read access to the whole fleet and all users.
    pub const STAFF: Access = Access::Roles(&[Role::Admin, Role::Helpdesk, Role::Auditor]);

    /// `None` = not signed in.
    pub fn allows(self, role: Option<Role>) -> bool {
        match (self, role) {
            (Access::Public, _) => true,
            (_, None) => false,
            (Access::SignedIn, Some(_)) => true,
            (Access::Roles(rs), Some(r)) => rs.contains(&r),
        }
    }
}

/// The signed-in person behind a request, from the session cookie or a
/// `Authorization: Bearer <JWT>` header (which wins when both are present).
/// Extracting it answers 401 when neither identifies a live session of an
/// enabled account.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    /// `user_sessions.id` of the session this request runs on.
    pub session_id: Uuid,
    pub via: SessionKind,
    /// The password was set by someone else; pages send them to change it.
    pub must_change_password: bool,
}

impl CurrentUser {
    /// The caller may look at this user's profile (and, later, devices).
    pub fn may_read_user(&self, user_id: Uuid) -> bool {
        self.user_id == user_id || self.role.reads_all_users()
    }
}

impl From<SessionUserRow> for CurrentUser {
    fn from(r: SessionUserRow) -> Self {
        CurrentUser {
            user_id: r.user_id,
            username: r.username,
            display_name: r.display_name,
            email: r.email,
            role: r.role,
            session_id: r.session_id,
            via: r.kind,
            must_change_password: r.must_change_password,
        }
    }
}

impl audit::Actor for CurrentUser {
    fn actor_id(&self) -> Uuid {
        self.user_id
    }

    fn actor_name(&self) -> &str {
        &self.username
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules_deny_anonymous_callers_everything_but_public_routes() {
        assert!(Access::Public.allows(None));
        assert!(!Access::SignedIn.allows(None));
        assert!(Access::SignedIn.allows(Some(Role::User)));
        assert!(Access::ADMIN.allows(Some(Role::Admin)));
        assert!(!Access::ADMIN.allows(Some(Role::Helpdesk)));
        assert!(Access::AUDIT.allows(Some(Role::Auditor)));
        assert!(!Access::AUDIT.allows(Some(Role::Helpdesk)));
        assert!(!Access::STAFF.allows(Some(Role::User)));
    }
}
