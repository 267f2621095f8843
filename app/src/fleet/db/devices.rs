//! The `devices` table: one row per YubiKey, its owner and lifecycle state.

use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{fmt_time, CertificateStatus};
use crate::domain::{DeviceState, Serial, UnknownDeviceState};

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct DeviceRow {
    #[sqlx(try_from = "i64")]
    pub serial: Serial,
    pub model: String,
    pub firmware: Option<String>,
    pub form_factor: Option<String>,
    pub owner_id: Option<Uuid>,
    pub owner_username: Option<String>,
    pub owner_display_name: Option<String>,
    pub state: DeviceState,
    pub secrets_version: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub enrolled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DeviceRow {
    /// Firmware 5.7 or later (AES-192 factory management key).
    pub fn firmware_5_7_or_later(&self) -> bool {
        let Some(fw) = &self.firmware else {
            return false;
        };
        let mut it = fw.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        (major, minor) >= (5, 7)
    }
}

const DEVICE_COLUMNS: &str = "d.serial, d.model, d.firmware, d.form_factor, d.owner_id, \
     u.username AS owner_username, u.display_name AS owner_display_name, d.state, d.secrets_version, \
     d.enrolled_at, d.last_seen_at, d.created_at, d.updated_at";

pub async fn device(
    db: impl PgExecutor<'_>,
    serial: Serial,
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d LEFT JOIN users u ON u.id = d.owner_id WHERE d.serial = $1"
    ))
    .bind(serial.as_i64())
    .fetch_optional(db)
    .await
}

/// The device row locked for the rest of the transaction.
pub async fn device_for_update(
    conn: &mut PgConnection,
    serial: Serial,
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query("SELECT 1 FROM devices WHERE serial = $1 FOR UPDATE")
        .bind(serial.as_i64())
        .execute(&mut *conn)
        .await?;
    device(&mut *conn, serial).await
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilter {
    /// Serial prefix, owner username or display name.
    pub q: Option<String>,
    /// A [`DeviceState`] name; empty for any (the filter form's "any").
    pub state: Option<String>,
    pub owner: Option<String>,
    pub firmware: Option<String>,
    /// Keyset cursor: serials greater than this.
    pub after: Option<i64>,
    pub limit: Option<i64>,
    /// Only devices whose certificates expire within this many days
    /// (0 to [`MAX_EXPIRING_DAYS`]).
    #[param(minimum = 0, maximum = 3650)]
    pub expiring_days: Option<i32>,
    /// Only devices still on factory credentials.
    pub factory: Option<bool>,
}

impl DeviceFilter {
    /// The page size asked for, within 1..=200.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 200)
    }

    /// The state asked for, if any, once the whole filter is checked: an
    /// unknown state, or an `expiring_days` outside 0 to
    /// [`MAX_EXPIRING_DAYS`] (PostgreSQL would overflow on it), is refused.
    pub fn state(&self) -> Result<Option<DeviceState>, BadDeviceFilter> {
        if let Some(d) = self
            .expiring_days
            .filter(|d| !(0..=MAX_EXPIRING_DAYS).contains(d))
        {
            return Err(BadDeviceFilter::ExpiringDays(d));
        }
        for (name, v) in [
            ("q", &self.q),
            ("owner", &self.owner),
            ("firmware", &self.firmware),
        ] {
            if v.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(BadDeviceFilter::Nul(name));
            }
        }
        match self.state.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => Ok(Some(s.parse()?)),
        }
    }
}

/// The longest look-ahead of `expiring_days`: ten years.
pub const MAX_EXPIRING_DAYS: i32 = 3650;

