//! The agent's RSA key as the server sees it, and the RSA-OAEP envelope in
//! which secrets travel to the agent.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AGENT_KEY_MIN_BITS;

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
