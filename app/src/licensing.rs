//! What the license means inside the app (DESIGN §8–§9, issue 8).
//!
//! The license service decides the status; this module decides what it
//! allows:
//! - a new YubiKey may enter the fleet only while the status allows new
//!   enrollments (TRIAL, VALID, EXPIRING) and the devices that are not
//!   retired are fewer than `max_devices` ([`check_new_enrollment`], called
//!   where a device is registered);
//! - a new user account, or enabling a disabled one, needs room under
//!   `max_users`, counting enabled users ([`check_new_user`]). EXPIRED and INVALID do not stop user
//!   creation: an administrator must always be able to add the staff who
//!   recover existing devices;
//! - nothing else ever asks. PIN unblock, revoke, wipe, secret recovery and
//!   every other operation on a device already in the fleet go on whatever
//!   the license says.
//!
//! When the service gives no status (unreachable, a 5xx, a 401 from a wrong
//! token) the client answers the last verified status with `degraded: true`,
//! never a better one: EXPIRED and INVALID stay, and a license or trial that
//! has ended since becomes EXPIRED (issue 14). The last verified status is
//! stored in `settings` (`license.last_verified`) and read back at start
//! ([`keep_last_verified`]), so blocking the service and restarting the app
//! gains nothing. Only an installation that has never had an answer gets
//! TRIAL limits. A 401/403 is reported as a configuration error on
//! `/license` and `/readyz`.
//!
//! The count and the insert are not one transaction: two registrations at
//! the same instant can both pass at `max_devices - 1`. A licence limit is a
//! commercial bound, not a security boundary, and one device over is
//! visible on the license page; serialising every registration is not worth
//! it.

use std::sync::Arc;
use std::time::Duration;

use kleidia_license_client::LicenseClient;
use kleidia_protocol::license::LicenseStatus;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::error::AppError;

/// The license client for `config.license`.
pub fn client(config: &Config) -> anyhow::Result<Arc<LicenseClient>> {
    LicenseClient::new(
        config.license.url.as_str(),
        config.license.api_token.clone(),
        config.license_timeout(),
        Duration::from_secs(config.license.cache_secs),
    )
    .map(Arc::new)
    .map_err(|e| anyhow::anyhow!("building the license client: {e}"))
}

/// `settings` key of the last status the license service answered.
const LAST_VERIFIED_KEY: &str = "license.last_verified";

/// Seed the client with the stored last verified status and store every new
/// one from now on (a background task for the life of the client).
pub async fn keep_last_verified(client: &Arc<LicenseClient>, db: &PgPool) {
    let stored: Result<Option<serde_json::Value>, _> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(LAST_VERIFIED_KEY)
            .fetch_optional(db)
            .await;
    match stored {
        Ok(Some(v)) => match serde_json::from_value::<LicenseStatus>(v) {
            Ok(s) => {
                tracing::info!(status = %s.status, checked_at = s.checked_at, "last verified license status");
                client.seed_verified(s).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the stored license status is unreadable; ignored")
            }
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the last verified license status"),
    }
    let mut updates = client.verified_updates();
    let db = db.clone();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let Some(s) = updates.borrow_and_update().clone() else {
                continue;
            };
            let Ok(value) = serde_json::to_value(&s) else {
                continue;
            };
            let stored = sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            )
            .bind(LAST_VERIFIED_KEY)
            .bind(value)
            .execute(&db)
            .await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, "cannot store the verified license status");
            }
        }
    });
}

/// What the license limits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Users that are not disabled.
    pub users: i64,
    /// Devices in any state but `retired`.
    pub devices: i64,
}

pub async fn usage(db: &PgPool) -> Result<Usage, sqlx::Error> {
    let (users, devices): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE NOT disabled), \
                (SELECT count(*) FROM devices WHERE state <> $1)",
    )
    .bind(crate::domain::DeviceState::Retired)
    .fetch_one(db)
    .await?;
    Ok(Usage { users, devices })
}

fn degraded_note(status: &LicenseStatus) -> &'static str {
    if status.degraded {
        " (the license service gives no status, so the last verified status applies)"
    } else {
        ""
    }
}

/// Whether one more device may enter the fleet, with `devices` not retired.
pub fn enrollment_allowed(status: &LicenseStatus, devices: i64) -> Result<(), AppError> {
    if !status.status.allows_new_enrollments() {
        return Err(AppError::Forbidden(format!(
            "the license is {}: no new YubiKey can be enrolled ({}). YubiKeys already enrolled keep working; \
             an administrator can upload a license on the License page",
            status.status,
            status.reason.trim_end_matches('.')
        )));
    }
    if let Some(limits) = status.limits {
        if devices >= i64::from(limits.max_devices) {
            return Err(AppError::Conflict(format!(
                "the {} license allows {} YubiKeys and {devices} are in the fleet{}: retire one or upload a \
                 license for more devices before enrolling another",
                status.status,
                limits.max_devices,
                degraded_note(status)
            )));
        }
    }
    Ok(())
}

