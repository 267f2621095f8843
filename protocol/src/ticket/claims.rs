//! What a ticket says ([`TicketClaims`]), the checks the agent makes of it
//! besides the signature, and the hash that binds it to a request's parameters.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Operation, TICKET_CLOCK_SKEW_SECS, TICKET_MAX_LIFETIME_SECS};

/// What a ticket allows: one operation, on one YubiKey, through one agent key,
/// with exactly these parameters, once, for a short time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketClaims {
    /// Unique id; the agent refuses a second use (the server's operation id fits).
    pub id: Uuid,
    pub operation: Operation,
    /// YubiKey serial number.
    pub serial: u32,
    /// [`agent_key_fingerprint`](super::agent_key_fingerprint) of the agent key the secrets are encrypted to.
    pub agent_key_fingerprint: String,
    /// [`params_hash`] of the request's `params`.
    pub params_hash: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; at most [`TICKET_MAX_LIFETIME_SECS`] after `issued_at`.
    pub expires_at: i64,
}

/// Why a ticket was refused. [`TicketError::code`] is the `error` of the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket is malformed")]
    Malformed,
    #[error("the ticket's signature does not verify with the Kleidia ticket key")]
    BadSignature,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket is not valid yet (issued in the future)")]
    NotYetValid,
    #[error("the ticket's lifetime exceeds {TICKET_MAX_LIFETIME_SECS} seconds")]
    LifetimeTooLong,
    #[error("the ticket has already been used")]
    Replayed,
    #[error("the ticket is for operation {0}, not this one")]
    WrongOperation(&'static str),
    #[error("the ticket is for YubiKey {0}, not this one")]
    WrongSerial(u32),
    #[error("the ticket was issued for another agent key")]
    WrongAgentKey,
    #[error("the request parameters do not match the ticket")]
    ParamsMismatch,
    #[error("the ticket key is invalid")]
    BadKey,
}

impl TicketError {
    pub fn code(&self) -> &'static str {
        match self {
            TicketError::Malformed => "ticket_malformed",
            TicketError::BadSignature => "ticket_forged",
            TicketError::Expired => "ticket_expired",
            TicketError::NotYetValid => "ticket_not_yet_valid",
            TicketError::LifetimeTooLong => "ticket_lifetime_too_long",
            TicketError::Replayed => "ticket_replayed",
            TicketError::WrongOperation(_) => "ticket_wrong_operation",
            TicketError::WrongSerial(_) => "ticket_wrong_serial",
            TicketError::WrongAgentKey => "ticket_wrong_agent_key",
            TicketError::ParamsMismatch => "ticket_params_mismatch",
            TicketError::BadKey => "ticket_key_invalid",
        }
    }
}

/// What the agent expects of a ticket for the request in hand.
#[derive(Debug, Clone)]
pub struct TicketExpectation<'a> {
    pub operation: Operation,
    pub serial: u32,
    pub agent_key_fingerprint: &'a str,
    pub params_hash: &'a str,
    /// Unix seconds.
    pub now: i64,
}