/// A device filter that cannot be searched; the message says which value.
#[derive(Debug, thiserror::Error)]
pub enum BadDeviceFilter {
    #[error(transparent)]
    State(#[from] UnknownDeviceState),
    #[error("expiring_days must be between 0 and {MAX_EXPIRING_DAYS}, not {0}")]
    ExpiringDays(i32),
    /// PostgreSQL text cannot hold NUL (it was a 500).
    #[error("{0} contains a NUL character")]
    Nul(&'static str),
}

/// A page of devices ordered by serial (keyset pagination: fast at any depth).
pub async fn search(
    db: &PgPool,
    f: &DeviceFilter,
    state: Option<DeviceState>,
    only_owner: Option<Uuid>,
) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let limit = f.limit();
    let q =
        f.q.as_deref()
            .map(|s| s.trim().replace(['%', '_', '\\'], ""))
            .filter(|s| !s.is_empty());
    // A serial prefix is a handful of ranges of the primary key, in ascending
    // order: walk them, each an index range scan, until the page is full.
    if let Some(digits) = q
        .as_deref()
        .filter(|q| q.bytes().all(|c| c.is_ascii_digit()))
    {
        let mut rows = Vec::new();
        for (lo, hi) in serial_prefix_ranges(digits) {
            let want = limit - rows.len() as i64;
            if want <= 0 {
                break;
            }
            let range = Some((lo, hi));
            rows.extend(search_where(db, f, state, only_owner, None, range, want).await?);
        }
        return Ok(rows);
    }
    search_where(db, f, state, only_owner, q.as_deref(), None, limit).await
}

/// `[prefix·10^k, (prefix+1)·10^k − 1]` for every serial length the prefix allows.
pub fn serial_prefix_ranges(prefix: &str) -> Vec<(i64, i64)> {
    let Ok(p) = prefix.parse::<i64>() else {
        return Vec::new();
    };
    if prefix.starts_with('0') || prefix.len() > 10 {
        return Vec::new();
    }
    let max = i64::from(u32::MAX);
    let mut out = Vec::new();
    let mut scale = 1i64;
    for _ in prefix.len()..=10 {
        let lo = p.saturating_mul(scale);
        if lo > max {
            break;
        }
        let hi = (p + 1).saturating_mul(scale).saturating_sub(1).min(max);
        out.push((lo.max(1), hi));
        scale = scale.saturating_mul(10);
    }
    out
}

async fn search_where(
    db: &PgPool,
    f: &DeviceFilter,
    state: Option<DeviceState>,
    only_owner: Option<Uuid>,
    q: Option<&str>,
    serial_range: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let owner = f.owner.as_deref().map(str::trim).filter(|s| !s.is_empty());
    // Only the conditions in use go into the query, so PostgreSQL plans each
    // shape on its indexes: keyset and serial ranges on the primary key,
    // state/owner/firmware indexes, and a search by person through the
    // (small) users table instead of an OR across the join.
    let mut b = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d LEFT JOIN users u ON u.id = d.owner_id WHERE true"
    ));
    if let Some(a) = f.after {
        b.push(" AND d.serial > ").push_bind(a);
    }
    if let Some(st) = state {
        b.push(" AND d.state = ").push_bind(st);
    }
    if let Some(o) = owner {
        b.push(" AND d.owner_id = (SELECT id FROM users WHERE username = lower(")
            .push_bind(o.to_string())
            .push("))");
    }
    if let Some(fw) = f.firmware.as_deref().filter(|s| !s.is_empty()) {
        b.push(" AND d.firmware = ").push_bind(fw.to_string());
    }
    if let Some(id) = only_owner {
        b.push(" AND d.owner_id = ").push_bind(id);
    }
    if let Some((lo, hi)) = serial_range {
        b.push(" AND d.serial BETWEEN ")
            .push_bind(lo)
            .push(" AND ")
            .push_bind(hi);
    }
    if let Some(q) = q {
        b.push(" AND d.owner_id IN (SELECT id FROM users WHERE username LIKE ")
            .push_bind(format!("{}%", q.to_lowercase()))
            .push(" OR lower(display_name) LIKE ")
            .push_bind(format!("%{}%", q.to_lowercase()))
            .push(")");
    }
    if let Some(days) = f.expiring_days {
        b.push(" AND EXISTS (SELECT 1 FROM certificates c WHERE c.device_serial = d.serial AND c.status = ")
            .push_bind(CertificateStatus::Issued)
            .push(" AND c.not_after < now() + make_interval(days => ")
            .push_bind(days)
            .push("))");
    }
    if let Some(factory) = f.factory {
        b.push(" AND (d.secrets_version IS NULL AND d.state = ANY(")
            .push_bind(in_service())
            .push(")) = ")
            .push_bind(factory);
    }
    b.push(" ORDER BY d.serial LIMIT ").push_bind(limit);
    b.build_query_as::<DeviceRow>().fetch_all(db).await
}

/// [`DeviceState::IN_SERVICE`] as a `text[]` parameter.
fn in_service() -> Vec<&'static str> {
    DeviceState::IN_SERVICE.map(DeviceState::as_str).to_vec()
}

pub struct NewDevice<'a> {
    pub serial: Serial,
    pub model: &'a str,
    pub firmware: Option<&'a str>,
    pub form_factor: Option<&'a str>,
    pub owner_id: Option<Uuid>,
}

