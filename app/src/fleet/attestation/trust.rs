//! The attestation CAs Kleidia trusts: Yubico's public PIV attestation roots
//! and intermediates (built in, `app/trust/yubico/`), or the bundle named by
//! `attestation.roots_file` instead (the software YubiKey's test root in the
//! demo and the tests).

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::{is_ca, slot_attestation_extension, AttestationError};
use crate::fleet::csr::pem_to_der;

/// Yubico's PIV attestation CAs, as shipped in `app/trust/yubico/` (see the
/// README there for fingerprints and provenance).
pub const YUBICO_PEM: [&str; 3] = [
    include_str!("../../../trust/yubico/piv-attestation-root-263751.pem"),
    include_str!("../../../trust/yubico/attestation-root-1.pem"),
    include_str!("../../../trust/yubico/piv-attestation-intermediates.pem"),
];

/// Trusted attestation CAs (DER). Self-signed ones are trust anchors; the
/// others are intermediates offered to path building, trusted only through a
/// root in the same bundle.
#[derive(Debug, Clone, Default)]
pub struct AttestationRoots(pub Vec<Vec<u8>>);

impl AttestationRoots {
    /// Yubico's PIV attestation roots and intermediates: the default trust.
    pub fn yubico() -> Result<Self, AttestationError> {
        Self::from_pem(&YUBICO_PEM.concat())
    }

    /// Every `CERTIFICATE` block in `pem`. Each must be a CA certificate:
    /// a bundle that makes a leaf (say, a slot attestation) a trust anchor is
    /// refused rather than trusted.
    pub fn from_pem(pem: &str) -> Result<Self, AttestationError> {
        let mut out = Vec::new();
        let mut rest = pem;
        while let Some(i) = rest.find("-----BEGIN CERTIFICATE-----") {
            let block = &rest[i..];
            let end = block
                .find("-----END CERTIFICATE-----")
                .ok_or_else(|| AttestationError::Malformed("unterminated PEM block".into()))?
                + "-----END CERTIFICATE-----".len();
            let der = pem_to_der(&block[..end], "CERTIFICATE")
                .ok_or_else(|| AttestationError::Malformed("bad base64".into()))?;
            check_ca(&der, out.len() + 1)?;
            out.push(der);
            rest = &block[end..];
        }
        if out.is_empty() {
            return Err(AttestationError::Malformed(
                "the attestation trust bundle holds no certificate".into(),
            ));
        }
        Ok(Self(out))
    }

    /// (anchors, intermediates), DER.
    pub(super) fn split(&self) -> (Vec<&[u8]>, Vec<&[u8]>) {
        self.0
            .iter()
            .map(Vec::as_slice)
            .partition(|der| match X509Certificate::from_der(der) {
                Ok((_, c)) => c.subject().as_raw() == c.issuer().as_raw(),
                Err(_) => false,
            })
    }

    /// One line per certificate: subject and SHA-256 fingerprint, for the log.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|der| {
                let subject = X509Certificate::from_der(der)
                    .map(|(_, c)| c.subject().to_string())
                    .unwrap_or_default();
                format!("{subject} (sha256 {})", hex::encode(Sha256::digest(der)))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn check_ca(der: &[u8], n: usize) -> Result<(), AttestationError> {
    let (rest, c) = X509Certificate::from_der(der)
        .map_err(|e| AttestationError::Malformed(format!("trust bundle certificate {n}: {e}")))?;
    if !rest.is_empty() {
        return Err(AttestationError::Malformed(format!(
            "trust bundle certificate {n}: trailing bytes"
        )));
    }
    let bad = |why: &str| {
        Err(AttestationError::Malformed(format!(
            "trust bundle certificate {n} ({}) {why}",
            c.subject()
        )))
    };
    if slot_attestation_extension(&c).is_some() {
        return bad("is a slot attestation, not a CA");
    }
    match is_ca(&c) {
        Ok(()) => Ok(()),
        Err(why) => bad(why),
    }
}
