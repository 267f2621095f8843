//! Operation tickets: what the Kleidia server signs so that the workstation
//! agent will change a YubiKey, and the RSA-OAEP envelope in which secrets
//! travel to the agent.
//!
//! # Ticket wire format
//!
//! `kt1.<payload>.<signature>` where `<payload>` is the unpadded base64url of
//! the UTF-8 JSON of [`TicketClaims`] and `<signature>` is the unpadded
//! base64url of the Ed25519 signature over the ASCII bytes `kt1.<payload>`.
//! The agent verifies with `verify_strict` before it looks at the claims.
//!
//! # Parameter hash
//!
//! A ticket is bound to the exact parameters of one request: the `params`
//! object of [`crate::agent::SignedRequest`]. [`params_hash`] is the lowercase
//! hex SHA-256 of the canonical JSON of those parameters: object keys sorted
//! by their UTF-8 bytes, no whitespace, strings and numbers written as
//! `serde_json` writes them, `null` for an absent optional field. Both sides
//! hash the typed parameter struct, so key order or spacing in transit does not
//! matter, while any change of value does.
//!
//! # Secrets
//!
//! [`EncryptedSecret`]: standard base64 (with padding) of the RSA-OAEP
//! ciphertext (SHA-256 for the hash and for MGF1, empty label) of the secret's
//! UTF-8 bytes, encrypted to the agent's public key from `GET /pubkey`. PINs
//! and PUKs are their ASCII digits; a management key is its lowercase hex.

mod claims;
mod secret;
mod sign;

use serde::{Deserialize, Serialize};

pub use claims::{canonical_json, params_hash, TicketClaims, TicketError, TicketExpectation};
pub use secret::{
    agent_key_fingerprint, parse_agent_public_key, AgentKeyError, DecryptError, EncryptedSecret,
};
pub use sign::{TicketKeyResponse, TicketSigningKey, TicketVerifyingKey};

/// Prefix (and version) of the ticket wire format.
pub const TICKET_PREFIX: &str = "kt1";
/// Longest lifetime (`expires_at - issued_at`) the agent accepts, in seconds.
pub const TICKET_MAX_LIFETIME_SECS: i64 = 120;
/// How far in the future `issued_at` may lie (clock skew), in seconds.
pub const TICKET_CLOCK_SKEW_SECS: i64 = 30;
/// Longest ticket string the agent will parse.
pub const TICKET_MAX_LEN: usize = 4096;
/// Path, on the Kleidia server, of the ticket verification key ([`TicketKeyResponse`]).
pub const TICKET_KEY_PATH: &str = "/api/agent/ticket-key";
/// The one ticket signature algorithm.
pub const TICKET_ALGORITHM: &str = "Ed25519";
/// Smallest RSA key the server may encrypt secrets to.
pub const AGENT_KEY_MIN_BITS: usize = 3072;

/// The state-changing agent operations; each is one `POST /piv/...` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Operation {
    SetPin,
    SetPuk,
    UnblockPin,
    RotateManagementKey,
    GenerateCsr,
    ImportCertificate,
    Attest,
    Reset,
    /// The card signs a presence challenge with its presence key (slot 95);
    /// nothing on the card changes, except that a factory card gets that key.
    ProvePresence,
}

impl Operation {
    /// The operations recorded as operation rows (`operations.kind`).
    /// [`Operation::ProvePresence`] is not one: it is a step of another
    /// operation (recorded in `presence_challenges`).
    pub const ALL: [Operation; 8] = [
        Operation::SetPin,
        Operation::SetPuk,
        Operation::UnblockPin,
        Operation::RotateManagementKey,
        Operation::GenerateCsr,
        Operation::ImportCertificate,
        Operation::Attest,
        Operation::Reset,
    ];

    /// The agent endpoint that performs this operation.
    pub fn path(self) -> &'static str {
        match self {
            Operation::SetPin => "/piv/set-pin",
            Operation::SetPuk => "/piv/set-puk",
            Operation::UnblockPin => "/piv/unblock-pin",
            Operation::RotateManagementKey => "/piv/rotate-management-key",
            Operation::GenerateCsr => "/piv/generate-csr",
            Operation::ImportCertificate => "/piv/import-certificate",
            Operation::Attest => "/piv/attest",
            Operation::Reset => "/piv/reset",
            Operation::ProvePresence => "/piv/prove-presence",
        }
    }

    /// The snake_case name used in tickets and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SetPin => "set_pin",
            Operation::SetPuk => "set_puk",
            Operation::UnblockPin => "unblock_pin",
            Operation::RotateManagementKey => "rotate_management_key",
            Operation::GenerateCsr => "generate_csr",
            Operation::ImportCertificate => "import_certificate",
            Operation::Attest => "attest",
            Operation::Reset => "reset",
            Operation::ProvePresence => "prove_presence",
        }
    }
}
