//! Request and response bodies of the workstation agent (`127.0.0.1:56123`).
//!
//! Read-only endpoints are `GET`s with the serial in the query string. Every
//! state-changing endpoint is a `POST` of a [`SignedRequest`]: the server's
//! ticket plus the parameters it was issued for, e.g. for `/piv/set-pin`
//!
//! ```json
//! {"ticket": "kt1.…", "params": {"serial": 12345678, "current_pin": "<b64>", "new_pin": "<b64>"}}
//! ```
//!
//! The server builds the `params` struct, computes
//! [`crate::ticket::params_hash`] over it, signs a ticket with that hash and
//! hands both to the page, which posts them unchanged to the agent.

use serde::{Deserialize, Serialize};

use crate::ticket::{EncryptedSecret, Operation};

/// `error` codes of [`AgentErrorBody`] besides the ticket ones
/// ([`crate::ticket::TicketError::code`]).
pub mod codes {
    pub const BAD_HOST: &str = "bad_host";
    pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const TICKET_KEY_UNAVAILABLE: &str = "ticket_key_unavailable";
    pub const DECRYPT_FAILED: &str = "decrypt_failed";
    pub const INVALID_SECRET: &str = "invalid_secret";
    pub const NO_YUBIKEY: &str = "no_yubikey";
    pub const YUBIKEY_NOT_FOUND: &str = "yubikey_not_found";
    pub const YUBIKEY_REMOVED: &str = "yubikey_removed";
    pub const DEVICE_BUSY: &str = "device_busy";
    pub const WRONG_PIN: &str = "wrong_pin";
    pub const PIN_BLOCKED: &str = "pin_blocked";
    pub const WRONG_PUK: &str = "wrong_puk";
    pub const PUK_BLOCKED: &str = "puk_blocked";
    pub const WRONG_MANAGEMENT_KEY: &str = "wrong_management_key";
    pub const NOT_SUPPORTED: &str = "not_supported";
    pub const EMPTY_SLOT: &str = "empty_slot";
    pub const CERTIFICATE_MISMATCH: &str = "certificate_mismatch";
    pub const RESET_REFUSED: &str = "reset_refused";
    pub const PCSC_UNAVAILABLE: &str = "pcsc_unavailable";
    pub const CARD_ERROR: &str = "card_error";
    pub const NO_PRESENCE_KEY: &str = "no_presence_key";
    pub const INTERNAL: &str = "internal";
    /// A secret change was sent to the card but its answer never came back
    /// (the connection broke): the card may or may not hold the new value.
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    /// A settling change could not find out which value the card holds
    /// without risking a block (too few tries left); nothing was tried.
    pub const CANNOT_SETTLE: &str = "cannot_settle";
}

/// Every agent error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentErrorBody {
    /// Stable machine-readable code (see [`codes`] and `TicketError::code`).
    pub error: String,
    /// Human-readable explanation, safe to show to the user.
    pub message: String,
    /// PIN or PUK attempts left, for `wrong_pin` / `wrong_puk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u8>,
}

/// `GET /.well-known/kleidia-agent`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WellKnown {
    /// Always `kleidia-agent`.
    pub service: String,
    pub status: String,
    pub version: String,
    /// Fingerprint of the agent's current RSA key (see `ticket::agent_key_fingerprint`).
    pub agent_key_fingerprint: String,
}

/// `GET /health`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// RSA decryptions attempted since start (only ever after a valid ticket).
    pub decryptions: u64,
}

/// `GET /pubkey`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubKey {
    /// PEM SubjectPublicKeyInfo of the agent's ephemeral RSA key.
    pub public_key_pem: String,
    pub agent_key_fingerprint: String,
    /// Always `RSA-OAEP-256`.
    pub algorithm: String,
    pub bits: usize,
}

/// `GET /system/info`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    pub version: String,
    pub os: String,
    pub arch: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: i64,
    pub kleidia_url: String,
    pub allow_virtual_readers: bool,
    /// Whether the ticket verification key is known (configured or fetched).
    pub ticket_key_loaded: bool,
    pub agent_key_fingerprint: String,
    /// RSA decryptions attempted since start.
    pub decryptions: u64,
    pub tickets_accepted: u64,
    pub tickets_refused: u64,
}

/// One YubiKey in `GET /discover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveredYubiKey {
    pub serial: u32,
    /// e.g. `5.7.1`.
    pub firmware: String,
    /// e.g. `usb_a_keychain`; `null` when the management application did not say.
    pub form_factor: Option<String>,
    pub reader: String,
}

/// `GET /discover`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    pub yubikeys: Vec<DiscoveredYubiKey>,
}

/// Query of `GET /piv/info` and `GET /piv/check-defaults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialQuery {
    pub serial: u32,
}

