//! Sign-in throttling: per account (keyed by the username as typed, so an
//! unknown name behaves exactly like a real one) and per client address.
//! After `*_free_failures` failures a key is locked for `base_delay_secs`,
//! doubling with each further failure up to `max_delay_secs`; counters start
//! again after `reset_after_secs` without a failure. Every attempt is
//! counted as a failure of the account before its password is checked
//! ([`reserve`]), so parallel guesses cannot overtake the account's lock.
//! A success clears the account's counter but not the client's, so an
//! attacker with one valid account cannot reset their address between
//! guesses.

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
    Locked(OffsetDateTime),
}

/// Count this attempt as a failure of the account *before* the password is
/// checked, holding the account's row locked (and refusing when the client
/// is locked). Whatever the parallelism, at most `account_free_failures`
/// attempts per account get past this between two locks; the attempt that
/// reaches the limit sets the lock itself. A success clears the account.
///
/// The client's counter is still counted after the verdict
/// ([`record_failure`]): reserving it too would turn many people signing in
/// at once behind one proxy into a lock for all of them. Its overshoot is
/// bounded by the hash queue.
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
        return Ok(Reserved::Locked(until));
    }
    let scope = Scope::Account;
    sqlx::query(
        "INSERT INTO login_throttle (scope, key, failures, first_failure_at, last_failure_at) \
         VALUES ($1, $2, 0, now(), now()) ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope.as_str())
    .bind(account)
    .execute(&mut *tx)
    .await?;
    let (failures, stale, locked_until): (i32, bool, Option<OffsetDateTime>) = sqlx::query_as(
        "SELECT failures, last_failure_at < now() - make_interval(secs => $3), \
                CASE WHEN locked_until > now() THEN locked_until END \
         FROM login_throttle WHERE scope = $1 AND key = $2 FOR UPDATE",
    )
    .bind(scope.as_str())
    .bind(account)
    .bind(cfg.reset_after_secs as f64)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(until) = locked_until {
        tx.rollback().await?;
        return Ok(Reserved::Locked(until));
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

/// Count one failure; returns the lock it caused, if any.
pub async fn record_failure(
    conn: &mut PgConnection,
    cfg: &ThrottleConfig,
    scope: Scope,
    key: &str,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO login_throttle (scope, key, failures, first_failure_at, last_failure_at) \
         VALUES ($1, $2, 1, now(), now()) \
         ON CONFLICT (scope, key) DO UPDATE SET \
           failures = CASE WHEN login_throttle.last_failure_at < now() - make_interval(secs => $3) \
                           THEN 1 ELSE login_throttle.failures + 1 END, \
           first_failure_at = CASE WHEN login_throttle.last_failure_at < now() - make_interval(secs => $3) \
                           THEN now() ELSE login_throttle.first_failure_at END, \
           last_failure_at = now() \
         RETURNING failures",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(cfg.reset_after_secs as f64)
    .fetch_one(&mut *conn)
    .await?;
    let Some(lock) = lock_for(cfg, scope, failures.max(0) as u32) else {
        return Ok(None);
    };
    let until: Option<OffsetDateTime> = sqlx::query_scalar(
        "UPDATE login_throttle SET locked_until = now() + make_interval(secs => $3) \
         WHERE scope = $1 AND key = $2 RETURNING locked_until",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(lock.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    Ok(until)
}

pub async fn clear(conn: &mut PgConnection, scope: Scope, key: &str) -> Result<bool, sqlx::Error> {
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
