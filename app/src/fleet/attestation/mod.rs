//! PIV attestation (Yubico's scheme): the key in a slot was generated on the
//! device with this serial. Path: the slot attestation certificate (a leaf,
//! whose public key must be the CSR's and whose Yubico extensions carry the
//! serial, firmware and PIN/touch policies) → the device's slot-f9
//! attestation certificate (a CA) → Yubico's CAs from the trust
//! configuration (built in, or the software YubiKey's test root in tests and
//! the demo) → a trusted root.
//!
//! X.509 path validation is rustls-webpki's (`verify_for_usage`): signatures,
//! name chaining, basicConstraints cA and pathLenConstraint, validity at the
//! given time, the signature algorithm allow-list below, unknown critical
//! extensions, bounded path building. Webpki ignores keyUsage and knows
//! nothing of Yubico's extensions, so the rules below add: issuers are CAs
//! whose keyUsage (when present) allows keyCertSign; a certificate that
//! attests a key (Yubico's serial or PIN/touch policy extension) is only ever
//! the leaf; what issues the f9 certificate comes from the trust
//! configuration, never from the request; the path is at most
//! [`MAX_PATH_LEN`] certificates long. They are checked first, certificate by
//! certificate, so a refusal names the rule and the certificate that broke it.

mod trust;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::prelude::FromDer;

pub use trust::{AttestationRoots, YUBICO_PEM};

use super::csr::pem_to_der;
use super::policy::{PinPolicy, TouchPolicy};

pub const OID_FIRMWARE: &str = "1.3.6.1.4.1.41482.3.3";
pub const OID_SERIAL: &str = "1.3.6.1.4.1.41482.3.7";
pub const OID_POLICY: &str = "1.3.6.1.4.1.41482.3.8";
pub const OID_FORM_FACTOR: &str = "1.3.6.1.4.1.41482.3.9";

/// Extensions that make a certificate a statement about a key generated on a
/// card. Genuine f9 certificates carry Yubico's firmware (`.3.3`) and FIPS
/// (`.3.10`) extensions, which describe the device, but never these (checked
/// on real f9 certificates of firmware 4.3.4, 5.4.3 and 5.7.4), so a
/// certificate carrying one is a slot attestation and may only be the leaf.
const SLOT_ATTESTATION_OIDS: [(&str, &str); 2] =
    [(OID_SERIAL, "serial"), (OID_POLICY, "PIN/touch policy")];

/// The longest path accepted, slot attestation and root included: slot → f9
/// → Yubico PIV Attestation X 1 → Yubico Attestation Intermediate X 1 →
/// Yubico Attestation Root 1 (firmware 5.7.4 and later).
pub const MAX_PATH_LEN: usize = 5;

/// Signature algorithms accepted on the path: RSA PKCS#1 v1.5 (2048 to 8192
/// bits) with SHA-256/384/512, parameters NULL or absent (5.7.4 f9
/// certificates omit them), and ECDSA P-256/P-384 with SHA-256/384. No SHA-1,
/// no MD5, no RSA under 2048 bits.
static ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

/// [`ALGORITHMS`] by signature algorithm OID, checked before path validation
/// so the refusal names the certificate.
const ALGORITHM_OIDS: [&str; 5] = [
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
];

/// anyExtendedKeyUsage: Yubico's attestation certificates carry no extended
/// key usage; one that restricts its purposes must allow any.
const ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

