//! The policies every operation obeys, set by an admin on `/settings` and
//! stored as one JSON document in the `settings` table (key `policy`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use kleidia_protocol::agent::{
    KeyAlgorithm, ManagementKeyAlgorithm, PinPolicy, PivSlot, TouchPolicy,
};

/// The wire name of a key algorithm (`ecc_p256`, …), for messages.
pub fn algorithm_name(alg: KeyAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// A YubiKey firmware version, `major.minor.patch`, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Firmware(pub u8, pub u8, pub u8);

impl Firmware {
    /// The first firmware whose PIV management key may be AES (5.4.0).
    pub const AES: Firmware = Firmware(5, 4, 0);

    /// `"5.7.1"` (a missing patch or minor reads 0); `None` for anything else.
    pub fn parse(s: &str) -> Option<Firmware> {
        let mut parts = s.trim().split('.');
        let mut next = |required: bool| match parts.next() {
            Some(p) => p.parse::<u8>().ok(),
            None if !required => Some(0),
            None => None,
        };
        let fw = Firmware(next(true)?, next(false)?, next(false)?);
        parts.next().is_none().then_some(fw)
    }
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Serialize for Firmware {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Firmware {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Firmware::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("firmware {s:?} is not major.minor.patch"))
        })
    }
}

/// The management key algorithm for the firmware range `from..until`
/// (`until` excluded; absent: no upper bound). The first rule that contains
/// a card's firmware wins; a card no rule covers gets the policy's
/// `management_key_algorithm` from 5.4.0 on and 3DES below (the only
/// algorithm such firmware has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagementKeyRule {
    /// `major.minor.patch`, e.g. `5.4.0`.
    #[schema(value_type = String, example = "5.4.0")]
    pub from: Firmware,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "5.7.0")]
    pub until: Option<Firmware>,
    pub algorithm: ManagementKeyAlgorithm,
}

impl ManagementKeyRule {
    fn contains(&self, fw: Firmware) -> bool {
        fw >= self.from && self.until.is_none_or(|u| fw < u)
    }
}

/// What may be generated in one PIV slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct SlotPolicy {
    pub algorithms: Vec<KeyAlgorithm>,
    pub pin_policies: Vec<PinPolicy>,
    pub touch_policies: Vec<TouchPolicy>,
}

/// Who must agree before a key is generated and certified on a device whose
/// owner is not the requester (the certificate carries the owner's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum CertificateApproval {
    /// Nobody: operators certify keys for anyone (the behaviour before issue 12).
    Off,
    /// The owner, from their own session, or an admin who is not the requester.
    OwnerOrSecondAdmin,
}

impl CertificateApproval {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateApproval::Off => "off",
            CertificateApproval::OwnerOrSecondAdmin => "owner_or_second_admin",
        }
    }
}

/// What disabling a user does to their YubiKeys (issue 14 §10). A device
/// moved to `returned` has its certificates revoked whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum Offboarding {
    /// Sessions end; devices and certificates stay valid (before issue 14).
    SessionsOnly,
    /// Devices are suspended (Kleidia releases no secret and runs no
    /// operation on them); certificates stay valid in the CA and are listed
    /// as held. OpenBao's PKI has no certificateHold (a revocation there is
    /// final), so a hold is Kleidia's: re-enable and reactivate, or revoke.
    SuspendAndHold,
    /// Devices are suspended and their certificates revoked (on the CRL).
    SuspendAndRevoke,
}

impl Offboarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Offboarding::SessionsOnly => "sessions_only",
            Offboarding::SuspendAndHold => "suspend_and_hold",
            Offboarding::SuspendAndRevoke => "suspend_and_revoke",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Policy {
    pub pin_min_length: usize,
    pub pin_max_length: usize,
    pub puk_length: usize,
    /// The management key algorithm of AES-capable firmware (5.4.0 and
    /// later) that no rule in `management_key_by_firmware` covers.
    pub management_key_algorithm: ManagementKeyAlgorithm,
    /// Per-firmware-range choices, first match wins (issue 18 §5).
    pub management_key_by_firmware: Vec<ManagementKeyRule>,
    /// Slots that may hold keys, by slot name (`9a`, `9c`, `9d`, `9e`).
    pub slots: BTreeMap<PivSlot, SlotPolicy>,
    /// Slots enrollment fills, in order.
    pub enrollment_slots: Vec<PivSlot>,
    pub certificate_lifetime_days: u32,
    pub owners_may_unblock_pin: bool,
    pub expiry_warning_days: u32,
    /// Required unless an admin turns it off. A stored policy from before
    /// the setting existed reads the default, so existing installations are
    /// protected too.
    pub certificate_approval: CertificateApproval,
    /// What disabling a user does to their devices; a stored policy from
    /// before the setting existed reads the default (revoke).
    pub offboarding: Offboarding,
}

