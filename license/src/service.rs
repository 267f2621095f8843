//! License decisions: what status an installation is in, and whether an
//! upload is accepted. Pure functions of their inputs where possible, so the
//! rules are unit-tested without OpenBao.

use ed25519_dalek::VerifyingKey;
use kleidia_protocol::license::{
    LicenseHistory, LicenseHistoryEntry, LicensePayload, LicenseState, LicenseStatus, TRIAL_DAYS,
    TRIAL_LIMITS,
};
use time::OffsetDateTime;

use crate::document::{self, DocumentError};
use crate::store::{Installation, Licenses, StoredLicense};

pub const DAY: i64 = 86_400;

/// The system clock may trail the high-water mark by this much before it
/// counts as turned back: replicas' clocks differ by a little.
pub const ROLLBACK_TOLERANCE_SECS: i64 = 300;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("the license is for installation {found}, but this installation is {expected}")]
    WrongInstallation { expected: String, found: String },
    #[error("the license ended on {0}")]
    Expired(String),
}

/// Time as the service sees it: the later of the clock and the high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveTime {
    pub now: i64,
    pub rollback: bool,
}

impl EffectiveTime {
    pub fn new(clock_now: i64, high_water: i64) -> Self {
        Self {
            now: clock_now.max(high_water),
            rollback: clock_now + ROLLBACK_TOLERANCE_SECS < high_water,
        }
    }
}

