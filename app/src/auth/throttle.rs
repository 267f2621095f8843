//! Sign-in throttling that never turns one person's typos into a lockout
//! for everybody behind the same proxy (issue 14 §2).
//!
//! - **Lockout, per (client address, account)** (scope `account`, key
//!   `"<client> <account>"`, the account as typed so an unknown name behaves
//!   like a real one): after `account_free_failures` failures the pair is
//!   locked for `base_delay_secs`, doubling with each further failure up to
//!   `max_delay_secs`. Every attempt is counted before its password is
//!   checked ([`reserve`]), so parallel guesses cannot overtake the lock. A
//!   success clears the pair. Someone else at the same address, or the same
//!   person elsewhere, is not affected.
//! - **Spraying, per client address** (scope `client`): the number of
//!   *distinct* accounts that failed from the address
//!   ([`record_client_failure`]). At `client_free_failures` of them the
//!   address is slowed down (429 with `Retry-After`, the same doubling
//!   delays). One person mistyping their own password many times is one
//!   account and never gets there; a spray over many accounts does. A
//!   success clears that account from the address's count, so people
//!   signing in normally behind a proxy do not add up.
//!
//! Counters start again after `reset_after_secs` without a failure.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::config::ThrottleConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Account,
    Client,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "account" => Some(Scope::Account),
            "client" => Some(Scope::Client),
            _ => None,
        }
    }
}

/// The lockout key of `account` (as typed, normalised) from `client`.
pub fn account_key(client: &str, account: &str) -> String {
    format!("{client} {account}")
}

/// The lock for the `n`th consecutive failure, if any.
pub fn lock_for(cfg: &ThrottleConfig, scope: Scope, failures: u32) -> Option<std::time::Duration> {
    let free = match scope {
        Scope::Account => cfg.account_free_failures,
        Scope::Client => cfg.client_free_failures,
    };
    if failures < free.max(1) {
        return None;
    }
    let doublings = (failures - free.max(1)).min(20);
    let secs = cfg
        .base_delay_secs
        .saturating_mul(1u64 << doublings)
        .min(cfg.max_delay_secs);
    Some(std::time::Duration::from_secs(secs.max(1)))
}

/// What [`reserve`] found: go on (this attempt is counted as a failure of
/// the account until it succeeds), or a key is locked until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The lock this attempt set on the account (it was the last free one).
    Go {
        account_locked_until: Option<OffsetDateTime>,
    },
    Locked(OffsetDateTime, Scope),
}

/// Count this attempt as a failure of the account *before* the password is
/// checked, holding the account's row locked (and refusing when the client
/// is locked). Whatever the parallelism, at most `account_free_failures`
/// attempts per account get past this between two locks; the attempt that
/// reaches the limit sets the lock itself. A success clears the account.
///
/// The client's count of failing accounts is kept after the verdict
/// ([`record_client_failure`]): reserving it too would turn many people
/// signing in at once behind one proxy into a slow-down for all of them.
/// Its overshoot is bounded by the hash queue.
pub async fn reserve(
    db: &PgPool,
    cfg: &ThrottleConfig,
    account: &str,
    client: &str,
) -> Result<Reserved, sqlx::Error> {
    let mut tx = db.begin().await?;
    let client_lock: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT locked_until FROM login_throttle \
         WHERE scope = 'client' AND key = $1 AND locked_until > now()",
    )
    .bind(client)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    if let Some(until) = client_lock {
        tx.rollback().await?;
        return Ok(Reserved::Locked(until, Scope::Client));
    }
    let scope = Scope::Account;
    let account = &account_key(client, account);
    // One statement makes the row or locks the one there: an insert that
    // found a row and a separate `SELECT … FOR UPDATE` could find none when
    // a success cleared the pair in between (a 500 under parallel sign-ins).
    let (failures, stale, locked_until): (i32, bool, Option<OffsetDateTime>) = sqlx::query_as(
        "INSERT INTO login_throttle (scope, key, failures, first_failure_at, last_failure_at) \
         VALUES ($1, $2, 0, now(), now()) \
         ON CONFLICT (scope, key) DO UPDATE SET failures = login_throttle.failures \
         RETURNING failures, last_failure_at < now() - make_interval(secs => $3), \
                   CASE WHEN locked_until > now() THEN locked_until END",
    )
    .bind(scope.as_str())
    .bind(account)
    .bind(cfg.reset_after_secs as f64)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(until) = locked_until {
        tx.rollback().await?;
        return Ok(Reserved::Locked(until, Scope::Account));
    }
    let n = if stale { 1 } else { failures.max(0) + 1 };
    let lock = lock_for(cfg, scope, n as u32).map(|d| d.as_secs_f64());
    let account_locked_until: Option<OffsetDateTime> = sqlx::query_scalar(
        "UPDATE login_throttle SET failures = $3, \
           first_failure_at = CASE WHEN $4 THEN now() ELSE first_failure_at END, \
           last_failure_at = now(), \
           locked_until = CASE WHEN $5::float8 IS NULL THEN NULL \
                               ELSE now() + make_interval(secs => $5::float8) END \
         WHERE scope = $1 AND key = $2 RETURNING locked_until",
    )
    .bind(scope.as_str())
    .bind(account)
    .bind(n)
    .bind(stale)
    .bind(lock)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Reserved::Go {
        account_locked_until,
    })
}

