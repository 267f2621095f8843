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

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

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
pub enum Operation {
    SetPin,
    SetPuk,
    UnblockPin,
    RotateManagementKey,
    GenerateCsr,
    ImportCertificate,
    Attest,
    Reset,
}

impl Operation {
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
        }
    }
}

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
    /// [`agent_key_fingerprint`] of the agent key the secrets are encrypted to.
    pub agent_key_fingerprint: String,
    /// [`params_hash`] of the request's `params`.
    pub params_hash: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; at most [`TICKET_MAX_LIFETIME_SECS`] after `issued_at`.
    pub expires_at: i64,
}

/// Body of `GET {kleidia_url}/api/agent/ticket-key`.
///
/// `{"algorithm":"Ed25519","public_key":"<standard base64 of the raw 32-byte key>","key_id":"<16 hex>"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketKeyResponse {
    /// Always [`TICKET_ALGORITHM`].
    pub algorithm: String,
    /// Standard base64 (padded) of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// First 16 hex characters of the SHA-256 of the raw public key.
    pub key_id: String,
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

/// The server's ticket signing key.
pub struct TicketSigningKey(SigningKey);

impl TicketSigningKey {
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    pub fn generate<R: rsa::rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for storing the key (e.g. in OpenBao).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn verifying_key(&self) -> TicketVerifyingKey {
        TicketVerifyingKey(self.0.verifying_key())
    }

    /// Sign claims into the `kt1.…` wire format.
    pub fn sign(&self, claims: &TicketClaims) -> String {
        // Serialising a struct of strings, integers and a uuid cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{TICKET_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let sig = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

impl std::fmt::Debug for TicketSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TicketSigningKey")
            .field(&self.verifying_key())
            .finish()
    }
}

/// The key the agent verifies tickets with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TicketVerifyingKey(VerifyingKey);

impl std::fmt::Debug for TicketVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketVerifyingKey({})", self.key_id())
    }
}

impl TicketVerifyingKey {
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, TicketError> {
        VerifyingKey::from_bytes(raw)
            .map(Self)
            .map_err(|_| TicketError::BadKey)
    }

