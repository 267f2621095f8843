//! The server's Ed25519 ticket key, and the agent's side of it: fetching,
//! checking and verifying with the public half.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{TicketClaims, TicketError, TICKET_ALGORITHM, TICKET_MAX_LEN, TICKET_PREFIX};

/// Body of `GET {kleidia_url}/api/agent/ticket-key`.
///
/// `{"algorithm":"Ed25519","public_key":"<standard base64 of the raw 32-byte key>","key_id":"<16 hex>"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketKeyResponse {
    /// Always [`TICKET_ALGORITHM`].
    pub algorithm: String,
    /// Standard base64 (padded) of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// First 16 hex characters of the SHA-256 of the raw public key.
    pub key_id: String,
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

    /// The body the server serves at [`TICKET_KEY_PATH`](super::TICKET_KEY_PATH).
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ticket::claims::tests::{claims, want};

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
}
