//! Who a person is to Kleidia (`Role`) and how they are signed in
//! (`SessionKind`). Both are stored as text (`users.role`,
//! `user_sessions.kind`, each with a CHECK constraint) and serialised under
//! the same lower-case names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::stored_as_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum Role {
    /// Everything, including user and settings administration.
    Admin,
    /// Operates other people's devices; no user or settings administration.
    Helpdesk,
    /// Reads everything, including the audit log; changes nothing.
    Auditor,
    /// Own devices only.
    User,
}

/// A role name that is none of `admin`, `helpdesk`, `auditor`, `user`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (admin, helpdesk, auditor, user)")]
pub struct ParseRoleError(pub String);

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Helpdesk, Role::Auditor, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Helpdesk => "helpdesk",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }

    /// The role named exactly `s` (lower case, as stored).
    pub fn parse(s: &str) -> Result<Role, ParseRoleError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError(s.chars().take(64).collect()))
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "Administrator",
            Role::Helpdesk => "Helpdesk",
            Role::Auditor => "Auditor",
            Role::User => "User",
        }
    }

    /// May see other people's profiles (read-only unless admin).
    pub fn reads_all_users(self) -> bool {
        matches!(self, Role::Admin | Role::Helpdesk | Role::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s)
    }
}

stored_as_text!(Role);

/// How a request is signed in: the browser session cookie or an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum SessionKind {
    Browser,
    Api,
}

/// A session kind that is neither `browser` nor `api`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown session kind {0:?} (browser, api)")]
pub struct ParseSessionKindError(pub String);

impl SessionKind {
    pub const ALL: [SessionKind; 2] = [SessionKind::Browser, SessionKind::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Browser => "browser",
            SessionKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Result<SessionKind, ParseSessionKindError> {
        SessionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseSessionKindError(s.chars().take(64).collect()))
    }
}

impl fmt::Display for SessionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionKind {
    type Err = ParseSessionKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionKind::parse(s)
    }
}

stored_as_text!(SessionKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::json!(r.as_str()))
            );
        }
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn an_unknown_role_is_refused_with_the_names_that_exist() {
        let e = "root".parse::<Role>().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("unknown role \"root\" (admin, helpdesk, auditor, user)")
        );
    }

    #[test]
    fn session_kinds_round_trip_through_their_names() {
        for k in SessionKind::ALL {
            assert_eq!(SessionKind::parse(k.as_str()), Ok(k));
            assert_eq!(
                serde_json::to_value(k).ok(),
                Some(serde_json::json!(k.as_str()))
            );
        }
        let e = SessionKind::parse("ssh").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("unknown session kind \"ssh\" (browser, api)")
        );
    }
}
