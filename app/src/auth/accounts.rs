//! Account administration, one place for the web (admins, `web::users`) and
//! the command line (`kleidia user …`): create an account, edit a profile,
//! disable or enable, reset a password, clear a sign-in lockout. Each change
//! and its audit row are one transaction.
//!
//! The license is a layer up (`licensing`): the web checks
//! `licensing::check_new_user` before it creates or enables an account. The
//! command line does not, so the first administrator can always be created.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::password::{check_new_password, generate_password, Passwords};
use super::throttle::{self, Scope};
use super::CurrentUser;
use crate::audit::{self, AuditEvent, ClientMeta};
use crate::db::users::{NewUser, UserRow};
use crate::db::{sessions, users};
use crate::domain::{DisplayName, EmailAddress, Role, Username};
use crate::error::AppError;

/// Who changes an account, for the audit log and the self-protection rules.
#[derive(Debug, Clone, Copy)]
pub enum ChangedBy<'a> {
    /// A signed-in administrator, from this client.
    Admin {
        me: &'a CurrentUser,
        meta: &'a ClientMeta,
    },
    /// `kleidia user …` on the server: audited as actor `cli` with
    /// `"via": "cli"` in the details.
    Cli,
}

impl ChangedBy<'_> {
    fn user_id(&self) -> Option<Uuid> {
        match self {
            ChangedBy::Admin { me, .. } => Some(me.user_id),
            ChangedBy::Cli => None,
        }
    }

    /// `event` with this actor and `details`.
    fn stamp(&self, event: AuditEvent, mut details: Value) -> AuditEvent {
        match self {
            ChangedBy::Admin { me, meta } => event.actor(*me).details(details).from_client(meta),
            ChangedBy::Cli => {
                if let Value::Object(m) = &mut details {
                    m.insert("via".into(), json!("cli"));
                }
                event.actor_named(None, "cli").details(details)
            }
        }
    }
}

/// The password a new or reset account gets.
pub enum NewPassword {
    /// Chosen by the person creating the account (checked for length).
    Given(SecretString),
    /// Generated here and shown once.
    Generate,
}

impl NewPassword {
    /// The password, its hash, and the password again when it was generated
    /// (the one time it is shown).
    async fn hashed(self, passwords: &Passwords) -> Result<(String, Option<String>), AppError> {
        let (password, generated) = match self {
            NewPassword::Given(p) => {
                check_new_password(p.expose_secret())?;
                (p, None)
            }
            NewPassword::Generate => {
                let g = generate_password();
                (SecretString::from(g.clone()), Some(g))
            }
        };
        Ok((passwords.hash(&password).await?, generated))
    }
}

fn on_user(action: &str, id: Uuid) -> AuditEvent {
    AuditEvent::new(action).target("user", id)
}

fn not_found() -> AppError {
    AppError::NotFound("no such user".into())
}

pub struct NewAccount {
    pub username: String,
    /// `None`: the (normalised) username.
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub role: Role,
    pub password: NewPassword,
    /// Make them choose their own password at the first sign-in.
    pub must_change_password: bool,
}

/// An account just created or given a new password.
pub struct WithPassword {
    pub user: UserRow,
    /// The generated password, shown once.
    pub one_time_password: Option<String>,
}

/// Create an account; a taken username is `Conflict`.
pub async fn create(
    db: &PgPool,
    passwords: &Passwords,
    by: ChangedBy<'_>,
    new: NewAccount,
) -> Result<WithPassword, AppError> {
    let username = Username::parse(&new.username)?;
    let display_name =
        DisplayName::parse(new.display_name.as_deref().unwrap_or(username.as_str()))?;
    let email = EmailAddress::parse_optional(new.email.as_deref())?;
    let (hash, one_time_password) = new.password.hashed(passwords).await?;
    let mut tx = db.begin().await?;
    let user = users::insert(
        &mut *tx,
        &NewUser {
            username,
            display_name,
            email,
            role: new.role,
            password_hash: hash,
            must_change_password: new.must_change_password,
        },
    )
    .await?;
    let details =
        json!({"username": user.username, "role": user.role, "display_name": user.display_name});
    audit::record(&mut tx, by.stamp(on_user("user.create", user.id), details)).await?;
    tx.commit().await?;
    Ok(WithPassword {
        user,
        one_time_password,
    })
}

/// A profile edit: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    /// `Some(None)` clears the address.
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
}