impl Default for Policy {
    fn default() -> Self {
        let ec_and_rsa = || SlotPolicy {
            algorithms: vec![
                KeyAlgorithm::EccP256,
                KeyAlgorithm::EccP384,
                KeyAlgorithm::Rsa2048,
            ],
            pin_policies: vec![PinPolicy::Once, PinPolicy::Always],
            touch_policies: vec![TouchPolicy::Never, TouchPolicy::Always, TouchPolicy::Cached],
        };
        let mut slots: BTreeMap<PivSlot, SlotPolicy> = PivSlot::ALL
            .into_iter()
            .map(|s| (s, ec_and_rsa()))
            .collect();
        if let Some(sig) = slots.get_mut(&PivSlot::Signature) {
            sig.pin_policies = vec![PinPolicy::Always];
        }
        if let Some(card_auth) = slots.get_mut(&PivSlot::CardAuthentication) {
            card_auth.pin_policies = vec![PinPolicy::Never, PinPolicy::Once, PinPolicy::Always];
        }
        Self {
            pin_min_length: 6,
            pin_max_length: 8,
            puk_length: 8,
            management_key_algorithm: ManagementKeyAlgorithm::Aes192,
            management_key_by_firmware: Vec::new(),
            slots,
            enrollment_slots: vec![PivSlot::Authentication],
            certificate_lifetime_days: 365,
            owners_may_unblock_pin: false,
            expiry_warning_days: 30,
            certificate_approval: CertificateApproval::OwnerOrSecondAdmin,
            offboarding: Offboarding::SuspendAndRevoke,
        }
    }
}

impl Policy {
    /// Every rule the policy itself must satisfy; the message names the rule.
    pub fn validate(&self) -> Result<(), String> {
        if !(6..=8).contains(&self.pin_min_length) || !(6..=8).contains(&self.pin_max_length) {
            return Err("PIN length must be between 6 and 8 digits".into());
        }
        if self.pin_min_length > self.pin_max_length {
            return Err("pin_min_length is larger than pin_max_length".into());
        }
        if self.puk_length != 8 {
            return Err(
                "PUK length must be 8 digits (the YubiKey maximum, for the most strength)".into(),
            );
        }
        if matches!(
            self.management_key_algorithm,
            ManagementKeyAlgorithm::TripleDes | ManagementKeyAlgorithm::Aes128
        ) {
            return Err("management_key_algorithm must be aes192 or aes256".into());
        }
        for r in &self.management_key_by_firmware {
            let range = match r.until {
                Some(u) => format!("{}..{u}", r.from),
                None => format!("{} and later", r.from),
            };
            if r.until.is_some_and(|u| u <= r.from) {
                return Err(format!(
                    "management_key_by_firmware: the range {range} is empty"
                ));
            }
            match r.algorithm {
                ManagementKeyAlgorithm::TripleDes => {
                    if r.until.is_none_or(|u| u > Firmware::AES) {
                        return Err(format!(
                            "management_key_by_firmware: 3des is only allowed below {} (the range {range} has AES)",
                            Firmware::AES
                        ));
                    }
                }
                ManagementKeyAlgorithm::Aes128 => {
                    return Err(format!(
                        "management_key_by_firmware: the range {range} must use aes192 or aes256"
                    ))
                }
                ManagementKeyAlgorithm::Aes192 | ManagementKeyAlgorithm::Aes256 => {
                    if r.from < Firmware::AES {
                        return Err(format!(
                            "management_key_by_firmware: firmware before {} has no AES management key (the range {range})",
                            Firmware::AES
                        ));
                    }
                }
            }
        }
        // Slot names are checked where the policy is read: a `PivSlot` is
        // one of the four key slots.
        for (slot, sp) in &self.slots {
            if sp.algorithms.is_empty()
                || sp.pin_policies.is_empty()
                || sp.touch_policies.is_empty()
            {
                return Err(format!(
                    "slot {slot} must allow at least one algorithm, PIN policy and touch policy"
                ));
            }
        }
        if self.enrollment_slots.is_empty() {
            return Err("enrollment_slots must name at least one slot".into());
        }
        for s in &self.enrollment_slots {
            if !self.slots.contains_key(s) {
                return Err(format!("enrollment slot {s} has no slot policy"));
            }
        }
        if !(1..=365).contains(&self.certificate_lifetime_days) {
            return Err(
                "certificate_lifetime_days must be between 1 and 365 (the PKI role's maximum)"
                    .into(),
            );
        }
        if !(1..=180).contains(&self.expiry_warning_days) {
            return Err("expiry_warning_days must be between 1 and 180".into());
        }
        Ok(())
    }