/// Which credentials still hold their factory value, read from the card's
/// metadata (firmware 5.3+) without trying any PIN. `null` = cannot tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultCredentials {
    pub pin: Option<bool>,
    pub puk: Option<bool>,
    pub management_key: Option<bool>,
}

/// `GET /piv/check-defaults`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDefaults {
    pub serial: u32,
    /// False on firmware without the metadata command (before 5.3).
    pub metadata_supported: bool,
    pub defaults: DefaultCredentials,
}

/// PIV key slots the agent manages (ordered as [`PivSlot::ALL`], so a policy
/// keyed by slot lists them in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PivSlot {
    #[serde(rename = "9a")]
    Authentication,
    #[serde(rename = "9c")]
    Signature,
    #[serde(rename = "9d")]
    KeyManagement,
    #[serde(rename = "9e")]
    CardAuthentication,
}

impl PivSlot {
    pub const ALL: [PivSlot; 4] = [
        PivSlot::Authentication,
        PivSlot::Signature,
        PivSlot::KeyManagement,
        PivSlot::CardAuthentication,
    ];

    pub fn id(self) -> u8 {
        match self {
            PivSlot::Authentication => 0x9a,
            PivSlot::Signature => 0x9c,
            PivSlot::KeyManagement => 0x9d,
            PivSlot::CardAuthentication => 0x9e,
        }
    }

    /// The slot's name as PIV tools and Kleidia's API spell it (`9a`, …); the
    /// one place that spelling lives (serde uses the same names).
    pub fn as_str(self) -> &'static str {
        match self {
            PivSlot::Authentication => "9a",
            PivSlot::Signature => "9c",
            PivSlot::KeyManagement => "9d",
            PivSlot::CardAuthentication => "9e",
        }
    }
}

impl std::fmt::Display for PivSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot name that is not one of the four PIV key slots Kleidia manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSlot(pub String);

impl std::fmt::Display for UnknownSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown PIV slot {:?} (expected 9a, 9c, 9d or 9e)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSlot {}

impl std::str::FromStr for PivSlot {
    type Err = UnknownSlot;

    /// Case-insensitive, so `9A` from a form or ykman output is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PivSlot::ALL
            .into_iter()
            .find(|slot| slot.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSlot(s.to_string()))
    }
}

/// On-card key algorithms for `generate-csr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyAlgorithm {
    Rsa2048,
    /// Firmware 5.7+.
    Rsa3072,
    /// Firmware 5.7+.
    Rsa4096,
    EccP256,
    EccP384,
}

/// Key algorithms as reported by the card (a superset of [`KeyAlgorithm`]).
pub type ReportedAlgorithm = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PinPolicy {
    Default,
    Never,
    Once,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TouchPolicy {
    Default,
    Never,
    Always,
    Cached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ManagementKeyAlgorithm {
    #[serde(rename = "3des")]
    TripleDes,
    #[serde(rename = "aes128")]
    Aes128,
    #[serde(rename = "aes192")]
    Aes192,
    #[serde(rename = "aes256")]
    Aes256,
}

impl ManagementKeyAlgorithm {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            ManagementKeyAlgorithm::TripleDes | ManagementKeyAlgorithm::Aes192 => 24,
            ManagementKeyAlgorithm::Aes128 => 16,
            ManagementKeyAlgorithm::Aes256 => 32,
        }
    }
}

/// The key in a slot, from the card's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotKey {
    /// `rsa2048`, `rsa3072`, `rsa4096`, `ecc_p256`, `ecc_p384`, `ed25519`, `x25519`, …
    pub algorithm: ReportedAlgorithm,
    pub pin_policy: Option<PinPolicy>,
    pub touch_policy: Option<TouchPolicy>,
    /// `generated` (on the card, attestable) or `imported`.
    pub origin: Option<String>,
}

/// The certificate in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotCertificate {
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex of the certificate serial number.
    pub serial_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotInfo {
    pub slot: PivSlot,
    pub key: Option<SlotKey>,
    pub certificate: Option<SlotCertificate>,
}

/// `GET /piv/info`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivInfo {
    pub serial: u32,
    pub firmware: String,
    pub reader: String,
    pub pin_retries: Option<u8>,
    /// Only known from metadata (5.3+); never found out by trying.
    pub puk_retries: Option<u8>,
    pub management_key_algorithm: Option<ManagementKeyAlgorithm>,
    pub metadata_supported: bool,
    pub defaults: DefaultCredentials,
    pub slots: Vec<SlotInfo>,
}

/// Body of every `POST`: a ticket and the parameters it was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest<P> {
    pub ticket: String,
    pub params: P,
}

