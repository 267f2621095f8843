//! Signing and verifying license documents.
//!
//! The signature is Ed25519 over `SIGNING_CONTEXT ‖ payload bytes`, checked
//! with `verify_strict`: it rejects small-order public keys and small-order
//! or non-canonical R, which plain `verify` accepts (a weak key with R = the
//! identity and s = 0 "verifies" any message under `verify`).
//! The signature is checked before the payload is parsed, so nothing
//! unauthenticated reaches the JSON parser beyond the outer envelope.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use kleidia_protocol::license::{
    LicensePayload, SignedLicense, LICENSE_FORMAT, MAX_LICENSE_BYTES, SIGNING_CONTEXT,
};
use sha2::{Digest, Sha256};

/// Why a document was refused. The messages are safe to show to admins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the license file is larger than {MAX_LICENSE_BYTES} bytes")]
    TooLarge,
    #[error("the license file is malformed: {0}")]
    Malformed(String),
    #[error("the license signature does not verify with this build's vendor key (the file was altered or signed by another key)")]
    BadSignature,
}

/// A document whose signature verified, with the payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLicense {
    pub payload: LicensePayload,
    /// Hex SHA-256 of the document bytes as uploaded.
    pub sha256: String,
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(payload);
    m
}

/// Sign a payload (vendor side). Returns the document as pretty JSON text.
pub fn sign(payload: &LicensePayload, key: &SigningKey) -> Result<String, DocumentError> {
    validate_payload(payload)?;
    let bytes = serde_json::to_vec(payload).map_err(|e| DocumentError::Malformed(e.to_string()))?;
    let sig = key.sign(&signed_message(&bytes));
    let doc = SignedLicense {
        format: LICENSE_FORMAT.to_string(),
        payload: STANDARD.encode(&bytes),
        signature: STANDARD.encode(sig.to_bytes()),
    };
    let mut text =
        serde_json::to_string_pretty(&doc).map_err(|e| DocumentError::Malformed(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Parse the envelope and decode its parts, without checking the signature.
fn decode(doc: &[u8]) -> Result<(Vec<u8>, Signature), DocumentError> {
    if doc.len() > MAX_LICENSE_BYTES {
        return Err(DocumentError::TooLarge);
    }
    let env: SignedLicense = serde_json::from_slice(doc)
        .map_err(|e| DocumentError::Malformed(format!("not a license document: {e}")))?;
    if env.format != LICENSE_FORMAT {
        return Err(DocumentError::Malformed(format!(
            "unsupported format {:?} (expected {LICENSE_FORMAT:?})",
            env.format
        )));
    }
    let payload = STANDARD
        .decode(env.payload.as_bytes())
        .map_err(|e| DocumentError::Malformed(format!("payload is not base64: {e}")))?;
    let sig = STANDARD
        .decode(env.signature.as_bytes())
        .map_err(|e| DocumentError::Malformed(format!("signature is not base64: {e}")))?;
    let sig: [u8; 64] = sig.try_into().map_err(|v: Vec<u8>| {
        DocumentError::Malformed(format!("signature is {} bytes, expected 64", v.len()))
    })?;
    Ok((payload, Signature::from_bytes(&sig)))
}

fn parse_payload(bytes: &[u8]) -> Result<LicensePayload, DocumentError> {
    let p: LicensePayload = serde_json::from_slice(bytes)
        .map_err(|e| DocumentError::Malformed(format!("payload: {e}")))?;
    validate_payload(&p)?;
    Ok(p)
}

/// Verify a document with `key` and return its payload.
pub fn verify(doc: &[u8], key: &VerifyingKey) -> Result<VerifiedLicense, DocumentError> {
    let (payload, sig) = decode(doc)?;
    key.verify_strict(&signed_message(&payload), &sig)
        .map_err(|_| DocumentError::BadSignature)?;
    Ok(VerifiedLicense {
        payload: parse_payload(&payload)?,
        sha256: sha256_hex(doc),
    })
}

/// Read the payload without trusting it (for `inspect` and for showing what
/// an INVALID stored license claims). Never use the result for decisions.
pub fn peek_unverified(doc: &[u8]) -> Result<LicensePayload, DocumentError> {
    let (payload, _) = decode(doc)?;
    parse_payload(&payload)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const MAX_TEXT: usize = 200;
const MAX_FEATURES: usize = 64;

/// Sanity rules for a payload, applied when issuing and when verifying.
pub fn validate_payload(p: &LicensePayload) -> Result<(), DocumentError> {
    let bad = |m: String| Err(DocumentError::Malformed(m));
    for (name, v) in [
        ("license_id", &p.license_id),
        ("customer", &p.customer),
        ("installation_id", &p.installation_id),
    ] {
        if v.trim().is_empty() {
            return bad(format!("{name} is empty"));
        }
        if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
            return bad(format!(
                "{name} is longer than {MAX_TEXT} bytes or has control characters"
            ));
        }
    }
    if p.not_after <= p.issued_at {
        return bad("not_after is not after issued_at".into());
    }
    if p.limits.max_users == 0 || p.limits.max_devices == 0 {
        return bad("max_users and max_devices must be at least 1".into());
    }
    if p.features.len() > MAX_FEATURES {
        return bad(format!("more than {MAX_FEATURES} features"));
    }
    for f in &p.features {
        let ok = !f.is_empty()
            && f.len() <= 64
            && f.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return bad(format!(
                "feature {f:?} is not 1-64 characters of a-z, 0-9, '-', '_'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kleidia_protocol::license::LicenseLimits;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn payload() -> LicensePayload {
        LicensePayload {
            license_id: "lic-1".into(),
            customer: "Example Corp".into(),
            installation_id: "inst-1".into(),
            issued_at: 1_700_000_000,
            not_after: 1_800_000_000,
            limits: LicenseLimits {
                max_users: 10,
                max_devices: 20,
            },
            features: vec!["audit-export".into()],
        }
    }

    fn envelope(doc: &str) -> SignedLicense {
        serde_json::from_str(doc).unwrap()
    }

    #[test]
    fn a_signed_license_verifies_and_returns_its_payload() {
        let k = key(1);
        let doc = sign(&payload(), &k).unwrap();
        let v = verify(doc.as_bytes(), &k.verifying_key()).unwrap();
        assert_eq!(v.payload, payload());
        assert_eq!(v.sha256, sha256_hex(doc.as_bytes()));
    }

    #[test]
    fn every_single_bit_flip_in_the_payload_is_refused() {
        let k = key(2);
        let doc = envelope(&sign(&payload(), &k).unwrap());
        let bytes = STANDARD.decode(&doc.payload).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let tampered = SignedLicense {
                    payload: STANDARD.encode(&b),
                    ..doc.clone()
                };
                let text = serde_json::to_vec(&tampered).unwrap();
                assert_eq!(
                    verify(&text, &k.verifying_key()),
                    Err(DocumentError::BadSignature),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn a_flipped_signature_bit_is_refused() {
        let k = key(3);
        let doc = envelope(&sign(&payload(), &k).unwrap());
        let mut sig = STANDARD.decode(&doc.signature).unwrap();
        sig[40] ^= 0x10;
        let tampered = SignedLicense {
            signature: STANDARD.encode(&sig),
            ..doc
        };
        let text = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            verify(&text, &k.verifying_key()),
            Err(DocumentError::BadSignature)
        );
    }

    #[test]
    fn a_license_signed_by_another_key_is_refused() {
        let doc = sign(&payload(), &key(4)).unwrap();
        assert_eq!(
            verify(doc.as_bytes(), &key(5).verifying_key()),
            Err(DocumentError::BadSignature)
        );
    }

    #[test]
    fn a_signature_without_the_domain_prefix_is_refused() {
        // The vendor key signing the bare payload (for some other purpose)
        // must not produce a valid license.
        let k = key(6);
        let bytes = serde_json::to_vec(&payload()).unwrap();
        let sig = k.sign(&bytes);
        let doc = SignedLicense {
            format: LICENSE_FORMAT.into(),
            payload: STANDARD.encode(&bytes),
            signature: STANDARD.encode(sig.to_bytes()),
        };
        let text = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            verify(&text, &k.verifying_key()),
            Err(DocumentError::BadSignature)
        );
    }

    /// The compressed identity point: order 1, the canonical small-order point.
    const IDENTITY: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };

    fn identity_r_zero_s_doc() -> Vec<u8> {
        let bytes = serde_json::to_vec(&payload()).unwrap();
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&IDENTITY);
        let doc = SignedLicense {
            format: LICENSE_FORMAT.into(),
            payload: STANDARD.encode(&bytes),
            signature: STANDARD.encode(sig),
        };
        serde_json::to_vec(&doc).unwrap()
    }

    #[test]
    fn a_small_order_public_key_with_a_small_order_r_is_refused_although_plain_verify_accepts_it() {
        let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
        assert!(weak.is_weak());
        let doc = identity_r_zero_s_doc();
        // Show the forgery is real under the lenient check, so this test
        // fails if verification ever moves from verify_strict to verify.
        let (payload, sig) = decode(&doc).unwrap();
        use ed25519_dalek::Verifier;
        assert!(weak.verify(&signed_message(&payload), &sig).is_ok());
        assert_eq!(verify(&doc, &weak), Err(DocumentError::BadSignature));
    }

    #[test]
    fn a_small_order_r_is_refused_under_the_real_key() {
        assert_eq!(
            verify(&identity_r_zero_s_doc(), &key(7).verifying_key()),
            Err(DocumentError::BadSignature)
        );
    }

    #[test]
    fn malformed_documents_are_refused_as_malformed() {
        let k = key(8).verifying_key();
        let good = envelope(&sign(&payload(), &key(8)).unwrap());
        let cases: Vec<Vec<u8>> = vec![
            b"{not json".to_vec(),
            b"[]".to_vec(),
            br#"{"format":"kleidia-license-v1","payload":"AA=="}"#.to_vec(),
            serde_json::to_vec(&SignedLicense {
                format: "kleidia-license-v0".into(),
                ..good.clone()
            })
            .unwrap(),
            serde_json::to_vec(&SignedLicense {
                payload: "***".into(),
                ..good.clone()
            })
            .unwrap(),
            serde_json::to_vec(&SignedLicense {
                signature: STANDARD.encode([0u8; 63]),
                ..good.clone()
            })
            .unwrap(),
            serde_json::to_vec(&serde_json::json!({
                "format": good.format, "payload": good.payload,
                "signature": good.signature, "extra": 1
            }))
            .unwrap(),
        ];
        for c in cases {
            let r = verify(&c, &k);
            assert!(
                matches!(r, Err(DocumentError::Malformed(_))),
                "{:?} -> {r:?}",
                String::from_utf8_lossy(&c)
            );
        }
    }

    #[test]
    fn a_correctly_signed_payload_that_is_not_a_license_is_malformed() {
        let k = key(9);
        let bytes = br#"{"license_id":"x"}"#;
        let sig = k.sign(&signed_message(bytes));
        let doc = serde_json::to_vec(&SignedLicense {
            format: LICENSE_FORMAT.into(),
            payload: STANDARD.encode(bytes),
            signature: STANDARD.encode(sig.to_bytes()),
        })
        .unwrap();
        assert!(matches!(
            verify(&doc, &k.verifying_key()),
            Err(DocumentError::Malformed(m)) if m.contains("payload")
        ));
    }

    #[test]
    fn an_oversized_document_is_refused_before_parsing() {
        let doc = vec![b' '; MAX_LICENSE_BYTES + 1];
        assert_eq!(
            verify(&doc, &key(10).verifying_key()),
            Err(DocumentError::TooLarge)
        );
    }

    #[test]
    fn issuing_refuses_nonsense_payloads() {
        let k = key(11);
        let mut p = payload();
        p.not_after = p.issued_at;
        assert!(matches!(sign(&p, &k), Err(DocumentError::Malformed(_))));
        let mut p = payload();
        p.limits.max_devices = 0;
        assert!(matches!(sign(&p, &k), Err(DocumentError::Malformed(_))));
        let mut p = payload();
        p.features = vec!["Bad Feature".into()];
        assert!(matches!(sign(&p, &k), Err(DocumentError::Malformed(_))));
        let mut p = payload();
        p.customer = "  ".into();
        assert!(matches!(sign(&p, &k), Err(DocumentError::Malformed(_))));
    }

    #[test]
    fn peeking_reads_the_claimed_payload_without_a_valid_signature() {
        let doc = sign(&payload(), &key(12)).unwrap();
        assert_eq!(peek_unverified(doc.as_bytes()).unwrap(), payload());
    }
}