    /// The management key algorithm for a card with this firmware (as the
    /// card reported it). Unknown or unreadable firmware gets the AES
    /// choice: a card without AES then refuses the new key and keeps its
    /// old one, which stays escrowed.
    pub fn management_key_algorithm_for(&self, firmware: Option<&str>) -> ManagementKeyAlgorithm {
        let Some(fw) = firmware.and_then(Firmware::parse) else {
            return self.management_key_algorithm;
        };
        if let Some(r) = self
            .management_key_by_firmware
            .iter()
            .find(|r| r.contains(fw))
        {
            return r.algorithm;
        }
        if fw < Firmware::AES {
            ManagementKeyAlgorithm::TripleDes
        } else {
            self.management_key_algorithm
        }
    }

    /// The slot's policy, or the rule it breaks.
    pub fn slot(&self, slot: PivSlot) -> Result<&SlotPolicy, String> {
        self.slots
            .get(&slot)
            .ok_or_else(|| format!("policy: slot {slot} may not hold a key"))
    }

    pub fn check_key(
        &self,
        slot: PivSlot,
        alg: KeyAlgorithm,
        pin: PinPolicy,
        touch: TouchPolicy,
    ) -> Result<(), String> {
        let sp = self.slot(slot)?;
        if !sp.algorithms.contains(&alg) {
            return Err(format!(
                "policy: slot {slot} does not allow {}",
                algorithm_name(alg)
            ));
        }
        if matches!(pin, PinPolicy::Default) || !sp.pin_policies.contains(&pin) {
            return Err(format!(
                "policy: slot {slot} does not allow PIN policy {pin:?}"
            ));
        }
        if matches!(touch, TouchPolicy::Default) || !sp.touch_policies.contains(&touch) {
            return Err(format!(
                "policy: slot {slot} does not allow touch policy {touch:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid() {
        Policy::default().validate().unwrap();
    }

    #[test]
    fn the_management_key_follows_the_firmware() {
        let mut p = Policy::default();
        let alg = |p: &Policy, fw: &str| p.management_key_algorithm_for(Some(fw));
        assert_eq!(alg(&p, "5.7.1"), ManagementKeyAlgorithm::Aes192);
        assert_eq!(alg(&p, "5.4.3"), ManagementKeyAlgorithm::Aes192);
        assert_eq!(alg(&p, "5.2.7"), ManagementKeyAlgorithm::TripleDes);
        assert_eq!(alg(&p, "4.3.7"), ManagementKeyAlgorithm::TripleDes);
        assert_eq!(
            p.management_key_algorithm_for(Some("garbage")),
            ManagementKeyAlgorithm::Aes192
        );
        assert_eq!(
            p.management_key_algorithm_for(None),
            ManagementKeyAlgorithm::Aes192
        );
        p.management_key_by_firmware = vec![ManagementKeyRule {
            from: Firmware(5, 4, 0),
            until: Some(Firmware(5, 7, 0)),
            algorithm: ManagementKeyAlgorithm::Aes256,
        }];
        p.validate().unwrap();
        assert_eq!(alg(&p, "5.4.3"), ManagementKeyAlgorithm::Aes256);
        assert_eq!(alg(&p, "5.6.9"), ManagementKeyAlgorithm::Aes256);
        assert_eq!(alg(&p, "5.7.0"), ManagementKeyAlgorithm::Aes192);
        // The JSON an admin PUTs.
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["management_key_by_firmware"],
            serde_json::json!([{"from": "5.4.0", "until": "5.7.0", "algorithm": "aes256"}])
        );
        assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), p);
    }