pub fn fmt_time(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Days left until `end`, counting a started day as a day; 0 once ended.
fn days_left(now: i64, end: i64) -> i64 {
    ((end - now).max(0) + DAY - 1) / DAY
}

/// Check an uploaded document against this installation at time `now`.
pub fn check_upload(
    doc: &[u8],
    key: &VerifyingKey,
    installation_id: &str,
    now: i64,
) -> Result<document::VerifiedLicense, UploadError> {
    let v = document::verify(doc, key)?;
    check_binding(&v.payload, installation_id)?;
    if now >= v.payload.not_after {
        return Err(UploadError::Expired(fmt_time(v.payload.not_after)));
    }
    Ok(v)
}

fn check_binding(p: &LicensePayload, installation_id: &str) -> Result<(), UploadError> {
    if p.installation_id != installation_id {
        return Err(UploadError::WrongInstallation {
            expected: installation_id.to_string(),
            found: p.installation_id.clone(),
        });
    }
    Ok(())
}

/// The status of this installation.
pub fn status(
    inst: &Installation,
    licenses: &Licenses,
    key: &VerifyingKey,
    t: EffectiveTime,
    expiring_days: u32,
) -> LicenseStatus {
    let trial_ends = inst.created_at + TRIAL_DAYS * DAY;
    let mut s = LicenseStatus {
        status: LicenseState::Trial,
        reason: String::new(),
        installation_id: inst.installation_id.clone(),
        degraded: false,
        clock_rollback: t.rollback,
        checked_at: t.now,
        trial_started_at: Some(inst.created_at),
        trial_ends_at: Some(trial_ends),
        license: None,
        limits: None,
        days_left: None,
    };
    match licenses.entries.last() {
        None if t.now < trial_ends => {
            s.reason = format!("{TRIAL_DAYS}-day trial, ends on {}", fmt_time(trial_ends));
            s.limits = Some(TRIAL_LIMITS);
            s.days_left = Some(days_left(t.now, trial_ends));
        }
        None => {
            s.status = LicenseState::Expired;
            s.reason = format!(
                "the {TRIAL_DAYS}-day trial ended on {}; upload a license",
                fmt_time(trial_ends)
            );
            s.days_left = Some(0);
        }
        Some(stored) => license_status(&mut s, stored, key, t.now, expiring_days),
    }
    if t.rollback {
        s.reason.push_str(
            "; the system clock is behind the latest time this service has seen, which is used instead",
        );
    }
    s
}

fn license_status(
    s: &mut LicenseStatus,
    stored: &StoredLicense,
    key: &VerifyingKey,
    now: i64,
    expiring_days: u32,
) {
    let bytes = stored.document.as_bytes();
    // Re-verified on every status: a license stored by another build (other
    // key) or altered in OpenBao shows as INVALID, not as what it claims.
    let checked = document::verify(bytes, key)
        .map_err(UploadError::from)
        .and_then(|v| check_binding(&v.payload, &s.installation_id).map(|_| v.payload));
    let p = match checked {
        Ok(p) => p,
        Err(e) => {
            s.status = LicenseState::Invalid;
            s.reason = e.to_string();
            s.license = document::peek_unverified(bytes).ok();
            return;
        }
    };
    s.days_left = Some(days_left(now, p.not_after));
    if now >= p.not_after {
        s.status = LicenseState::Expired;
        s.reason = format!(
            "license {} for {} ended on {}",
            p.license_id,
            p.customer,
            fmt_time(p.not_after)
        );
    } else {
        let window = i64::from(expiring_days) * DAY;
        s.status = if p.not_after - now <= window {
            LicenseState::Expiring
        } else {
            LicenseState::Valid
        };
        s.reason = format!(
            "license {} for {}, valid until {}",
            p.license_id,
            p.customer,
            fmt_time(p.not_after)
        );
        s.limits = Some(p.limits);
    }
    s.license = Some(p);
}

/// History for `GET /license/history`, oldest first.
pub fn history(licenses: &Licenses) -> LicenseHistory {
    let n = licenses.entries.len();
    let entries = licenses
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            // Entries were verified when stored; peek only to display them.
            let p = document::peek_unverified(e.document.as_bytes()).ok()?;
            Some(LicenseHistoryEntry {
                license_id: p.license_id,
                customer: p.customer,
                issued_at: p.issued_at,
                not_after: p.not_after,
                limits: p.limits,
                features: p.features,
                uploaded_at: e.uploaded_at,
                uploaded_by: e.uploaded_by.clone(),
                sha256: e.sha256.clone(),
                current: i + 1 == n,
            })
        })
        .collect();
    LicenseHistory { entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kleidia_protocol::license::LicenseLimits;

    const T0: i64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    fn inst() -> Installation {
        Installation {
            installation_id: "inst-a".into(),
            created_at: T0,
        }
    }

    fn doc(installation: &str, not_after: i64, k: &SigningKey) -> String {
        document::sign(
            &LicensePayload {
                license_id: "L-1".into(),
                customer: "Acme".into(),
                installation_id: installation.into(),
                issued_at: T0,
                not_after,
                limits: LicenseLimits {
                    max_users: 5,
                    max_devices: 7,
                },
                features: vec![],
            },
            k,
        )
        .unwrap()
    }

    fn stored(document: String) -> Licenses {
        Licenses {
            entries: vec![StoredLicense {
                sha256: document::sha256_hex(document.as_bytes()),
                document,
                uploaded_at: T0,
                uploaded_by: None,
            }],
        }
    }

    fn at(now: i64) -> EffectiveTime {
        EffectiveTime::new(now, now)
    }

    #[test]
    fn without_a_license_the_trial_runs_thirty_days_then_expires() {
        let vk = key().verifying_key();
        let s = status(&inst(), &Licenses::default(), &vk, at(T0 + 29 * DAY), 30);
        assert_eq!(s.status, LicenseState::Trial);
        assert_eq!(s.limits, Some(TRIAL_LIMITS));
        assert_eq!(s.days_left, Some(1));
        let s = status(&inst(), &Licenses::default(), &vk, at(T0 + 30 * DAY), 30);
        assert_eq!(s.status, LicenseState::Expired);
        assert!(s.reason.contains("trial ended"), "{}", s.reason);
        assert_eq!(s.limits, None);
    }

    #[test]
    fn a_license_is_valid_then_expiring_within_the_window_then_expired() {
        let k = key();
        let l = stored(doc("inst-a", T0 + 100 * DAY, &k));
        let vk = k.verifying_key();
        let s = status(&inst(), &l, &vk, at(T0 + 50 * DAY), 14);
        assert_eq!(s.status, LicenseState::Valid);
        assert_eq!(s.limits.map(|l| l.max_devices), Some(7));
        let s = status(&inst(), &l, &vk, at(T0 + 86 * DAY), 14);
        assert_eq!(s.status, LicenseState::Expiring);
        assert_eq!(s.days_left, Some(14));
        let s = status(&inst(), &l, &vk, at(T0 + 100 * DAY), 14);
        assert_eq!(s.status, LicenseState::Expired);
        assert_eq!(s.limits, None);
    }

    #[test]
    fn a_stored_license_from_another_key_or_installation_is_invalid_with_the_reason() {
        let vk = key().verifying_key();
        let other = SigningKey::from_bytes(&[7; 32]);
        let s = status(
            &inst(),
            &stored(doc("inst-a", T0 + DAY, &other)),
            &vk,
            at(T0),
            30,
        );
        assert_eq!(s.status, LicenseState::Invalid);
        assert!(s.reason.contains("signature"), "{}", s.reason);
        assert_eq!(s.limits, None);
        let s = status(
            &inst(),
            &stored(doc("inst-b", T0 + DAY, &key())),
            &vk,
            at(T0),
            30,
        );
        assert_eq!(s.status, LicenseState::Invalid);
        assert!(s.reason.contains("inst-b"), "{}", s.reason);
    }

    #[test]
    fn a_clock_turned_back_uses_the_high_water_mark_and_says_so() {
        let vk = key().verifying_key();
        let t = EffectiveTime::new(T0 + DAY, T0 + 31 * DAY);
        assert!(t.rollback);
        let s = status(&inst(), &Licenses::default(), &vk, t, 30);
        assert_eq!(s.status, LicenseState::Expired);
        assert!(s.clock_rollback);
        assert_eq!(s.checked_at, T0 + 31 * DAY);
        assert!(s.reason.contains("clock"), "{}", s.reason);
    }

    #[test]
    fn a_clock_a_little_behind_another_replica_is_not_a_rollback() {
        assert!(!EffectiveTime::new(T0, T0 + ROLLBACK_TOLERANCE_SECS).rollback);
        assert!(EffectiveTime::new(T0, T0 + ROLLBACK_TOLERANCE_SECS + 1).rollback);
    }

    #[test]
    fn uploads_for_another_installation_or_already_ended_are_refused() {
        let k = key();
        let vk = k.verifying_key();
        let d = doc("inst-b", T0 + DAY, &k);
        assert!(matches!(
            check_upload(d.as_bytes(), &vk, "inst-a", T0),
            Err(UploadError::WrongInstallation { .. })
        ));
        let d = doc("inst-a", T0 + DAY, &k);
        assert!(check_upload(d.as_bytes(), &vk, "inst-a", T0).is_ok());
        assert!(matches!(
            check_upload(d.as_bytes(), &vk, "inst-a", T0 + DAY),
            Err(UploadError::Expired(_))
        ));
    }

    #[test]
    fn history_marks_only_the_last_upload_as_current() {
        let k = key();
        let mut l = stored(doc("inst-a", T0 + DAY, &k));
        l.entries
            .extend(stored(doc("inst-a", T0 + 2 * DAY, &k)).entries);
        let h = history(&l);
        assert_eq!(h.entries.len(), 2);
        assert!(!h.entries[0].current);
        assert!(h.entries[1].current);
        assert_eq!(h.entries[1].not_after, T0 + 2 * DAY);
    }
}
