//! PIV attestation (Yubico's scheme): the key in a slot was generated on the
//! device with this serial. Chain: a trusted attestation root (Yubico's in
//! production, the software YubiKey's test root in tests and the demo) →
//! the device's slot-f9 attestation certificate → the slot's attestation
//! certificate, whose public key must be the CSR's and whose Yubico
//! extensions carry the serial, firmware and PIN/touch policies.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::csr::pem_to_der;
use super::policy::{PinPolicy, TouchPolicy};

pub const OID_FIRMWARE: &str = "1.3.6.1.4.1.41482.3.3";
pub const OID_SERIAL: &str = "1.3.6.1.4.1.41482.3.7";
pub const OID_POLICY: &str = "1.3.6.1.4.1.41482.3.8";
pub const OID_FORM_FACTOR: &str = "1.3.6.1.4.1.41482.3.9";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation certificate is not valid PEM/DER: {0}")]
    Malformed(String),
    #[error("the device attestation certificate is not signed by a trusted attestation root")]
    UntrustedDevice,
    #[error("the slot attestation is not signed by the device attestation certificate")]
    BadSlotSignature,
    #[error("an attestation certificate is outside its validity period")]
    Expired,
    #[error("the attestation has no serial number extension")]
    NoSerial,
    #[error("the attestation is for serial {attested}, not for this device ({expected})")]
    WrongSerial { attested: u32, expected: u32 },
    #[error("the attested key is not the key in the CSR")]
    KeyMismatch,
}

/// What a verified attestation says about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub serial: u32,
    pub firmware: Option<(u8, u8, u8)>,
    pub pin_policy: Option<PinPolicy>,
    pub touch_policy: Option<TouchPolicy>,
    pub form_factor: Option<u8>,
}

/// Trusted attestation roots (DER).
#[derive(Debug, Clone, Default)]
pub struct AttestationRoots(pub Vec<Vec<u8>>);

impl AttestationRoots {
    /// Every `CERTIFICATE` block in `pem`.
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
            X509Certificate::from_der(&der)
                .map_err(|e| AttestationError::Malformed(e.to_string()))?;
            out.push(der);
            rest = &block[end..];
        }
        Ok(Self(out))
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, AttestationError> {
    let (rest, c) =
        X509Certificate::from_der(der).map_err(|e| AttestationError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AttestationError::Malformed("trailing bytes".into()));
    }
    Ok(c)
}

/// A DER INTEGER's value (non-negative, at most 32 bits).
fn der_u32(v: &[u8]) -> Option<u32> {
    if v.len() < 3 || v[0] != 0x02 || usize::from(v[1]) != v.len() - 2 {
        return None;
    }
    let body = &v[2..];
    if body[0] & 0x80 != 0 {
        return None;
    }
    let body = if body.len() > 1 && body[0] == 0 {
        &body[1..]
    } else {
        body
    };
    if body.len() > 4 {
        return None;
    }
    Some(body.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Verify `chain_pem` = [slot attestation, device (f9) certificate, any
/// further intermediates] against `roots`, for the device `expected_serial`
/// and the CSR key. Pre-5.7.4 YubiKeys chain f9 → root directly; later ones go
/// through Yubico intermediates, which may come with the chain or sit in the
/// trust bundle (any bundle certificate that is not self-signed).
pub fn verify(
    roots: &AttestationRoots,
    chain_pem: &[String],
    expected_serial: u32,
    csr_spki_der: &[u8],
) -> Result<Attested, AttestationError> {
    if chain_pem.len() < 2 || chain_pem.len() > 5 {
        return Err(AttestationError::Malformed(
            "the chain must hold the slot attestation and the device (f9) certificate".into(),
        ));
    }
    let ders: Vec<Vec<u8>> = chain_pem
        .iter()
        .map(|p| {
            pem_to_der(p, "CERTIFICATE")
                .ok_or_else(|| AttestationError::Malformed("not a PEM certificate".into()))
        })
        .collect::<Result<_, _>>()?;
    let chain: Vec<X509Certificate<'_>> =
        ders.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let bundle: Vec<X509Certificate<'_>> = roots.0.iter().filter_map(|d| parse(d).ok()).collect();
    let slot = &chain[0];
    let dev = &chain[1];
    if slot.issuer() != dev.subject() || slot.verify_signature(Some(dev.public_key())).is_err() {
        return Err(AttestationError::BadSlotSignature);
    }
    // Walk from the device certificate up to a trusted root.
    let is_root = |c: &X509Certificate<'_>| c.subject() == c.issuer();
    let mut current = dev;
    let mut trusted = false;
    for _ in 0..4 {
        if let Some(_root) = bundle.iter().filter(|c| is_root(c)).find(|r| {
            r.subject() == current.issuer()
                && current.verify_signature(Some(r.public_key())).is_ok()
        }) {
            trusted = true;
            break;
        }
        let next = chain[2..]
            .iter()
            .chain(bundle.iter().filter(|c| !is_root(c)))
            .find(|i| {
                i.subject() == current.issuer()
                    && current.verify_signature(Some(i.public_key())).is_ok()
            });
        match next {
            Some(i) => current = i,
            None => break,
        }
    }
    if !trusted {
        return Err(AttestationError::UntrustedDevice);
    }
    if chain.iter().any(|c| !c.validity().is_valid()) {
        return Err(AttestationError::Expired);
    }

    let ext = |oid: &str| {
        slot.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .map(|e| e.value)
    };
    let serial = ext(OID_SERIAL)
        .and_then(der_u32)
        .ok_or(AttestationError::NoSerial)?;
    if serial != expected_serial {
        return Err(AttestationError::WrongSerial {
            attested: serial,
            expected: expected_serial,
        });
    }
    if slot.public_key().raw != csr_spki_der {
        return Err(AttestationError::KeyMismatch);
    }
    let firmware = ext(OID_FIRMWARE)
        .filter(|v| v.len() == 3)
        .map(|v| (v[0], v[1], v[2]));
    let policy = ext(OID_POLICY).filter(|v| v.len() >= 2);
    let pin_policy = policy.and_then(|v| match v[0] {
        1 => Some(PinPolicy::Never),
        2 => Some(PinPolicy::Once),
        3 => Some(PinPolicy::Always),
        _ => None,
    });
    let touch_policy = policy.and_then(|v| match v[1] {
        1 => Some(TouchPolicy::Never),
        2 => Some(TouchPolicy::Always),
        3 => Some(TouchPolicy::Cached),
        _ => None,
    });
    let form_factor = ext(OID_FORM_FACTOR).and_then(|v| v.first().copied());
    Ok(Attested {
        serial,
        firmware,
        pin_policy,
        touch_policy,
        form_factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_decode_within_32_bits() {
        assert_eq!(der_u32(&[0x02, 0x01, 0x05]), Some(5));
        assert_eq!(
            der_u32(&[0x02, 0x04, 0x00, 0xbc, 0x61, 0x4e]),
            Some(12_345_678)
        );
        assert_eq!(
            der_u32(&[0x02, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff]),
            Some(u32::MAX)
        );
        assert_eq!(der_u32(&[0x02, 0x01, 0x85]), None);
        assert_eq!(der_u32(&[0x04, 0x01, 0x05]), None);
        assert_eq!(der_u32(&[0x02, 0x02, 0x05]), None);
    }
}