/// Count a failure of `account` from `client` towards the address's
/// spraying limit (distinct failing accounts); returns the slow-down it
/// caused, if any.
pub async fn record_client_failure(
    conn: &mut PgConnection,
    cfg: &ThrottleConfig,
    client: &str,
    account: &str,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_client_failures (client, account, last_failure_at) \
         VALUES ($1, $2, now()) \
         ON CONFLICT (client, account) DO UPDATE SET last_failure_at = now()",
    )
    .bind(client)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    let distinct: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_client_failures \
         WHERE client = $1 AND last_failure_at > now() - make_interval(secs => $2)",
    )
    .bind(client)
    .bind(cfg.reset_after_secs as f64)
    .fetch_one(&mut *conn)
    .await?;
    let distinct = u32::try_from(distinct).unwrap_or(u32::MAX);
    let lock = lock_for(cfg, Scope::Client, distinct).map(|d| d.as_secs_f64());
    let until: Option<OffsetDateTime> = sqlx::query_scalar(
        "INSERT INTO login_throttle (scope, key, failures, first_failure_at, last_failure_at, locked_until) \
         VALUES ('client', $1, $2, now(), now(), \
                 CASE WHEN $3::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $3::float8) END) \
         ON CONFLICT (scope, key) DO UPDATE SET failures = EXCLUDED.failures, \
           last_failure_at = now(), \
           locked_until = COALESCE(EXCLUDED.locked_until, login_throttle.locked_until) \
         RETURNING CASE WHEN locked_until > now() THEN locked_until END",
    )
    .bind(client)
    .bind(i32::try_from(distinct).unwrap_or(i32::MAX))
    .bind(lock)
    .fetch_one(&mut *conn)
    .await?;
    Ok(lock.and(until))
}

/// A success of `account` from `client`: the pair's lockout counter and the
/// account's place in the address's spraying count are cleared.
pub async fn clear_success(
    conn: &mut PgConnection,
    client: &str,
    account: &str,
) -> Result<(), sqlx::Error> {
    clear(&mut *conn, Scope::Account, &account_key(client, account)).await?;
    sqlx::query("DELETE FROM login_client_failures WHERE client = $1 AND account = $2")
        .bind(client)
        .bind(account)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Lift a lock: a pair (`account` scope, `"<client> <account>"`; or just
/// the account name, for every address) or an address (`client`, whose
/// spraying count starts again).
pub async fn clear(conn: &mut PgConnection, scope: Scope, key: &str) -> Result<bool, sqlx::Error> {
    if scope == Scope::Client {
        sqlx::query("DELETE FROM login_client_failures WHERE client = $1")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    } else if !key.contains(' ') {
        return Ok(sqlx::query(
            "DELETE FROM login_throttle WHERE scope = 'account' AND split_part(key, ' ', 2) = $1",
        )
        .bind(key)
        .execute(conn)
        .await?
        .rows_affected()
            > 0);
    }
    Ok(
        sqlx::query("DELETE FROM login_throttle WHERE scope = $1 AND key = $2")
            .bind(scope.as_str())
            .bind(key)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Lockout {
    pub scope: String,
    pub key: String,
    pub failures: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub last_failure_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
}

/// Keys with recent failures, locked ones first.
pub async fn list(db: &PgPool, cfg: &ThrottleConfig) -> Result<Vec<Lockout>, sqlx::Error> {
    sqlx::query_as::<_, Lockout>(
        "SELECT scope, key, failures, last_failure_at, \
                CASE WHEN locked_until > now() THEN locked_until END AS locked_until \
         FROM login_throttle WHERE last_failure_at > now() - make_interval(secs => $1) \
         ORDER BY (locked_until > now()) IS TRUE DESC, last_failure_at DESC LIMIT 200",
    )
    .bind(cfg.reset_after_secs as f64)
    .fetch_all(db)
    .await
}

/// Forget counters that have run out.
pub async fn delete_stale(db: &PgPool, cfg: &ThrottleConfig) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM login_client_failures WHERE last_failure_at < now() - make_interval(secs => $1)",
    )
    .bind(cfg.reset_after_secs as f64)
    .execute(db)
    .await?;
    Ok(sqlx::query(
        "DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => $1) \
         AND (locked_until IS NULL OR locked_until < now())",
    )
    .bind(cfg.reset_after_secs as f64)
    .execute(db)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_starts_at_the_free_limit_and_doubles_up_to_the_maximum() {
        let cfg = ThrottleConfig {
            account_free_failures: 3,
            client_free_failures: 10,
            base_delay_secs: 30,
            max_delay_secs: 200,
            reset_after_secs: 3600,
        };
        let secs = |n| lock_for(&cfg, Scope::Account, n).map(|d| d.as_secs());
        assert_eq!(secs(2), None);
        assert_eq!(secs(3), Some(30));
        assert_eq!(secs(4), Some(60));
        assert_eq!(secs(5), Some(120));
        assert_eq!(secs(6), Some(200));
        assert_eq!(secs(60), Some(200));
        assert_eq!(lock_for(&cfg, Scope::Client, 9), None);
    }
}
