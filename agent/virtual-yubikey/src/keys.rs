//! The asymmetric keys a PIV slot can hold, and the raw private-key
//! operations the applet performs with them.

use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};
use thiserror::Error;

use crate::tlv;

/// PIV algorithm identifiers.
pub mod alg {
    pub const RSA1024: u8 = 0x06;
    pub const RSA2048: u8 = 0x07;
    pub const RSA3072: u8 = 0x05;
    pub const RSA4096: u8 = 0x16;
    pub const P256: u8 = 0x11;
    pub const P384: u8 = 0x14;
    /// Firmware 5.7 and later.
    pub const ED25519: u8 = 0xE0;
    /// Firmware 5.7 and later.
    pub const X25519: u8 = 0xE1;

    pub fn rsa_bits(a: u8) -> Option<usize> {
        match a {
            RSA1024 => Some(1024),
            RSA2048 => Some(2048),
            RSA3072 => Some(3072),
            RSA4096 => Some(4096),
            _ => None,
        }
    }

    pub fn name(a: u8) -> &'static str {
        match a {
            RSA1024 => "RSA1024",
            RSA2048 => "RSA2048",
            RSA3072 => "RSA3072",
            RSA4096 => "RSA4096",
            P256 => "ECCP256",
            P384 => "ECCP384",
            ED25519 => "ED25519",
            X25519 => "X25519",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("algorithm {0:#04x} is not supported")]
    Unsupported(u8),
    #[error("input has the wrong size or form")]
    BadInput,
    #[error("operation not possible with this key type")]
    WrongKeyType,
    #[error("RSA: {0}")]
    Rsa(#[from] rsa::Error),
    #[error("PKCS#8: {0}")]
    Pkcs8(String),
    #[error("EC: {0}")]
    Ec(String),
}

/// A private key in a slot.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// The 32-byte X25519 private key (clamped when used, RFC 7748).
    X25519(Box<[u8; 32]>),
}

