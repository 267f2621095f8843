//! License wire types shared by the license service (`license/`), its vendor
//! tool and the app's license client.
//!
//! A license file is a [`SignedLicense`]: the exact payload bytes (base64) and
//! an Ed25519 signature over [`SIGNING_CONTEXT`] followed by those bytes. The
//! payload bytes are kept verbatim, so verification never depends on how a
//! JSON library re-serialises the payload.

use serde::{Deserialize, Serialize};

/// Value of [`SignedLicense::format`] for this document version.
pub const LICENSE_FORMAT: &str = "kleidia-license-v1";

/// Domain separation: the signature covers these bytes, then the payload
/// bytes. A signature made by the vendor key for any other purpose (another
/// format, another product) can never verify as a license.
pub const SIGNING_CONTEXT: &[u8] = b"kleidia-license-v1\0";

/// Largest license document (and upload body) the service accepts, in bytes.
pub const MAX_LICENSE_BYTES: usize = 16 * 1024;

/// Length of the trial that starts at the service's first start.
pub const TRIAL_DAYS: i64 = 30;

/// Limits that apply during the trial, and when the app falls back to TRIAL
/// because the license service is unreachable.
pub const TRIAL_LIMITS: LicenseLimits = LicenseLimits {
    max_users: 25,
    max_devices: 25,
};

/// Header the app sets on `POST /license` to name the admin who uploaded it;
/// the service records it in the history.
pub const ACTOR_HEADER: &str = "x-kleidia-actor";

/// The signed license file, as written by `kleidia-license issue` and uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedLicense {
    /// Always [`LICENSE_FORMAT`].
    pub format: String,
    /// Standard base64 of the exact payload bytes that were signed
    /// (after [`SIGNING_CONTEXT`]); they decode to a [`LicensePayload`].
    pub payload: String,
    /// Standard base64 of the 64-byte Ed25519 signature (R ‖ s).
    pub signature: String,
}

/// What the vendor grants. Times are Unix seconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LicensePayload {
    pub license_id: String,
    pub customer: String,
    /// The installation this license is bound to (`GET /installation-id`).
    pub installation_id: String,
    pub issued_at: i64,
    /// The license is valid strictly before this instant.
    pub not_after: i64,
    pub limits: LicenseLimits,
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LicenseLimits {
    pub max_users: u32,
    pub max_devices: u32,
}

/// The five states the service reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LicenseState {
    /// No license uploaded and the trial period is still running.
    Trial,
    /// A license for this installation, not near its end.
    Valid,
    /// A valid license within the configured window before its end.
    Expiring,
    /// The license (or, without one, the trial) has ended.
    Expired,
    /// The stored license does not verify (signature, installation, format).
    Invalid,
}

impl LicenseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Trial => "TRIAL",
            LicenseState::Valid => "VALID",
            LicenseState::Expiring => "EXPIRING",
            LicenseState::Expired => "EXPIRED",
            LicenseState::Invalid => "INVALID",
        }
    }

    /// Whether new enrollments are allowed in this state (limits permitting).
    /// Work on existing devices is never blocked by the license.
    pub fn allows_new_enrollments(self) -> bool {
        matches!(
            self,
            LicenseState::Trial | LicenseState::Valid | LicenseState::Expiring
        )
    }
}

impl std::fmt::Display for LicenseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `GET /license/status` and of a successful `POST /license`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LicenseStatus {
    pub status: LicenseState,
    /// Human-readable explanation of the status, safe to show to admins.
    pub reason: String,
    /// Empty when the app fell back to TRIAL without reaching the service.
    pub installation_id: String,
    /// True only when produced by the app's client because the service could
    /// not be reached; the service itself always reports false.
    #[serde(default)]
    pub degraded: bool,
    /// The system clock is behind the latest time the service has seen; the
    /// service then uses that latest time, so nothing is extended.
    pub clock_rollback: bool,
    /// The time the status was computed for (Unix seconds): the later of the
    /// system clock and the latest time seen.
    pub checked_at: i64,
    pub trial_started_at: Option<i64>,
    pub trial_ends_at: Option<i64>,
    /// The current license's payload, when one is stored (also when INVALID,
    /// if its payload could be read).
    pub license: Option<LicensePayload>,
    /// Limits in force: the license's, or [`TRIAL_LIMITS`] during the trial;
    /// `None` when EXPIRED or INVALID.
    pub limits: Option<LicenseLimits>,
    /// Days until the license or trial ends, a started day counting as one;
    /// 0 once it has ended.
    pub days_left: Option<i64>,
}

/// One uploaded license in `GET /license/history`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LicenseHistoryEntry {
    pub license_id: String,
    pub customer: String,
    pub issued_at: i64,
    pub not_after: i64,
    pub limits: LicenseLimits,
    pub features: Vec<String>,
    pub uploaded_at: i64,
    /// Who uploaded it, as told by the app (`x-kleidia-actor`), if anyone.
    pub uploaded_by: Option<String>,
    /// Hex SHA-256 of the uploaded document bytes.
    pub sha256: String,
    /// The last entry is the license in force.
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseHistory {
    pub entries: Vec<LicenseHistoryEntry>,
}

/// Body of `GET /installation-id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationId {
    pub installation_id: String,
    /// When the installation id was created, which is when the trial started.
    pub created_at: i64,
}

/// `error` codes of a refused upload (the body is [`crate::ErrorBody`]).
pub mod refusal {
    pub const MALFORMED: &str = "malformed";
    pub const TOO_LARGE: &str = "too_large";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const WRONG_INSTALLATION: &str = "wrong_installation";
    pub const EXPIRED: &str = "expired";
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_as_the_upper_case_names_the_app_shows() {
        for (s, name) in [
            (LicenseState::Trial, "TRIAL"),
            (LicenseState::Valid, "VALID"),
            (LicenseState::Expiring, "EXPIRING"),
            (LicenseState::Expired, "EXPIRED"),
            (LicenseState::Invalid, "INVALID"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
            assert_eq!(s.as_str(), name);
        }
    }

    #[test]
    fn only_trial_valid_and_expiring_allow_new_enrollments() {
        assert!(LicenseState::Trial.allows_new_enrollments());
        assert!(LicenseState::Valid.allows_new_enrollments());
        assert!(LicenseState::Expiring.allows_new_enrollments());
        assert!(!LicenseState::Expired.allows_new_enrollments());
        assert!(!LicenseState::Invalid.allows_new_enrollments());
    }

    #[test]
    fn a_payload_with_an_unknown_field_is_rejected() {
        let json = r#"{"license_id":"l","customer":"c","installation_id":"i","issued_at":1,
            "not_after":2,"limits":{"max_users":1,"max_devices":1},"features":[],"unlimited":true}"#;
        let err = serde_json::from_str::<LicensePayload>(json).unwrap_err();
        assert!(err.to_string().contains("unlimited"), "{err}");
    }

    #[test]
    fn the_signing_context_ends_with_a_nul_so_it_cannot_run_into_the_payload() {
        assert_eq!(SIGNING_CONTEXT.last(), Some(&0));
        assert!(SIGNING_CONTEXT.starts_with(LICENSE_FORMAT.as_bytes()));
    }
}