/// Change the display name, email or role; the last enabled administrator
/// keeps the admin role. Returns the account as it is now.
pub async fn update(
    db: &PgPool,
    by: ChangedBy<'_>,
    id: Uuid,
    change: ProfileChange,
) -> Result<UserRow, AppError> {
    let mut tx = db.begin().await?;
    let cur = locked(&mut tx, id).await?;
    let display_name = match &change.display_name {
        Some(d) => DisplayName::parse(d)?.into_string(),
        None => cur.display_name.clone(),
    };
    let email = match &change.email {
        Some(e) => EmailAddress::parse_optional(e.as_deref())?.map(EmailAddress::into_string),
        None => cur.email.clone(),
    };
    let role = change.role.unwrap_or(cur.role);
    if cur.role == Role::Admin && role != Role::Admin && !cur.disabled {
        keep_an_admin(&mut tx, "lose the admin role").await?;
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
        changes.insert("role".into(), json!({"from": cur.role, "to": role}));
    }
    let action = if role != cur.role {
        "user.role_change"
    } else {
        "user.update"
    };
    let details = json!({"username": cur.username, "changes": changes});
    audit::record(&mut tx, by.stamp(on_user(action, id), details)).await?;
    tx.commit().await?;
    users::by_id(db, id).await?.ok_or_else(not_found)
}

/// Disable or enable an account. Disabling ends every session and so every
/// JWT of the account at once; nobody disables themselves or the last
/// enabled administrator. Returns the account as it is now.
pub async fn set_disabled(
    db: &PgPool,
    by: ChangedBy<'_>,
    id: Uuid,
    disabled: bool,
) -> Result<UserRow, AppError> {
    let mut tx = db.begin().await?;
    let cur = locked(&mut tx, id).await?;
    if disabled && by.user_id() == Some(id) {
        return Err(AppError::Conflict(
            "you cannot disable your own account".into(),
        ));
    }
    if disabled && cur.role == Role::Admin && !cur.disabled {
        keep_an_admin(&mut tx, "be disabled").await?;
    }
    users::set_disabled(&mut *tx, id, disabled).await?;
    let ended = if disabled {
        sessions::delete_for_user(&mut *tx, id).await?
    } else {
        0
    };
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let details = json!({"username": cur.username, "sessions_ended": ended});
    audit::record(&mut tx, by.stamp(on_user(action, id), details)).await?;
    tx.commit().await?;
    users::by_id(db, id).await?.ok_or_else(not_found)
}

/// A password reset and what it did.
pub struct Reset {
    /// The account as it was before the reset.
    pub user: UserRow,
    pub one_time_password: Option<String>,
    pub sessions_ended: u64,
}

/// Set a new password; every session of the account ends. Enables nothing.
pub async fn reset_password(
    db: &PgPool,
    passwords: &Passwords,
    by: ChangedBy<'_>,
    id: Uuid,
    password: NewPassword,
    must_change_password: bool,
) -> Result<Reset, AppError> {
    let (hash, one_time_password) = password.hashed(passwords).await?;
    let mut tx = db.begin().await?;
    let user = locked(&mut tx, id).await?;
    users::set_password(&mut *tx, id, &hash, must_change_password).await?;
    let ended = sessions::delete_for_user(&mut *tx, id).await?;
    let details = json!({"username": user.username, "sessions_ended": ended});
    audit::record(
        &mut tx,
        by.stamp(on_user("user.password_reset", id), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Reset {
        user,
        one_time_password,
        sessions_ended: ended,
    })
}

/// Lift a sign-in lockout (`scope` is `account` or `client`).
pub async fn clear_lockout(
    db: &PgPool,
    by: ChangedBy<'_>,
    scope: &str,
    key: &str,
) -> Result<(), AppError> {
    let no_such = || AppError::NotFound("no such lockout".into());
    let scope = Scope::parse(scope).ok_or_else(no_such)?;
    let mut tx = db.begin().await?;
    if !throttle::clear(&mut tx, scope, key).await? {
        return Err(no_such());
    }
    let event =
        AuditEvent::new("login.lockout_clear").target(&format!("lockout.{}", scope.as_str()), key);
    audit::record(&mut tx, by.stamp(event, json!({}))).await?;
    tx.commit().await?;
    Ok(())
}

/// The account, locked until the transaction ends.
async fn locked(tx: &mut PgConnection, id: Uuid) -> Result<UserRow, AppError> {
    users::by_id_for_update(&mut *tx, id)
        .await?
        .ok_or_else(not_found)
}

/// Refuses a change that takes an enabled administrator away when they are
/// the last one. The advisory lock serialises these checks against each
/// other, so two admins cannot demote each other at the same moment.
async fn keep_an_admin(tx: &mut PgConnection, change: &str) -> Result<(), AppError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kleidia.last_admin'))")
        .execute(&mut *tx)
        .await?;
    if users::count_enabled_admins(&mut *tx).await? <= 1 {
        return Err(AppError::Conflict(format!(
            "the last administrator cannot {change}"
        )));
    }
    Ok(())
}
