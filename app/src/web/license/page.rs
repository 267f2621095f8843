//! What `/license` shows: the status, the limits against usage and the
//! history of uploads, from an [`Overview`].

use askama::Template;
use kleidia_license_client::ProblemKind;
use kleidia_protocol::license::{LicenseLimits, LicenseState, MAX_LICENSE_BYTES};
use time::OffsetDateTime;

use super::Overview;
use crate::web::pages::Nav;

fn when(t: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => t.to_string(),
    }
}

fn badge(s: LicenseState) -> &'static str {
    match s {
        LicenseState::Valid => "ok",
        LicenseState::Trial | LicenseState::Expiring => "warn",
        LicenseState::Expired | LicenseState::Invalid => "bad",
    }
}

struct LicenseLine {
    license_id: String,
    customer: String,
    issued: String,
    not_after: String,
    features: String,
}

struct LimitRow {
    what: &'static str,
    used: i64,
    /// "25", or "—" when no limit is in force.
    max: String,
    full: bool,
}

struct HistoryRow {
    license_id: String,
    customer: String,
    issued: String,
    not_after: String,
    limits: String,
    uploaded_at: String,
    uploaded_by: String,
    sha256: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "license.html")]
pub(super) struct LicensePage {
    me: Option<Nav>,
    state: &'static str,
    badge: &'static str,
    reason: String,
    degraded: bool,
    /// A 401/403 from the license service: the app's token is wrong.
    config_error: Option<String>,
    clock_rollback: bool,
    installation_id: String,
    license: Option<LicenseLine>,
    trial_ends: Option<String>,
    days_left: Option<i64>,
    checked_at: String,
    limits: Vec<LimitRow>,
    enrollment_refusal: Option<String>,
    history: Vec<HistoryRow>,
    history_error: Option<String>,
    max_kib: usize,
    notice: Option<&'static str>,
    error: Option<String>,
}

fn limit_row(what: &'static str, used: i64, max: Option<u32>) -> LimitRow {
    LimitRow {
        what,
        used,
        max: max.map(|m| m.to_string()).unwrap_or_else(|| "—".into()),
        full: max.is_some_and(|m| used >= i64::from(m)),
    }
}

pub(super) fn page(
    me: Option<Nav>,
    o: Overview,
    notice: Option<&'static str>,
    error: Option<String>,
) -> LicensePage {
    let s = &o.status;
    let limits: Option<LicenseLimits> = s.limits;
    let config_error = o
        .problem
        .as_ref()
        .filter(|p| p.kind == ProblemKind::Configuration)
        .map(|p| p.message.clone());
    LicensePage {
        me,
        state: s.status.as_str(),
        badge: badge(s.status),
        reason: s.reason.clone(),
        degraded: s.degraded,
        config_error,
        clock_rollback: s.clock_rollback,
        installation_id: s.installation_id.clone(),
        license: s.license.as_ref().map(|l| LicenseLine {
            license_id: l.license_id.clone(),
            customer: l.customer.clone(),
            issued: when(l.issued_at),
            not_after: when(l.not_after),
            features: l.features.join(", "),
        }),
        trial_ends: if s.license.is_none() {
            s.trial_ends_at.map(when)
        } else {
            None
        },
        days_left: s.days_left,
        checked_at: when(s.checked_at),
        limits: vec![
            limit_row(
                "Users (enabled)",
                o.usage.users,
                limits.map(|l| l.max_users),
            ),
            limit_row(
                "YubiKeys (not retired)",
                o.usage.devices,
                limits.map(|l| l.max_devices),
            ),
        ],
        enrollment_refusal: o.enrollment.err(),
        history: o
            .history
            .unwrap_or_default()
            .into_iter()
            .rev()
            .map(|h| HistoryRow {
                license_id: h.license_id,
                customer: h.customer,
                issued: when(h.issued_at),
                not_after: when(h.not_after),
                limits: format!(
                    "{} users, {} YubiKeys",
                    h.limits.max_users, h.limits.max_devices
                ),
                uploaded_at: when(h.uploaded_at),
                uploaded_by: h.uploaded_by.unwrap_or_else(|| "—".into()),
                sha256: h.sha256.chars().take(16).collect(),
                current: h.current,
            })
            .collect(),
        history_error: o.history_error,
        max_kib: MAX_LICENSE_BYTES / 1024,
        notice,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc_to_the_minute() {
        assert_eq!(when(1_830_211_200), "2027-12-31 00:00 UTC");
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
    }
}