/// Whether one more user may be created or enabled, with `users` enabled now.
pub fn user_allowed(status: &LicenseStatus, users: i64) -> Result<(), AppError> {
    // EXPIRED and INVALID carry no limits and do not block accounts (see
    // the module docs).
    if let Some(limits) = status.limits {
        if users >= i64::from(limits.max_users) {
            return Err(AppError::Conflict(format!(
                "the {} license allows {} users and {users} are enabled{}: no other account can be \
                 created or enabled until one is disabled or a license for more users is uploaded",
                status.status,
                limits.max_users,
                degraded_note(status)
            )));
        }
    }
    Ok(())
}

/// Call before a new device enters the fleet.
pub async fn check_new_enrollment(license: &LicenseClient, db: &PgPool) -> Result<(), AppError> {
    let status = license.status().await;
    let u = usage(db).await?;
    enrollment_allowed(&status, u.devices).inspect_err(|e| {
        tracing::warn!(status = %status.status, devices = u.devices, reason = %e, "new enrollment refused by the license");
    })
}

/// Call before a user account is created or a disabled one enabled.
pub async fn check_new_user(license: &LicenseClient, db: &PgPool) -> Result<(), AppError> {
    let status = license.status().await;
    let u = usage(db).await?;
    user_allowed(&status, u.users).inspect_err(|e| {
        tracing::warn!(status = %status.status, users = u.users, reason = %e, "new user refused by the license");
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kleidia_license_client::{fallback, ClientError};
    use kleidia_protocol::license::{LicenseLimits, LicenseState};

    use super::*;

    fn status(s: LicenseState, limits: Option<(u32, u32)>) -> LicenseStatus {
        LicenseStatus {
            status: s,
            reason: "because.".into(),
            installation_id: "inst".into(),
            degraded: false,
            clock_rollback: false,
            checked_at: 0,
            trial_started_at: None,
            trial_ends_at: None,
            license: None,
            limits: limits.map(|(u, d)| LicenseLimits {
                max_users: u,
                max_devices: d,
            }),
            days_left: None,
        }
    }

    #[test]
    fn a_device_below_the_limit_is_allowed_and_the_one_at_the_limit_is_refused_naming_it() {
        let s = status(LicenseState::Valid, Some((10, 3)));
        assert!(enrollment_allowed(&s, 2).is_ok());
        let e = enrollment_allowed(&s, 3).unwrap_err();
        assert!(matches!(e, AppError::Conflict(_)), "{e:?}");
        assert!(e.to_string().contains("allows 3 YubiKeys"), "{e}");
        assert!(e.to_string().contains("VALID"), "{e}");
    }

    #[test]
    fn expired_and_invalid_refuse_every_enrollment_with_the_reason() {
        for st in [LicenseState::Expired, LicenseState::Invalid] {
            let e = enrollment_allowed(&status(st, None), 0).unwrap_err();
            assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
            assert!(e.to_string().contains(st.as_str()), "{e}");
            assert!(e.to_string().contains("because"), "{e}");
            assert!(e.to_string().contains("keep working"), "{e}");
        }
    }

    #[test]
    fn trial_and_expiring_allow_enrollments_within_their_limits() {
        assert!(enrollment_allowed(&status(LicenseState::Trial, Some((25, 25))), 24).is_ok());
        assert!(enrollment_allowed(&status(LicenseState::Expiring, Some((5, 5))), 4).is_ok());
    }

    #[test]
    fn an_unreachable_service_never_verified_means_trial_limits_and_the_refusal_says_so() {
        let s = fallback(&ClientError::Unreachable("connection refused".into()));
        assert!(enrollment_allowed(&s, 24).is_ok());
        let e = enrollment_allowed(&s, 25).unwrap_err();
        assert!(e.to_string().contains("gives no status"), "{e}");
        assert!(e.to_string().contains("allows 25"), "{e}");
    }

    #[test]
    fn users_are_limited_only_while_a_limit_is_in_force() {
        let s = status(LicenseState::Valid, Some((2, 10)));
        assert!(user_allowed(&s, 1).is_ok());
        let e = user_allowed(&s, 2).unwrap_err();
        assert!(e.to_string().contains("allows 2 users"), "{e}");
        assert!(user_allowed(&status(LicenseState::Expired, None), 1000).is_ok());
    }
}