    #[test]
    fn a_firmware_rule_the_hardware_cannot_follow_is_refused() {
        let rule = |from, until, algorithm| Policy {
            management_key_by_firmware: vec![ManagementKeyRule {
                from,
                until,
                algorithm,
            }],
            ..Policy::default()
        };
        let aes_on_old = rule(Firmware(5, 0, 0), None, ManagementKeyAlgorithm::Aes192);
        assert!(aes_on_old.validate().unwrap_err().contains("no AES"));
        let tdes_on_new = rule(
            Firmware(5, 4, 0),
            Some(Firmware(5, 7, 0)),
            ManagementKeyAlgorithm::TripleDes,
        );
        assert!(tdes_on_new
            .validate()
            .unwrap_err()
            .contains("only allowed below 5.4.0"));
        let empty = rule(
            Firmware(5, 7, 0),
            Some(Firmware(5, 4, 0)),
            ManagementKeyAlgorithm::Aes256,
        );
        assert!(empty.validate().unwrap_err().contains("empty"));
        let tdes_old = rule(
            Firmware(4, 0, 0),
            Some(Firmware(5, 4, 0)),
            ManagementKeyAlgorithm::TripleDes,
        );
        tdes_old.validate().unwrap();
        for bad in ["5.x", "5.4.3.1", "", "300.0.0"] {
            let json = serde_json::json!({"management_key_by_firmware": [{"from": bad, "algorithm": "aes192"}]});
            assert!(
                serde_json::from_value::<Policy>(json).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_policy_outside_the_rules_names_the_rule() {
        let p = Policy {
            pin_min_length: 4,
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err().contains("PIN length"));
        let p = Policy {
            management_key_algorithm: ManagementKeyAlgorithm::TripleDes,
            ..Policy::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .contains("management_key_algorithm"));
        let p = Policy {
            certificate_lifetime_days: 5000,
            ..Policy::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .contains("certificate_lifetime_days"));
        let mut p = Policy::default();
        p.slots.remove(&PivSlot::KeyManagement);
        p.enrollment_slots = vec![PivSlot::KeyManagement];
        assert!(p.validate().unwrap_err().contains("enrollment slot 9d"));
    }

    #[test]
    fn unknown_fields_in_a_stored_policy_are_refused() {
        assert!(serde_json::from_str::<Policy>(r#"{"pin_min_lenght": 6}"#).is_err());
    }

    #[test]
    fn the_stored_policy_names_slots_as_before_and_refuses_other_slots() {
        let v = serde_json::to_value(Policy::default()).unwrap();
        let names: Vec<&String> = v["slots"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["9a", "9c", "9d", "9e"]);
        assert_eq!(v["enrollment_slots"], serde_json::json!(["9a"]));
        assert_eq!(
            v["slots"]["9c"]["pin_policies"],
            serde_json::json!(["always"])
        );
        let back: Policy = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, Policy::default());
        let mut bad = v;
        bad["enrollment_slots"] = serde_json::json!(["82"]);
        assert!(serde_json::from_value::<Policy>(bad).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"slots": {"82": {"algorithms": ["ecc_p256"], "pin_policies": ["once"], "touch_policies": ["never"]}}}"#).is_err());
    }

    #[test]
    fn slot_checks_name_what_is_not_allowed() {
        let p = Policy::default();
        p.check_key(
            PivSlot::Authentication,
            KeyAlgorithm::EccP256,
            PinPolicy::Once,
            TouchPolicy::Never,
        )
        .unwrap();
        let e = p
            .check_key(
                PivSlot::Signature,
                KeyAlgorithm::EccP256,
                PinPolicy::Once,
                TouchPolicy::Never,
            )
            .unwrap_err();
        assert!(e.contains("9c") && e.contains("PIN policy"), "{e}");
        let mut p = p;
        p.slots.remove(&PivSlot::CardAuthentication);
        let e = p
            .check_key(
                PivSlot::CardAuthentication,
                KeyAlgorithm::EccP256,
                PinPolicy::Once,
                TouchPolicy::Never,
            )
            .unwrap_err();
        assert!(e.contains("slot 9e may not hold a key"), "{e}");
    }
}
