//! Checking a username and password, shared by the login form and
//! `POST /api/auth/login`. The answer never tells whether the name exists:
//! an unknown name costs the same hash, gets the same message and status,
//! and is throttled under the name as typed.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::password::Passwords;
use super::throttle::{self, Reserved, Scope};
use crate::audit::{self, AuditEvent, ClientMeta};
use crate::config::Config;
use crate::db::sessions::{self, NewSession};
use crate::db::users::{self, UserRow};
use crate::domain::{SessionKind, Username};
use crate::error::AppError;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the username or password is wrong")]
    BadCredentials,
    #[error("too many failed sign-ins; try again later")]
    Throttled { until: OffsetDateTime },
    /// The password queue is full: nothing was checked or counted.
    #[error("too many sign-ins are being checked right now; try again in a moment")]
    Busy,
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<sqlx::Error> for LoginError {
    fn from(e: sqlx::Error) -> Self {
        LoginError::App(e.into())
    }
}

impl From<LoginError> for AppError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadCredentials => AppError::Unauthorized,
            LoginError::Throttled { .. } => AppError::TooManyRequests(e.to_string()),
            LoginError::Busy => AppError::Unavailable(e.to_string()),
            LoginError::App(e) => e,
        }
    }
}

impl LoginError {
    /// Seconds for `Retry-After`, for the refusals that have one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            LoginError::Throttled { until } => {
                let secs = (*until - OffsetDateTime::now_utc()).whole_seconds();
                Some(secs.max(1) as u64)
            }
            LoginError::Busy => Some(1),
            _ => None,
        }
    }
}

pub struct LoggedIn {
    pub user: UserRow,
    pub session_id: Uuid,
}

/// The throttling key of a username as typed (bounded, lower-case).
fn account_key(username: &str) -> String {
    Username::normalize(username).chars().take(64).collect()
}

