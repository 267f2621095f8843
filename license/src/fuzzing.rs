//! One-input entry point of the `license_doc` target in `fuzz/`, also
//! replayed over the committed corpus by this crate's tests. Not an API.

use ed25519_dalek::SigningKey;
use kleidia_protocol::license::{LicensePayload, MAX_LICENSE_BYTES};

use crate::document::{peek_unverified, sha256_hex, sign, validate_payload, verify};

/// The vendor key the `license_doc` target's seeds are signed with.
pub fn vendor_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// Target `license_doc`: an uploaded license document, and a payload as the
/// vendor tool would sign it.
pub fn license_doc(data: &[u8]) {
    let sk = vendor_key();
    let vk = sk.verifying_key();

    // An upload: what verifies is what the vendor signed, and it re-issues.
    if let Ok(v) = verify(data, &vk) {
        assert_eq!(v.sha256, sha256_hex(data));
        assert!(validate_payload(&v.payload).is_ok());
        assert_eq!(peek_unverified(data).as_ref(), Ok(&v.payload));
        let doc = sign(&v.payload, &sk);
        assert!(doc.is_ok_and(|d| verify(d.as_bytes(), &vk).is_ok_and(|w| w.payload == v.payload)));
        // Under another key nothing verifies.
        let other = SigningKey::from_bytes(&[10; 32]).verifying_key();
        assert!(verify(data, &other).is_err());
    }
    let _ = peek_unverified(data);

    // A payload: issuing accepts exactly what validation accepts, and the
    // issued document verifies to the same payload.
    if let Ok(p) = serde_json::from_slice::<LicensePayload>(data) {
        let valid = validate_payload(&p).is_ok();
        match sign(&p, &sk) {
            Ok(doc) => {
                assert!(valid);
                if doc.len() <= MAX_LICENSE_BYTES {
                    assert!(verify(doc.as_bytes(), &vk).is_ok_and(|w| w.payload == p));
                }
            }
            Err(_) => assert!(!valid),
        }
    }
}

#[cfg(test)]
mod replay {
    #[test]
    fn the_committed_license_doc_corpus_and_regressions_replay_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let inputs = kleidia_protocol::fuzzing::inputs(&dir, "license_doc").unwrap_or_default();
        assert!(!inputs.is_empty(), "no corpus under {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            super::license_doc(&bytes);
        }
    }
}