/// Why a device row was not inserted.
#[derive(Debug, thiserror::Error)]
pub enum InsertDeviceError {
    #[error("device {0} is already registered")]
    Duplicate(Serial),
    #[error("firmware must look like 5.7.1 and model/form factor must be short")]
    Malformed,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn insert_device(
    conn: &mut PgConnection,
    d: &NewDevice<'_>,
) -> Result<(), InsertDeviceError> {
    let r = sqlx::query(
        "INSERT INTO devices (serial, model, firmware, form_factor, owner_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(d.serial.as_i64())
    .bind(d.model)
    .bind(d.firmware)
    .bind(d.form_factor)
    .bind(d.owner_id)
    .execute(&mut *conn)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("devices_pkey") => {
            Err(InsertDeviceError::Duplicate(d.serial))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
            Err(InsertDeviceError::Malformed)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn set_state(
    conn: &mut PgConnection,
    serial: Serial,
    state: DeviceState,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET state = $2, updated_at = now() WHERE serial = $1")
        .bind(serial.as_i64())
        .bind(state)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn set_owner(
    conn: &mut PgConnection,
    serial: Serial,
    owner: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET owner_id = $2, updated_at = now() WHERE serial = $1")
        .bind(serial.as_i64())
        .bind(owner)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn counts_by_state(db: &PgPool) -> Result<Vec<(DeviceState, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT state, count(*) FROM devices GROUP BY state ORDER BY state")
        .fetch_all(db)
        .await
}

/// Devices in service that still hold their factory credentials.
pub async fn factory_count(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM devices WHERE secrets_version IS NULL AND state = ANY($1)",
    )
    .bind(in_service())
    .fetch_one(db)
    .await
}

/// The agent confirmed a new escrow version: it is what the device holds now.
/// Move the confirmed escrow version from `from` to `to` (a re-escrow of the
/// same values); false if the device no longer has `from` confirmed.
pub async fn move_confirmed_version(
    conn: &mut PgConnection,
    serial: Serial,
    from: u64,
    to: i64,
) -> Result<bool, sqlx::Error> {
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let r = sqlx::query(
        "UPDATE devices SET secrets_version = $3, updated_at = now() \
         WHERE serial = $1 AND secrets_version = $2",
    )
    .bind(serial.as_i64())
    .bind(from)
    .bind(to)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_secrets_version(
    conn: &mut PgConnection,
    serial: Serial,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET secrets_version = $2, last_seen_at = now(), updated_at = now() \
         WHERE serial = $1",
    )
    .bind(serial.as_i64())
    .bind(version)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The enrollment's certificate is on the key: it is in service.
pub async fn mark_enrolled(conn: &mut PgConnection, serial: Serial) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET state = $2, enrolled_at = now(), updated_at = now() WHERE serial = $1",
    )
    .bind(serial.as_i64())
    .bind(DeviceState::Active)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The key is in factory state again, now in state `to`; the owner stays
/// only when `keep_owner`.
pub async fn mark_wiped(
    conn: &mut PgConnection,
    serial: Serial,
    to: DeviceState,
    keep_owner: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET state = $2, owner_id = CASE WHEN $3 THEN owner_id END, \
         secrets_version = NULL, enrolled_at = NULL, presence_public_key = NULL, \
         presence_established_at = NULL, updated_at = now() WHERE serial = $1",
    )
    .bind(serial.as_i64())
    .bind(to)
    .bind(keep_owner)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The latest audit events about a device, newest first, as JSON objects
/// (`id`, `at`, `actor`, `action`, `details`).
pub async fn audit_trail(
    db: &PgPool,
    serial: Serial,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT json_build_object('id', id, 'at', created_at, 'actor', actor_name, 'action', action, 'details', details) \
         FROM audit_log WHERE target_type = 'device' AND target_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(serial.to_string())
    .bind(limit)
    .fetch_all(db)
    .await
}

impl DeviceRow {
    pub fn owner_str(&self) -> &str {
        self.owner_display_name.as_deref().unwrap_or("—")
    }
    pub fn firmware_str(&self) -> &str {
        self.firmware.as_deref().unwrap_or("?")
    }
    pub fn credentials_str(&self) -> &'static str {
        if self.secrets_version.is_some() {
            "escrowed"
        } else {
            "factory defaults"
        }
    }
    pub fn enrolled_str(&self) -> String {
        self.enrolled_at
            .as_ref()
            .map(fmt_time)
            .unwrap_or_else(|| "—".into())
    }
}

#[cfg(test)]
mod tests {
    use super::serial_prefix_ranges;

    #[test]
    fn serial_prefixes_become_ascending_primary_key_ranges() {
        let r = serial_prefix_ranges("1009");
        assert_eq!(r[0], (1009, 1009));
        assert_eq!(r[1], (10090, 10099));
        assert_eq!(r.last(), Some(&(1_009_000_000, 1_009_999_999)));
        assert!(r.windows(2).all(|w| w[0].1 < w[1].0));
        assert_eq!(
            serial_prefix_ranges("4294967295"),
            vec![(4_294_967_295, 4_294_967_295)]
        );
        assert_eq!(
            serial_prefix_ranges("5").last(),
            Some(&(500_000_000, 599_999_999))
        );
        assert!(serial_prefix_ranges("0").is_empty());
        assert!(serial_prefix_ranges("99999999999").is_empty());
    }
}