/// Why an attestation is refused. Each message names the rule that failed
/// (the web layer answers 422 with it, and the refusal is audited with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation certificate is not valid PEM/DER: {0}")]
    Malformed(String),
    #[error(
        "the attestation chain must hold the slot attestation and then the device (f9) certificate"
    )]
    ChainShape,
    #[error("the attestation chain is too long: {len} certificates on the path, at most {max}")]
    ChainTooLong { len: usize, max: usize },
    #[error("{cert} is signed with {algorithm}, which is not an allowed signature algorithm (RSA PKCS#1 v1.5 with SHA-256/384/512, ECDSA with SHA-256/384)")]
    Algorithm { cert: String, algorithm: String },
    #[error("{cert} is outside its validity period ({detail})")]
    Expired { cert: String, detail: String },
    #[error("the slot attestation is a CA certificate (basicConstraints cA); a slot attestation must be a leaf")]
    SlotIsCa,
    #[error("{cert} ({subject}) carries Yubico's slot attestation extension ({extension}): a slot attestation is only ever a leaf and cannot issue certificates")]
    LeafOnly {
        cert: String,
        subject: String,
        extension: String,
    },
    #[error("{cert} ({subject}) issues a certificate of the chain but {why}")]
    NotCa {
        cert: String,
        subject: String,
        why: String,
    },
    #[error("the slot attestation is not signed by the device attestation certificate")]
    BadSlotSignature,
    #[error("{cert} ({subject}) is not one of the configured attestation CAs: the f9 certificate must be issued by a configured CA, and the chain may add only those")]
    NotConfiguredCa { cert: String, subject: String },
    #[error("the device attestation certificate is not signed by a trusted attestation root: {0}")]
    UntrustedDevice(String),
    #[error("a path length constraint is exceeded (basicConstraints pathLenConstraint): a CA has more CAs below it than it allows")]
    PathLen,
    #[error("the attestation chain fails path validation: {0}")]
    Path(String),
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

/// Which certificate of the submitted chain, for messages.
fn role(i: usize) -> String {
    match i {
        0 => "the slot attestation (certificate 1)".into(),
        1 => "the device attestation certificate (f9, certificate 2)".into(),
        i => format!("certificate {} of the attestation chain", i + 1),
    }
}

fn parse(der: &[u8], i: usize) -> Result<X509Certificate<'_>, AttestationError> {
    let (rest, c) = X509Certificate::from_der(der)
        .map_err(|e| AttestationError::Malformed(format!("{}: {e}", role(i))))?;
    if !rest.is_empty() {
        return Err(AttestationError::Malformed(format!(
            "{}: trailing bytes",
            role(i)
        )));
    }
    Ok(c)
}

/// The first slot attestation extension `c` carries, by name.
pub(super) fn slot_attestation_extension(c: &X509Certificate<'_>) -> Option<&'static str> {
    SLOT_ATTESTATION_OIDS.iter().find_map(|(oid, name)| {
        c.extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == *oid)
            .then_some(*name)
    })
}

/// May `c` issue certificates? basicConstraints cA, and keyCertSign when
/// keyUsage is present (RFC 5280 4.2.1.3, 4.2.1.9).
pub(super) fn is_ca(c: &X509Certificate<'_>) -> Result<(), &'static str> {
    match c.basic_constraints() {
        Err(_) => return Err("its basicConstraints extension is invalid"),
        Ok(None) => return Err("is not a CA certificate (it has no basicConstraints cA)"),
        Ok(Some(bc)) if !bc.value.ca => {
            return Err("is not a CA certificate (basicConstraints cA is false)")
        }
        Ok(Some(_)) => {}
    }
    match c.key_usage() {
        Err(_) => Err("its keyUsage extension is invalid"),
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err("its keyUsage does not allow certificate signing (keyCertSign)")
        }
        Ok(_) => Ok(()),
    }
}

fn check_algorithm(c: &X509Certificate<'_>, i: usize) -> Result<(), AttestationError> {
    let alg = &c.signature_algorithm.algorithm;
    let id = alg.to_id_string();
    if !ALGORITHM_OIDS.contains(&id.as_str()) {
        let algorithm = match oid2sn(alg, oid_registry()) {
            Ok(name) => format!("{name} ({id})"),
            Err(_) => id,
        };
        return Err(AttestationError::Algorithm {
            cert: role(i),
            algorithm,
        });
    }
    if c.tbs_certificate.signature != c.signature_algorithm {
        return Err(AttestationError::Algorithm {
            cert: role(i),
            algorithm:
                "two different algorithms (tbsCertificate.signature and signatureAlgorithm differ)"
                    .into(),
        });
    }
    Ok(())
}