    /// Parse the standard base64 of the raw 32-byte key (as in [`TicketKeyResponse`]).
    pub fn from_base64(s: &str) -> Result<Self, TicketError> {
        let raw = STANDARD.decode(s.trim()).map_err(|_| TicketError::BadKey)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| TicketError::BadKey)?;
        let key = Self::from_bytes(&raw)?;
        // A weak (small-order) key would let forged signatures through.
        if key.0.is_weak() {
            return Err(TicketError::BadKey);
        }
        Ok(key)
    }

    /// Parse and check a [`TicketKeyResponse`].
    pub fn from_response(r: &TicketKeyResponse) -> Result<Self, TicketError> {
        if r.algorithm != TICKET_ALGORITHM {
            return Err(TicketError::BadKey);
        }
        let key = Self::from_base64(&r.public_key)?;
        if key.key_id() != r.key_id {
            return Err(TicketError::BadKey);
        }
        Ok(key)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    pub fn key_id(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        hex::encode(&d[..8])
    }

    /// The body the server serves at [`TICKET_KEY_PATH`].
    pub fn response(&self) -> TicketKeyResponse {
        TicketKeyResponse {
            algorithm: TICKET_ALGORITHM.to_string(),
            public_key: self.to_base64(),
            key_id: self.key_id(),
        }
    }

    /// Check the signature (strictly) and decode the claims. Says nothing yet
    /// about expiry, replay or what the ticket is for: see [`TicketClaims::check`].
    pub fn verify(&self, ticket: &str) -> Result<TicketClaims, TicketError> {
        if ticket.len() > TICKET_MAX_LEN {
            return Err(TicketError::Malformed);
        }
        let (signed, sig_b64) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let (prefix, payload_b64) = signed.split_once('.').ok_or(TicketError::Malformed)?;
        if prefix != TICKET_PREFIX {
            return Err(TicketError::Malformed);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| TicketError::Malformed)?;
        let sig = Signature::from_slice(&sig).map_err(|_| TicketError::Malformed)?;
        self.0
            .verify_strict(signed.as_bytes(), &sig)
            .map_err(|_| TicketError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TicketError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| TicketError::Malformed)
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
    /// Check everything except the signature (done by [`TicketVerifyingKey::verify`])
    /// and replay (the agent's used-ticket store).
    pub fn check(&self, want: &TicketExpectation<'_>) -> Result<(), TicketError> {
        if self.expires_at - self.issued_at > TICKET_MAX_LIFETIME_SECS
            || self.expires_at < self.issued_at
        {
            return Err(TicketError::LifetimeTooLong);
        }
        if want.now >= self.expires_at {
            return Err(TicketError::Expired);
        }
        if self.issued_at > want.now + TICKET_CLOCK_SKEW_SECS {
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

/// Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of the agent's RSA key.
pub fn agent_key_fingerprint(key: &RsaPublicKey) -> Result<String, rsa::pkcs8::spki::Error> {
    let der = key.to_public_key_der()?;
    Ok(hex::encode(Sha256::digest(der.as_bytes())))
}

/// Errors reading an agent public key.
#[derive(Debug, thiserror::Error)]
pub enum AgentKeyError {
    #[error("not a PEM SubjectPublicKeyInfo RSA public key")]
    Parse,
    #[error("the RSA key has {0} bits; at least {AGENT_KEY_MIN_BITS} are required")]
    TooSmall(usize),
}

/// Parse the PEM from the agent's `GET /pubkey`, check its size, and return it
/// with its fingerprint.
pub fn parse_agent_public_key(pem: &str) -> Result<(RsaPublicKey, String), AgentKeyError> {
    use rsa::traits::PublicKeyParts;
    let key = RsaPublicKey::from_public_key_pem(pem.trim()).map_err(|_| AgentKeyError::Parse)?;
    let bits = key.size() * 8;
    if bits < AGENT_KEY_MIN_BITS {
        return Err(AgentKeyError::TooSmall(bits));
    }
    let fp = agent_key_fingerprint(&key).map_err(|_| AgentKeyError::Parse)?;
    Ok((key, fp))
}

/// A secret RSA-OAEP(SHA-256) encrypted to the agent key, standard base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncryptedSecret(pub String);

impl std::fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedSecret({} chars)", self.0.len())
    }
}

/// Why a secret could not be decrypted (deliberately not more specific).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the secret could not be decrypted with this agent's key")]
pub struct DecryptError;

impl EncryptedSecret {
    pub fn encrypt<R: rsa::rand_core::CryptoRngCore + ?Sized>(
        key: &RsaPublicKey,
        secret: &[u8],
        rng: &mut R,
    ) -> Result<Self, rsa::Error> {
        let mut rng = rng;
        let ct = key.encrypt(&mut rng, Oaep::new::<Sha256>(), secret)?;
        Ok(Self(STANDARD.encode(ct)))
    }

    pub fn decrypt(&self, key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let ct = STANDARD.decode(self.0.trim()).map_err(|_| DecryptError)?;
        key.decrypt(Oaep::new::<Sha256>(), &ct)
            .map(Zeroizing::new)
            .map_err(|_| DecryptError)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(now: i64) -> TicketClaims {
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

    fn want(c: &TicketClaims, now: i64) -> TicketExpectation<'_> {
        TicketExpectation {
            operation: c.operation,
            serial: c.serial,
            agent_key_fingerprint: &c.agent_key_fingerprint,
            params_hash: &c.params_hash,
            now,
        }
    }

    #[test]
    fn a_signed_ticket_verifies_and_round_trips_its_claims() {
        let sk = TicketSigningKey::from_bytes(&[7; 32]);
        let c = claims(1_000);
        let t = sk.sign(&c);
        assert!(t.starts_with("kt1."));
        let back = sk.verifying_key().verify(&t).unwrap();
        assert_eq!(back, c);
        back.check(&want(&c, 1_010)).unwrap();
    }

    #[test]
    fn a_ticket_signed_by_another_key_or_altered_is_refused_as_forged() {
        let sk = TicketSigningKey::from_bytes(&[7; 32]);
        let other = TicketSigningKey::from_bytes(&[8; 32]);
        let c = claims(1_000);
        let t = other.sign(&c);
        assert_eq!(
            sk.verifying_key().verify(&t),
            Err(TicketError::BadSignature)
        );

        // Swap in a payload for another serial, keep the signature.
        let good = sk.sign(&c);
        let mut c2 = c.clone();
        c2.serial = 1;
        let evil = sk.sign(&c2);
        let (_, sig) = good.rsplit_once('.').unwrap();
        let (signed_evil, _) = evil.rsplit_once('.').unwrap();
        let spliced = format!("{signed_evil}.{sig}");
        assert_eq!(
            sk.verifying_key().verify(&spliced),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            sk.verifying_key().verify("kt1.e30.AAAA"),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            sk.verifying_key().verify("garbage"),
            Err(TicketError::Malformed)
        );
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

    #[test]
    fn the_ticket_key_response_round_trips_and_rejects_a_wrong_key_id() {
        let vk = TicketSigningKey::from_bytes(&[3; 32]).verifying_key();
        let r = vk.response();
        assert_eq!(r.algorithm, "Ed25519");
        assert_eq!(TicketVerifyingKey::from_response(&r).unwrap(), vk);
        let mut bad = r.clone();
        bad.key_id = "0000000000000000".into();
        assert!(TicketVerifyingKey::from_response(&bad).is_err());
        assert!(TicketVerifyingKey::from_base64("AAAA").is_err());
    }

    #[test]
    fn a_secret_encrypted_to_the_agent_key_decrypts_only_with_that_key() {
        let mut rng = rand::thread_rng();
        let k1 = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let k2 = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let ct = EncryptedSecret::encrypt(&k1.to_public_key(), b"654321", &mut rng).unwrap();
        assert_eq!(ct.decrypt(&k1).unwrap().as_slice(), b"654321");
        assert_eq!(ct.decrypt(&k2), Err(DecryptError));
        assert!(!format!("{ct:?}").contains(&ct.0));
    }

    #[test]
    fn a_small_agent_key_is_refused_and_a_large_one_gets_a_stable_fingerprint() {
        use rsa::pkcs8::LineEnding;
        let mut rng = rand::thread_rng();
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = small
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert!(matches!(
            parse_agent_public_key(&pem),
            Err(AgentKeyError::TooSmall(1024))
        ));
        assert!(matches!(
            parse_agent_public_key("nope"),
            Err(AgentKeyError::Parse)
        ));
        let fp = agent_key_fingerprint(&small.to_public_key()).unwrap();
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, agent_key_fingerprint(&small.to_public_key()).unwrap());
    }
}