/// Parameters of one operation.
pub trait OperationParams: Serialize {
    const OPERATION: Operation;
    fn serial(&self) -> u32;
}

macro_rules! params {
    ($(#[$m:meta])* $name:ident, $op:expr, { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub serial: u32,
            $($(#[$fm])* pub $f: $t,)*
        }
        impl OperationParams for $name {
            const OPERATION: Operation = $op;
            fn serial(&self) -> u32 { self.serial }
        }
    };
}

params!(
    /// `POST /piv/set-pin`
    SetPinParams, Operation::SetPin, {
    current_pin: EncryptedSecret,
    new_pin: EncryptedSecret,
    /// A resume of a change whose outcome is unknown: find out first which
    /// value the card holds (DESIGN §8). Signed with the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    settle: bool,
});

params!(
    /// `POST /piv/set-puk`
    SetPukParams, Operation::SetPuk, {
    current_puk: EncryptedSecret,
    new_puk: EncryptedSecret,
    /// A resume of a change whose outcome is unknown: find out first which
    /// value the card holds (DESIGN §8). Signed with the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    settle: bool,
});

params!(
    /// `POST /piv/unblock-pin`
    UnblockPinParams, Operation::UnblockPin, {
    puk: EncryptedSecret,
    new_pin: EncryptedSecret,
    /// A resume of a change whose outcome is unknown: find out first which
    /// value the card holds (DESIGN §8). Signed with the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    settle: bool,
});

params!(
    /// `POST /piv/rotate-management-key`. Key values are hex before encryption.
    RotateManagementKeyParams, Operation::RotateManagementKey, {
    current_management_key: EncryptedSecret,
    new_management_key: EncryptedSecret,
    algorithm: ManagementKeyAlgorithm,
    require_touch: bool,
    /// A resume of a change whose outcome is unknown: find out first which
    /// value the card holds (DESIGN §8). Signed with the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    settle: bool,
});

params!(
    /// `POST /piv/generate-csr`: a new key on the card, a CSR signed by it,
    /// and the attestation chain. The server chooses everything.
    GenerateCsrParams, Operation::GenerateCsr, {
    slot: PivSlot,
    algorithm: KeyAlgorithm,
    pin_policy: PinPolicy,
    touch_policy: TouchPolicy,
    /// RFC 4514 string, e.g. `CN=alice,O=Example`.
    subject: String,
    management_key: EncryptedSecret,
    /// Needed to sign the CSR unless `pin_policy` is `never`.
    pin: Option<EncryptedSecret>,
});

params!(
    /// `POST /piv/import-certificate`: the certificate must match the slot's key.
    ImportCertificateParams, Operation::ImportCertificate, {
    slot: PivSlot,
    certificate_pem: String,
    management_key: EncryptedSecret,
});

params!(
    /// `POST /piv/attest`
    AttestParams, Operation::Attest, {
    slot: PivSlot,
});

params!(
    /// `POST /piv/reset`: blocks PIN and PUK on purpose (with values that
    /// cannot be a PIN) and resets the PIV application to factory state,
    /// then resets the OATH application (see [`OathWipe`]).
    ResetParams, Operation::Reset, {
});

params!(
    /// `POST /piv/prove-presence`: the card signs [`presence_digest`] of
    /// `nonce`, `operation_id` and the agent's own key fingerprint with the
    /// P-256 key in slot 95. With `establish` (a card whose presence key is
    /// not recorded yet) the agent first generates that key (PIN and touch
    /// policy never) with the factory default management key, and returns
    /// its attestation.
    ProvePresenceParams, Operation::ProvePresence, {
    /// Standard base64 of the server's 32-byte nonce.
    nonce: String,
    operation_id: String,
    establish: bool,
});

/// Response of `POST /piv/prove-presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceProof {
    /// Standard base64 of the DER ECDSA (P-256, SHA-256) signature over
    /// [`presence_digest`].
    pub signature: String,
    /// The fingerprint the agent signed over (its own key's).
    pub agent_key_fingerprint: String,
    /// With `establish`: the new presence key (PEM SubjectPublicKeyInfo) and
    /// its attestation chain [slot 95 attestation, f9].
    #[serde(default)]
    pub public_key_pem: Option<String>,
    #[serde(default)]
    pub attestation_chain_pem: Option<Vec<String>>,
    pub ticket_id: String,
}

/// The retired PIV slot (0x95, "R20") that holds the presence key.
pub const PRESENCE_SLOT: u8 = 0x95;
/// Domain separation of the presence signature.
pub const PRESENCE_DOMAIN: &[u8] = b"kleidia-presence-v1";
/// Length of the server's presence nonce.
pub const PRESENCE_NONCE_LEN: usize = 32;

/// What the card signs to prove it is at the agent, for one operation:
/// SHA-256("kleidia-presence-v1" ‖ nonce ‖ operation id (16 bytes) ‖ the
/// agent key fingerprint (lowercase hex, ASCII)). The card signs this
/// digest as it is (ECDSA P-256, pre-hashed).
pub fn presence_digest(nonce: &[u8], operation_id: &uuid::Uuid, fingerprint: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(PRESENCE_DOMAIN);
    h.update(nonce);
    h.update(operation_id.as_bytes());
    h.update(fingerprint.as_bytes());
    h.finalize().into()
}

/// Response of the operations that return nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationDone {
    pub ok: bool,
    pub operation: Operation,
    pub serial: u32,
    /// The ticket's id, for the report back to the server.
    pub ticket_id: String,
    /// What a settling secret change found on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
    /// What a reset did to the OATH application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oath: Option<OathWipe>,
}