impl TicketClaims {
    /// Check everything except the signature (done by [`TicketVerifyingKey::verify`](super::TicketVerifyingKey::verify))
    /// and replay (the agent's used-ticket store).
    pub fn check(&self, want: &TicketExpectation<'_>) -> Result<(), TicketError> {
        // Checked: with the extremes of i64 the difference would overflow
        // (a panic in debug builds, in release a wrap to a small lifetime
        // that passed this check).
        let lifetime = self.expires_at.checked_sub(self.issued_at);
        if !matches!(lifetime, Some(0..=TICKET_MAX_LIFETIME_SECS)) {
            return Err(TicketError::LifetimeTooLong);
        }
        if want.now >= self.expires_at {
            return Err(TicketError::Expired);
        }
        if self.issued_at > want.now.saturating_add(TICKET_CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid);
        }
        if self.operation != want.operation {
            return Err(TicketError::WrongOperation(self.operation.as_str()));
        }
        if self.serial != want.serial {
            return Err(TicketError::WrongSerial(self.serial));
        }
        if !constant_time_eq(
            self.agent_key_fingerprint.as_bytes(),
            want.agent_key_fingerprint.as_bytes(),
        ) {
            return Err(TicketError::WrongAgentKey);
        }
        if !constant_time_eq(self.params_hash.as_bytes(), want.params_hash.as_bytes()) {
            return Err(TicketError::ParamsMismatch);
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Canonical JSON: keys sorted by UTF-8 bytes, no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lowercase hex SHA-256 of the canonical JSON of a request's `params`.
pub fn params_hash<P: Serialize>(params: &P) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(params)?;
    Ok(hex::encode(Sha256::digest(
        canonical_json(&value).as_bytes(),
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn claims(now: i64) -> TicketClaims {
        TicketClaims {
            id: Uuid::new_v4(),
            operation: Operation::SetPin,
            serial: 12345678,
            agent_key_fingerprint: "ab".repeat(32),
            params_hash: "cd".repeat(32),
            issued_at: now,
            expires_at: now + 60,
        }
    }

    pub(crate) fn want(c: &TicketClaims, now: i64) -> TicketExpectation<'_> {
        TicketExpectation {
            operation: c.operation,
            serial: c.serial,
            agent_key_fingerprint: &c.agent_key_fingerprint,
            params_hash: &c.params_hash,
            now,
        }
    }

    #[test]
    fn expiry_lifetime_and_binding_are_each_checked() {
        let c = claims(1_000);
        assert_eq!(c.check(&want(&c, 1_060)), Err(TicketError::Expired));
        assert_eq!(c.check(&want(&c, 900)), Err(TicketError::NotYetValid));
        let mut long = c.clone();
        long.expires_at = long.issued_at + 121;
        assert_eq!(
            long.check(&want(&long, 1_001)),
            Err(TicketError::LifetimeTooLong)
        );
        let mut w = want(&c, 1_001);
        w.serial = 9;
        assert_eq!(c.check(&w), Err(TicketError::WrongSerial(12345678)));
        let mut w = want(&c, 1_001);
        w.operation = Operation::Reset;
        assert_eq!(c.check(&w), Err(TicketError::WrongOperation("set_pin")));
        let other_fp = "ef".repeat(32);
        let mut w = want(&c, 1_001);
        w.agent_key_fingerprint = &other_fp;
        assert_eq!(c.check(&w), Err(TicketError::WrongAgentKey));
        let mut w = want(&c, 1_001);
        w.params_hash = &other_fp;
        assert_eq!(c.check(&w), Err(TicketError::ParamsMismatch));
    }

    #[test]
    fn a_lifetime_at_the_extremes_of_the_clock_is_refused_without_overflowing() {
        // The `ticket` fuzz target panicked on this (fuzz/regressions/ticket/claims-lifetime-overflow).
        let mut c = claims(1_000);
        c.issued_at = i64::MIN;
        c.expires_at = i64::MAX;
        for now in [i64::MIN, 0, 1_000, i64::MAX] {
            assert_eq!(c.check(&want(&c, now)), Err(TicketError::LifetimeTooLong));
        }
        let mut c = claims(i64::MAX - 60);
        c.expires_at = i64::MAX;
        assert_eq!(c.check(&want(&c, i64::MAX - 30)), Ok(()));
        assert_eq!(c.check(&want(&c, i64::MAX)), Err(TicketError::Expired));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_ignores_input_order() {
        let a = json!({"b": 1, "a": {"z": [1, {"y": "x", "c": null}], "m": "é\"q"}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "a": {"m":"é\"q", "z":[1,{"c":null,"y":"x"}]}, "b":1 }"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"m":"é\"q","z":[1,{"c":null,"y":"x"}]},"b":1}"#
        );
        assert_eq!(params_hash(&a).unwrap(), params_hash(&b).unwrap());
        assert_ne!(
            params_hash(&a).unwrap(),
            params_hash(&json!({"b": 2})).unwrap()
        );
    }
}