/// Check the credentials and, when they are right, create a session row of
/// `kind` (with its `login.ok` audit row, in one transaction).
///
/// Under parallel guessing (issue 14): the attempt takes a place in the
/// bounded hash queue first (none left: [`LoginError::Busy`], nothing
/// counted), then is counted as a failure of the account before the
/// password is checked ([`throttle::reserve`]), so no number of parallel
/// requests gets more than `account_free_failures` verdicts per lock
/// window. A success clears the account's counter.
pub async fn login(
    db: &PgPool,
    passwords: &Passwords,
    cfg: &Config,
    username: &str,
    password: &SecretString,
    kind: SessionKind,
    meta: &ClientMeta,
) -> Result<LoggedIn, LoginError> {
    let name = account_key(username);
    let client = meta.ip.clone().unwrap_or_else(|| "unknown".into());

    let Some(_place) = passwords.queue_place() else {
        tracing::warn!(
            via = kind.as_str(),
            "sign-in refused: the password queue is full"
        );
        return Err(LoginError::Busy);
    };
    let acct_lock = match throttle::reserve(db, &cfg.throttle, &name, &client).await? {
        Reserved::Locked(until) => {
            audit::record_alone(
                db,
                AuditEvent::new("login.failed")
                    .actor_named(None, &name)
                    .details(json!({"reason": "throttled", "via": kind.as_str()}))
                    .from_client(meta),
            )
            .await?;
            return Err(LoginError::Throttled { until });
        }
        Reserved::Go {
            account_locked_until,
        } => account_locked_until,
    };

    let user = users::by_username(db, &name).await?;
    let verified = passwords
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let usable = matches!(&user, Some(u) if verified.ok && !u.disabled);
    if !usable {
        let reason = match &user {
            None => "unknown_user",
            Some(u) if u.disabled && verified.ok => "disabled",
            Some(_) => "bad_password",
        };
        let actor = user.as_ref().map(|u| u.id);
        // The account's failure was counted by the reservation.
        let mut tx = db.begin().await?;
        let client_lock =
            throttle::record_failure(&mut tx, &cfg.throttle, Scope::Client, &client).await?;
        audit::record(
            &mut tx,
            AuditEvent::new("login.failed")
                .actor_named(actor, &name)
                .details(json!({
                    "reason": reason,
                    "via": kind.as_str(),
                    "account_locked_until": acct_lock.map(|t| t.unix_timestamp()),
                    "client_locked_until": client_lock.map(|t| t.unix_timestamp()),
                }))
                .from_client(meta),
        )
        .await?;
        tx.commit().await?;
        return Err(LoginError::BadCredentials);
    }
    let Some(user) = user else {
        return Err(LoginError::BadCredentials);
    };

    // Rehash outside the transaction: it takes a while.
    let new_hash = if verified.needs_rehash {
        Some(passwords.hash(password).await?)
    } else {
        None
    };
    let (idle, absolute) = match kind {
        SessionKind::Browser => (
            Duration::from_secs(cfg.session.idle_timeout_secs),
            Duration::from_secs(cfg.session.absolute_timeout_secs),
        ),
        SessionKind::Api => {
            let ttl = Duration::from_secs(cfg.auth.jwt_ttl_secs);
            (ttl, ttl)
        }
    };
    let mut tx = db.begin().await?;
    if let Some(h) = &new_hash {
        users::set_password(&mut *tx, user.id, h, user.must_change_password).await?;
    }
    throttle::clear(&mut tx, Scope::Account, &name).await?;
    users::record_login(&mut *tx, user.id).await?;
    let session_id = sessions::create(
        &mut *tx,
        NewSession {
            user_id: user.id,
            kind,
            idle,
            absolute,
            ip: meta.ip.as_deref(),
            user_agent: meta.user_agent.as_deref(),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("login.ok")
            .actor_named(Some(user.id), &user.username)
            .target("session", session_id)
            .details(json!({"via": kind.as_str(), "rehashed": new_hash.is_some()}))
            .from_client(meta),
    )
    .await?;
    tx.commit().await?;
    Ok(LoggedIn { user, session_id })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    use sqlx::PgPool;

    use super::*;
    use crate::db::users::NewUser;
    use crate::domain::{DisplayName, Role};
    use crate::state::AppState;
    use crate::web::rbac_tests::{make_user, test_state};

    async fn try_login(
        state: &AppState,
        username: &str,
        password: &SecretString,
        kind: SessionKind,
        ip: &str,
    ) -> Result<LoggedIn, LoginError> {
        let meta = ClientMeta {
            ip: Some(ip.into()),
            user_agent: None,
        };
        login(
            &state.db,
            &state.passwords,
            &state.config,
            username,
            password,
            kind,
            &meta,
        )
        .await
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn a_sign_in_with_a_hash_made_with_older_parameters_stores_a_fresh_one(db: PgPool) {
        let state = test_state(db).await;
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"olga's long password", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        let user = users::insert(
            &state.db,
            &NewUser {
                username: Username::parse("olga").unwrap(),
                display_name: DisplayName::parse("Olga").unwrap(),
                email: None,
                role: Role::User,
                password_hash: old.clone(),
                must_change_password: false,
            },
        )
        .await
        .unwrap();
        let pw = SecretString::from("olga's long password");
        try_login(&state, "Olga ", &pw, SessionKind::Browser, "10.0.0.1")
            .await
            .unwrap();
        let stored = users::by_id(&state.db, user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash;
        assert_ne!(stored, old);
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        // And the new hash still takes the same password.
        try_login(&state, "olga", &pw, SessionKind::Api, "10.0.0.1")
            .await
            .unwrap();
        let rehashed: Vec<bool> = sqlx::query_scalar(
            "SELECT (details->>'rehashed')::boolean FROM audit_log WHERE action = 'login.ok' ORDER BY id",
        )
        .fetch_all(&state.db)
        .await
        .unwrap();
        assert_eq!(rehashed, vec![true, false]);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn one_client_guessing_many_names_is_locked_out_even_for_a_valid_account(db: PgPool) {
        let mut state = test_state(db).await;
        let mut cfg = (*state.config).clone();
        cfg.throttle.client_free_failures = 3;
        cfg.throttle.account_free_failures = 100;
        state.config = Arc::new(cfg);
        make_user(&state, "vera", Role::User).await;
        let wrong = SecretString::from("wrong");
        for name in ["a", "b", "c"] {
            let e = try_login(&state, name, &wrong, SessionKind::Api, "192.0.2.7")
                .await
                .err()
                .unwrap();
            assert!(matches!(e, LoginError::BadCredentials), "{e}");
        }
        let right = SecretString::from("a password nobody types");
        let e = try_login(&state, "vera", &right, SessionKind::Api, "192.0.2.7")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, LoginError::Throttled { .. }), "{e}");
        // Another address is not affected, and a success does not reset the
        // locked address.
        try_login(&state, "vera", &right, SessionKind::Api, "192.0.2.8")
            .await
            .unwrap();
        let e = try_login(&state, "vera", &right, SessionKind::Api, "192.0.2.7")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, LoginError::Throttled { .. }), "{e}");
    }
}