fn check_validity(c: &X509Certificate<'_>, i: usize, now: i64) -> Result<(), AttestationError> {
    let v = c.validity();
    if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
        return Err(AttestationError::Expired {
            cert: role(i),
            detail: format!("valid from {} to {}", v.not_before, v.not_after),
        });
    }
    Ok(())
}

/// Webpki's reasons, as the rule they break. Certificate-specific rules were
/// checked before on the submitted certificates; what remains concerns the
/// path above the f9 certificate.
fn path_error(e: webpki::Error) -> AttestationError {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => AttestationError::UntrustedDevice("no configured CA issued it".into()),
        E::InvalidSignatureForPublicKey => AttestationError::UntrustedDevice(
            "a signature on its path to the root does not verify".into(),
        ),
        E::CertDistrusted => {
            AttestationError::UntrustedDevice("a certificate on its path is distrusted".into())
        }
        E::EndEntityUsedAsCa => AttestationError::NotCa {
            cert: "a certificate on the path".into(),
            subject: "above the f9 certificate".into(),
            why: "is not a CA certificate (basicConstraints cA)".into(),
        },
        E::CaUsedAsEndEntity => AttestationError::SlotIsCa,
        E::PathLenConstraintViolated => AttestationError::PathLen,
        E::CertExpired { .. } | E::CertNotValidYet { .. } | E::InvalidCertValidity => {
            AttestationError::Expired {
                cert: "a CA certificate on the path to the root".into(),
                detail: format!("{e}"),
            }
        }
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => AttestationError::Algorithm {
            cert: "a certificate on the path to the root".into(),
            algorithm: "an algorithm or key size outside the allow-list".into(),
        },
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => AttestationError::ChainTooLong {
            len: MAX_PATH_LEN + 1,
            max: MAX_PATH_LEN,
        },
        other => AttestationError::Path(format!("{other}")),
    }
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

/// [`verify_at`] now.
pub fn verify(
    roots: &AttestationRoots,
    chain_pem: &[String],
    expected_serial: u32,
    csr_spki_der: &[u8],
) -> Result<Attested, AttestationError> {
    verify_at(
        roots,
        chain_pem,
        expected_serial,
        csr_spki_der,
        OffsetDateTime::now_utc(),
    )
}