/// What a reset (`POST /piv/reset`, Kleidia's wipe) did to the OATH
/// application, after returning PIV to factory state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OathWipe {
    /// The OATH application was reset: every OATH account is gone.
    Reset,
    /// The key has no OATH application (none in its firmware, or it is
    /// disabled): there were no OATH accounts to delete.
    NotPresent,
}

impl OathWipe {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::NotPresent => "not_present",
        }
    }
}

/// What a settling secret change (`settle: true`) found on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// The card already held the new value: the earlier attempt had applied
    /// it. Nothing was changed now.
    AlreadyApplied,
    /// The card still held the confirmed value; the change was made now.
    AppliedNow,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyApplied => "already_applied",
            Self::AppliedNow => "applied_now",
        }
    }
}

/// Response of `POST /piv/generate-csr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedCsr {
    pub serial: u32,
    pub slot: PivSlot,
    pub algorithm: KeyAlgorithm,
    pub csr_pem: String,
    pub public_key_pem: String,
    /// Attestation certificate of the new key, then the device's attestation
    /// certificate (slot f9) that signed it; the vendor root is not included.
    pub attestation_chain_pem: Vec<String>,
    pub ticket_id: String,
}

/// Response of `POST /piv/attest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub serial: u32,
    pub slot: PivSlot,
    /// As in [`GeneratedCsr::attestation_chain_pem`].
    pub attestation_chain_pem: Vec<String>,
    pub ticket_id: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_presence_digest_binds_nonce_operation_and_agent_key() {
        let op = uuid::Uuid::from_u128(7);
        let base = presence_digest(&[1; 32], &op, "ab");
        assert_ne!(base, presence_digest(&[2; 32], &op, "ab"));
        assert_ne!(
            base,
            presence_digest(&[1; 32], &uuid::Uuid::from_u128(8), "ab")
        );
        assert_ne!(base, presence_digest(&[1; 32], &op, "ac"));
        assert_eq!(base, presence_digest(&[1; 32], &op, "ab"));
    }

    #[test]
    fn piv_slot_names_round_trip_through_str_and_serde() {
        for slot in PivSlot::ALL {
            assert_eq!(slot.as_str().parse::<PivSlot>(), Ok(slot));
            assert_eq!(slot.as_str().to_uppercase().parse::<PivSlot>(), Ok(slot));
            let json = serde_json::to_string(&slot).unwrap();
            assert_eq!(json, format!("\"{}\"", slot.as_str()));
        }
        assert_eq!("82".parse::<PivSlot>(), Err(UnknownSlot("82".into())));
        assert!("".parse::<PivSlot>().is_err());
    }

    #[test]
    fn a_request_with_an_unknown_field_does_not_parse() {
        let ok = r#"{"ticket":"t","params":{"serial":1,"slot":"9a"}}"#;
        assert!(serde_json::from_str::<SignedRequest<AttestParams>>(ok).is_ok());
        let extra = r#"{"ticket":"t","params":{"serial":1,"slot":"9a","x":1}}"#;
        assert!(serde_json::from_str::<SignedRequest<AttestParams>>(extra).is_err());
        let extra_top = r#"{"ticket":"t","params":{"serial":1,"slot":"9a"},"x":1}"#;
        assert!(serde_json::from_str::<SignedRequest<AttestParams>>(extra_top).is_err());
    }

    #[test]
    fn slots_and_algorithms_use_their_wire_names() {
        assert_eq!(
            serde_json::to_string(&PivSlot::Signature).unwrap(),
            "\"9c\""
        );
        assert_eq!(
            serde_json::to_string(&KeyAlgorithm::EccP256).unwrap(),
            "\"ecc_p256\""
        );
        assert_eq!(
            serde_json::to_string(&ManagementKeyAlgorithm::TripleDes).unwrap(),
            "\"3des\""
        );
    }
}