/// RFC 8410 PKCS#8 (v1) and SubjectPublicKeyInfo prefixes; the 32-byte key follows.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_X25519: [u8; 16] = [
    0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x6E, 0x04, 0x22, 0x04, 0x20,
];
const SPKI_ED25519: [u8; 12] = [
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const SPKI_X25519: [u8; 12] = [
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x6E, 0x03, 0x21, 0x00,
];

fn key32(bytes: &[u8]) -> Result<[u8; 32], KeyError> {
    bytes.try_into().map_err(|_| KeyError::BadInput)
}

fn with_prefix(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(key);
    out
}

impl PrivateKey {
    pub fn generate<R: RngCore + CryptoRng>(algorithm: u8, rng: &mut R) -> Result<Self, KeyError> {
        match algorithm {
            alg::P256 => Ok(Self::P256(p256::SecretKey::random(rng))),
            alg::P384 => Ok(Self::P384(p384::SecretKey::random(rng))),
            alg::ED25519 => Ok(Self::Ed25519(Box::new(
                ed25519_dalek::SigningKey::generate(rng),
            ))),
            alg::X25519 => {
                let mut k = [0u8; 32];
                rng.fill_bytes(&mut k);
                Ok(Self::X25519(Box::new(k)))
            }
            a => {
                let bits = alg::rsa_bits(a).ok_or(KeyError::Unsupported(a))?;
                Ok(Self::Rsa(Box::new(RsaPrivateKey::new(rng, bits)?)))
            }
        }
    }

    /// The PIV algorithm id of this key.
    pub fn algorithm(&self) -> u8 {
        match self {
            Self::Rsa(k) => match k.size() * 8 {
                1024 => alg::RSA1024,
                3072 => alg::RSA3072,
                4096 => alg::RSA4096,
                _ => alg::RSA2048,
            },
            Self::P256(_) => alg::P256,
            Self::P384(_) => alg::P384,
            Self::Ed25519(_) => alg::ED25519,
            Self::X25519(_) => alg::X25519,
        }
    }

    pub fn to_pkcs8(&self) -> Result<Vec<u8>, KeyError> {
        use rsa::pkcs8::EncodePrivateKey;
        let doc = match self {
            Self::Rsa(k) => k.to_pkcs8_der(),
            Self::P256(k) => k.to_pkcs8_der(),
            Self::P384(k) => k.to_pkcs8_der(),
            Self::Ed25519(k) => return Ok(with_prefix(&PKCS8_ED25519, &k.to_bytes())),
            Self::X25519(k) => return Ok(with_prefix(&PKCS8_X25519, &k[..])),
        }
        .map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        Ok(doc.as_bytes().to_vec())
    }

    pub fn from_pkcs8(algorithm: u8, der: &[u8]) -> Result<Self, KeyError> {
        use rsa::pkcs8::DecodePrivateKey;
        let e = |e: rsa::pkcs8::Error| KeyError::Pkcs8(e.to_string());
        match algorithm {
            alg::P256 => Ok(Self::P256(p256::SecretKey::from_pkcs8_der(der).map_err(e)?)),
            alg::P384 => Ok(Self::P384(p384::SecretKey::from_pkcs8_der(der).map_err(e)?)),
            alg::ED25519 => match der.strip_prefix(&PKCS8_ED25519[..]) {
                Some(k) => Self::from_raw_25519(alg::ED25519, k),
                None => Err(KeyError::Pkcs8("not an Ed25519 key".into())),
            },
            alg::X25519 => match der.strip_prefix(&PKCS8_X25519[..]) {
                Some(k) => Self::from_raw_25519(alg::X25519, k),
                None => Err(KeyError::Pkcs8("not an X25519 key".into())),
            },
            a if alg::rsa_bits(a).is_some() => Ok(Self::Rsa(Box::new(
                RsaPrivateKey::from_pkcs8_der(der).map_err(e)?,
            ))),
            a => Err(KeyError::Unsupported(a)),
        }
    }

    /// Import from the PIV `FE` command's parameters.
    pub fn from_rsa_crt(p: &[u8], q: &[u8]) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::from_p_q(
            BigUint::from_bytes_be(p),
            BigUint::from_bytes_be(q),
            BigUint::from(65537u32),
        )?;
        key.validate()?;
        Ok(Self::Rsa(Box::new(key)))
    }

    pub fn from_ec_scalar(algorithm: u8, scalar: &[u8]) -> Result<Self, KeyError> {
        match algorithm {
            alg::P256 if scalar.len() == 32 => Ok(Self::P256(
                p256::SecretKey::from_slice(scalar).map_err(|e| KeyError::Ec(e.to_string()))?,
            )),
            alg::P384 if scalar.len() == 48 => Ok(Self::P384(
                p384::SecretKey::from_slice(scalar).map_err(|e| KeyError::Ec(e.to_string()))?,
            )),
            alg::P256 | alg::P384 => Err(KeyError::BadInput),
            a => Err(KeyError::Unsupported(a)),
        }
    }

    /// Import from the PIV `FE` command's tag `07` (Ed25519) or `08` (X25519):
    /// the raw 32-byte private key.
    pub fn from_raw_25519(algorithm: u8, raw: &[u8]) -> Result<Self, KeyError> {
        let k = key32(raw)?;
        match algorithm {
            alg::ED25519 => Ok(Self::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_bytes(&k),
            ))),
            alg::X25519 => Ok(Self::X25519(Box::new(k))),
            a => Err(KeyError::Unsupported(a)),
        }
    }

    fn x25519_public(k: &[u8; 32]) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*k).to_bytes()
    }

    /// The public key as the card encodes it inside `7F49` (and in metadata
    /// tag `04`): `81` modulus `82` exponent, `86` uncompressed point, or
    /// `86` with the 32 raw bytes of an Ed25519 or X25519 key.
    pub fn public_tlv(&self) -> Vec<u8> {
        match self {
            Self::Rsa(k) => {
                let mut out = tlv::encode(0x81, &k.n().to_bytes_be());
                tlv::encode_into(0x82, &k.e().to_bytes_be(), &mut out);
                out
            }
            Self::P256(k) => tlv::encode(0x86, k.public_key().to_encoded_point(false).as_bytes()),
            Self::P384(k) => tlv::encode(0x86, k.public_key().to_encoded_point(false).as_bytes()),
            Self::Ed25519(k) => tlv::encode(0x86, k.verifying_key().as_bytes()),
            Self::X25519(k) => tlv::encode(0x86, &Self::x25519_public(k)),
        }
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Result<Vec<u8>, KeyError> {
        use rsa::pkcs8::EncodePublicKey;
        let doc = match self {
            Self::Rsa(k) => k.to_public_key().to_public_key_der(),
            Self::P256(k) => k.public_key().to_public_key_der(),
            Self::P384(k) => k.public_key().to_public_key_der(),
            Self::Ed25519(k) => {
                return Ok(with_prefix(&SPKI_ED25519, k.verifying_key().as_bytes()))
            }
            Self::X25519(k) => return Ok(with_prefix(&SPKI_X25519, &Self::x25519_public(k))),
        }
        .map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        Ok(doc.as_bytes().to_vec())
    }

    /// GENERAL AUTHENTICATE with a challenge (`81`): raw RSA on a block the
    /// host already padded (signature or decryption), ECDSA over a hash
    /// (DER signature out), or Ed25519 over the whole message (64 bytes out).
    pub fn private_operation<R: RngCore + CryptoRng>(
        &self,
        input: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, KeyError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        match self {
            Self::Rsa(k) => {
                let size = k.size();
                if input.len() != size {
                    return Err(KeyError::BadInput);
                }
                let c = BigUint::from_bytes_be(input);
                if &c >= k.n() {
                    return Err(KeyError::BadInput);
                }
                let m = rsa::hazmat::rsa_decrypt_and_check(k.as_ref(), Some(rng), &c)?;
                let bytes = m.to_bytes_be();
                let mut out = vec![0u8; size - bytes.len()];
                out.extend_from_slice(&bytes);
                Ok(out)
            }
            Self::P256(k) => {
                let sk = p256::ecdsa::SigningKey::from(k);
                let sig: p256::ecdsa::Signature = sk
                    .sign_prehash(&fit_hash(input, 32))
                    .map_err(|e| KeyError::Ec(e.to_string()))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Self::P384(k) => {
                let sk = p384::ecdsa::SigningKey::from(k);
                let sig: p384::ecdsa::Signature = sk
                    .sign_prehash(&fit_hash(input, 48))
                    .map_err(|e| KeyError::Ec(e.to_string()))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Self::Ed25519(k) => {
                use ed25519_dalek::Signer;
                Ok(k.sign(input).to_bytes().to_vec())
            }
            Self::X25519(_) => Err(KeyError::WrongKeyType),
        }
    }

    /// GENERAL AUTHENTICATE with an exponentiation (`85`): ECDH with the
    /// peer's uncompressed point (answers the shared x coordinate), or
    /// X25519 with the peer's 32-byte public key.
    pub fn ecdh(&self, peer_point: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::P256(k) => {
                let peer =
                    p256::PublicKey::from_sec1_bytes(peer_point).map_err(|_| KeyError::BadInput)?;
                let shared = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            Self::P384(k) => {
                let peer =
                    p384::PublicKey::from_sec1_bytes(peer_point).map_err(|_| KeyError::BadInput)?;
                let shared = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            Self::X25519(k) => {
                let peer = curve25519_dalek::MontgomeryPoint(key32(peer_point)?);
                let shared = peer.mul_clamped(**k).to_bytes();
                // A low-order peer point gives all zeros (RFC 7748 §6.1): refused.
                if shared.iter().all(|b| *b == 0) {
                    return Err(KeyError::BadInput);
                }
                Ok(shared.to_vec())
            }
            Self::Rsa(_) | Self::Ed25519(_) => Err(KeyError::WrongKeyType),
        }
    }
}

/// The card treats the input as an integer of the curve's size: a shorter
/// hash is left-padded with zeros, a longer one keeps its leftmost bytes
/// (ECDSA's truncation).
fn fit_hash(input: &[u8], size: usize) -> Vec<u8> {
    if input.len() >= size {
        input[..size].to_vec()
    } else {
        let mut out = vec![0u8; size - input.len()];
        out.extend_from_slice(input);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use rsa::traits::PrivateKeyParts;

    #[test]
    fn ec_signatures_verify_with_the_public_key() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
        let digest = [7u8; 32];
        let sig = key.private_operation(&digest, &mut OsRng).unwrap();
        let PrivateKey::P256(sk) = &key else {
            unreachable!()
        };
        let vk = p256::ecdsa::VerifyingKey::from(sk.public_key());
        let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
    }

    #[test]
    fn ecdh_agrees_with_the_peer() {
        let card = PrivateKey::generate(alg::P384, &mut OsRng).unwrap();
        let peer = p384::SecretKey::random(&mut OsRng);
        let encoded = card.public_tlv();
        let card_pub = tlv::parse(&encoded).unwrap().0;
        assert_eq!(card_pub.tag, 0x86);
        let ours = card
            .ecdh(peer.public_key().to_encoded_point(false).as_bytes())
            .unwrap();
        let card_pk = p384::PublicKey::from_sec1_bytes(card_pub.value).unwrap();
        let theirs = p384::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_pk.as_affine());
        assert_eq!(ours, theirs.raw_secret_bytes().to_vec());
        assert!(card.ecdh(&[4, 1, 2]).is_err());
    }

    #[test]
    fn rsa_raw_operation_inverts_the_public_operation_and_survives_pkcs8() {
        let key = PrivateKey::generate(alg::RSA1024, &mut OsRng).unwrap();
        let PrivateKey::Rsa(k) = &key else {
            unreachable!()
        };
        let m = BigUint::from_bytes_be(&[0x42; 100]);
        let c = rsa::hazmat::rsa_encrypt(&k.to_public_key(), &m).unwrap();
        let mut block = vec![0u8; 128];
        let cb = c.to_bytes_be();
        block[128 - cb.len()..].copy_from_slice(&cb);
        let again = PrivateKey::from_pkcs8(alg::RSA1024, &key.to_pkcs8().unwrap()).unwrap();
        let out = again.private_operation(&block, &mut OsRng).unwrap();
        assert_eq!(&out[28..], &[0x42; 100][..]);
        assert!(out[..28].iter().all(|b| *b == 0));
        assert!(again.private_operation(&[1; 10], &mut OsRng).is_err());
    }

    #[test]
    fn imported_rsa_keys_are_rebuilt_from_their_primes() {
        let key = PrivateKey::generate(alg::RSA1024, &mut OsRng).unwrap();
        let PrivateKey::Rsa(k) = &key else {
            unreachable!()
        };
        let p = k.primes()[0].to_bytes_be();
        let q = k.primes()[1].to_bytes_be();
        let imported = PrivateKey::from_rsa_crt(&p, &q).unwrap();
        assert_eq!(imported.public_tlv(), key.public_tlv());
        assert_eq!(imported.algorithm(), alg::RSA1024);
    }

    #[test]
    fn ed25519_signs_whole_messages_and_survives_pkcs8() {
        use ed25519_dalek::Verifier;
        let key = PrivateKey::generate(alg::ED25519, &mut OsRng).unwrap();
        let again = PrivateKey::from_pkcs8(alg::ED25519, &key.to_pkcs8().unwrap()).unwrap();
        assert_eq!(again.public_tlv(), key.public_tlv());
        let msg = b"a message of any length, not a hash";
        let sig = again.private_operation(msg, &mut OsRng).unwrap();
        let public = tlv::parse(&key.public_tlv()).unwrap().0.value.to_vec();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        vk.verify(msg, &ed25519_dalek::Signature::from_slice(&sig).unwrap())
            .unwrap();
        assert!(key.ecdh(&[9; 32]).is_err());
        let spki = key.spki_der().unwrap();
        assert!(spki::SubjectPublicKeyInfoRef::try_from(&spki[..]).is_ok());
    }

    #[test]
    fn x25519_agrees_with_the_peer_and_refuses_low_order_points() {
        let card = PrivateKey::generate(alg::X25519, &mut OsRng).unwrap();
        let card = PrivateKey::from_pkcs8(alg::X25519, &card.to_pkcs8().unwrap()).unwrap();
        let card_pub: [u8; 32] = tlv::parse(&card.public_tlv())
            .unwrap()
            .0
            .value
            .try_into()
            .unwrap();
        let mut peer = [0u8; 32];
        OsRng.fill_bytes(&mut peer);
        let peer_pub = curve25519_dalek::MontgomeryPoint::mul_base_clamped(peer);
        let ours = card.ecdh(peer_pub.as_bytes()).unwrap();
        let theirs = curve25519_dalek::MontgomeryPoint(card_pub).mul_clamped(peer);
        assert_eq!(ours, theirs.to_bytes().to_vec());
        assert!(card.ecdh(&[0; 32]).is_err(), "low-order point");
        assert!(card.ecdh(&[9; 31]).is_err());
        assert!(card.private_operation(b"sign", &mut OsRng).is_err());
        assert_eq!(card.algorithm(), alg::X25519);
    }

    #[test]
    fn short_hashes_are_left_padded_and_long_ones_truncated() {
        assert_eq!(fit_hash(&[1, 2], 4), vec![0, 0, 1, 2]);
        assert_eq!(fit_hash(&[1, 2, 3, 4, 5], 4), vec![1, 2, 3, 4]);
    }
}