/// Verify `chain_pem` = [slot attestation, device (f9) certificate, and
/// optionally configured CAs above it] against `roots` at time `now`, for the
/// device `expected_serial` and the CSR key. YubiKeys before 5.7.4 chain f9 →
/// root directly; later ones through Yubico intermediates, which come from the
/// trust bundle.
pub fn verify_at(
    roots: &AttestationRoots,
    chain_pem: &[String],
    expected_serial: u32,
    csr_spki_der: &[u8],
    now: OffsetDateTime,
) -> Result<Attested, AttestationError> {
    if chain_pem.len() < 2 {
        return Err(AttestationError::ChainShape);
    }
    if chain_pem.len() > MAX_PATH_LEN {
        return Err(AttestationError::ChainTooLong {
            len: chain_pem.len(),
            max: MAX_PATH_LEN,
        });
    }
    let ders: Vec<Vec<u8>> = chain_pem
        .iter()
        .enumerate()
        .map(|(i, p)| {
            pem_to_der(p, "CERTIFICATE").ok_or_else(|| {
                AttestationError::Malformed(format!("{} is not a PEM certificate", role(i)))
            })
        })
        .collect::<Result<_, _>>()?;
    let chain: Vec<X509Certificate<'_>> = ders
        .iter()
        .enumerate()
        .map(|(i, d)| parse(d, i))
        .collect::<Result<_, _>>()?;

    // Certificate by certificate, in chain order.
    let now_ts = now.unix_timestamp();
    for (i, c) in chain.iter().enumerate() {
        check_algorithm(c, i)?;
        check_validity(c, i, now_ts)?;
        if i == 0 {
            if matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
                return Err(AttestationError::SlotIsCa);
            }
            continue;
        }
        // The hole this closes: a genuine slot attestation (signed by a
        // genuine f9) used as the issuer of a forged one for a software key.
        if let Some(extension) = slot_attestation_extension(c) {
            return Err(AttestationError::LeafOnly {
                cert: role(i),
                subject: c.subject().to_string(),
                extension: extension.into(),
            });
        }
        is_ca(c).map_err(|why| AttestationError::NotCa {
            cert: role(i),
            subject: c.subject().to_string(),
            why: why.into(),
        })?;
    }
    let slot = &chain[0];
    let dev = &chain[1];
    if slot.issuer().as_raw() != dev.subject().as_raw()
        || slot.verify_signature(Some(dev.public_key())).is_err()
    {
        return Err(AttestationError::BadSlotSignature);
    }
    // What issues the f9 certificate comes from the trust configuration:
    // certificates after it are accepted only as copies of configured ones.
    for (i, (d, c)) in ders.iter().zip(&chain).enumerate().skip(2) {
        if !roots.0.contains(d) {
            return Err(AttestationError::NotConfiguredCa {
                cert: role(i),
                subject: c.subject().to_string(),
            });
        }
    }

    let (anchor_ders, bundle_intermediates) = roots.split();
    let anchor_ders: Vec<CertificateDer<'_>> =
        anchor_ders.into_iter().map(CertificateDer::from).collect();
    let anchors: Vec<TrustAnchor<'_>> = anchor_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<_, _>>()
        .map_err(|e| AttestationError::Malformed(format!("a configured root: {e}")))?;
    if anchors.is_empty() {
        return Err(AttestationError::UntrustedDevice(
            "no attestation root is configured".into(),
        ));
    }
    let ee_der = CertificateDer::from(ders[0].as_slice());
    let ee = EndEntityCert::try_from(&ee_der)
        .map_err(|e| AttestationError::Malformed(format!("{}: {e}", role(0))))?;
    let intermediates: Vec<CertificateDer<'_>> = std::iter::once(ders[1].as_slice())
        .chain(bundle_intermediates)
        .map(CertificateDer::from)
        .collect();
    let time = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now_ts).unwrap_or_default(),
    ));
    let path = ee
        .verify_for_usage(
            ALGORITHMS,
            &anchors,
            &intermediates,
            time,
            KeyUsage::required_if_present(ANY_EKU),
            None,
            None,
        )
        .map_err(path_error)?;
    let above: Vec<_> = path.intermediate_certificates().collect();
    if above.first().map(|c| c.der()).as_deref() != Some(ders[1].as_slice()) {
        return Err(AttestationError::BadSlotSignature);
    }
    if above.len() + 2 > MAX_PATH_LEN {
        return Err(AttestationError::ChainTooLong {
            len: above.len() + 2,
            max: MAX_PATH_LEN,
        });
    }
    // Webpki applies no constraint of the trust anchor itself; OpenSSL and
    // RFC 5280 count its pathLenConstraint too (Yubico's 263751 root allows
    // one CA below it: the f9 certificate).
    let anchor = anchors
        .iter()
        .position(|a| std::ptr::eq(a, path.anchor()))
        .and_then(|i| X509Certificate::from_der(&anchor_ders[i]).ok());
    if let Some((_, anchor)) = anchor {
        if let Ok(Some(bc)) = anchor.basic_constraints() {
            if bc
                .value
                .path_len_constraint
                .is_some_and(|n| u32::try_from(above.len()).unwrap_or(u32::MAX) > n)
            {
                return Err(AttestationError::PathLen);
            }
        }
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
