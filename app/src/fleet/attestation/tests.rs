//! Chains as the software YubiKey makes them, real YubiKey chains, and every
//! forged shape the path rules exist for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use kleidia_virtual_yubikey::attest::{attest, pem, AttestationRoot, AttestedKey};
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use kleidia_virtual_yubikey::state::Firmware;
use p256::ecdsa::signature::Signer;
use rand::rngs::OsRng;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage as Ku, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use super::*;

mod forged;

const SERIAL: u32 = 12_345_678;
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA1: &str = "1.2.840.10045.4.1";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A fixed "now" (2025-06-15), so no test depends on the clock.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn at(t: SystemTime) -> OffsetDateTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap()).unwrap()
}

fn pems(ders: &[&[u8]]) -> Vec<String> {
    ders.iter()
        .map(|d| pem("CERTIFICATE", d).unwrap())
        .collect()
}

fn roots_of(ders: &[&[u8]]) -> AttestationRoots {
    AttestationRoots::from_pem(&pems(ders).concat()).unwrap()
}

fn spki_of(der: &[u8]) -> Vec<u8> {
    X509Certificate::from_der(der)
        .unwrap()
        .1
        .public_key()
        .raw
        .to_vec()
}

fn p256_key() -> p256::SecretKey {
    p256::SecretKey::random(&mut OsRng)
}

fn ext<T: Encode>(oid: &str, critical: bool, value: &T) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new_unwrap(oid),
        critical,
        extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
    }
}

fn ca_exts(path_len: Option<u8>) -> Vec<Extension> {
    vec![
        ext(
            "2.5.29.19",
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: path_len,
            },
        ),
        ext(
            "2.5.29.15",
            true,
            &Ku(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        ),
    ]
}

/// A certificate as anyone with `signer` can make one (ECDSA P-256, SHA-256,
/// whatever `sig_alg` says).
struct Spec<'a> {
    issuer: &'a Name,
    subject: &'a str,
    key: &'a p256::SecretKey,
    from: SystemTime,
    to: SystemTime,
    exts: Vec<Extension>,
    sig_alg: &'a str,
}

fn sign(spec: Spec<'_>, signer: &p256::SecretKey) -> Vec<u8> {
    let alg = AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap(spec.sig_alg),
        parameters: None,
    };
    let spki = SubjectPublicKeyInfoOwned::from_der(
        &PrivateKey::P256(spec.key.clone()).spki_der().unwrap(),
    )
    .unwrap();
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7F) | 0x01;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).unwrap(),
        signature: alg.clone(),
        issuer: spec.issuer.clone(),
        validity: Validity {
            not_before: Time::UtcTime(UtcTime::from_system_time(spec.from).unwrap()),
            not_after: Time::UtcTime(UtcTime::from_system_time(spec.to).unwrap()),
        },
        subject: Name::from_str(spec.subject).unwrap(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!spec.exts.is_empty()).then_some(spec.exts),
    };
    let sig: p256::ecdsa::Signature =
        p256::ecdsa::SigningKey::from(signer).sign(&tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.to_der().as_bytes()).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// A CA: its key, name and certificate.
struct Ca {
    key: p256::SecretKey,
    name: Name,
    der: Vec<u8>,
}

impl Ca {
    fn root(cn: &str, path_len: Option<u8>) -> Ca {
        let key = p256_key();
        let name = Name::from_str(&format!("CN={cn}")).unwrap();
        let der = sign(
            Spec {
                issuer: &name,
                subject: &format!("CN={cn}"),
                key: &key,
                from: t0() - YEAR,
                to: t0() + 10 * YEAR,
                exts: ca_exts(path_len),
                sig_alg: ECDSA_SHA256,
            },
            &key,
        );
        Ca { key, name, der }
    }

    fn issue(&self, cn: &str, exts: Vec<Extension>) -> Ca {
        self.issue_with(cn, exts, t0() - YEAR, t0() + 10 * YEAR, ECDSA_SHA256)
    }

    fn issue_with(
        &self,
        cn: &str,
        exts: Vec<Extension>,
        from: SystemTime,
        to: SystemTime,
        sig_alg: &str,
    ) -> Ca {
        let key = p256_key();
        let der = sign(
            Spec {
                issuer: &self.name,
                subject: &format!("CN={cn}"),
                key: &key,
                from,
                to,
                exts,
                sig_alg,
            },
            &self.key,
        );
        Ca {
            key,
            name: Name::from_str(&format!("CN={cn}")).unwrap(),
            der,
        }
    }

    /// What the card makes: an ATTEST certificate for `key`, signed by this
    /// (f9) key, with Yubico's extensions.
    fn attest(&self, key: &PrivateKey, serial: u32) -> Vec<u8> {
        attest(
            &PrivateKey::P256(self.key.clone()),
            &self.der,
            &AttestedKey {
                slot: 0x9a,
                key,
                pin_policy: 2,
                touch_policy: 1,
                serial,
                firmware: Firmware(5, 7, 1),
            },
            &mut OsRng,
        )
        .unwrap()
    }
}

/// The software YubiKey's test root, f9 and one generated key with its
/// genuine slot attestation, as the demo and the tests use them.
struct Card {
    root: AttestationRoot,
    f9_cert: Vec<u8>,
    slot_key: PrivateKey,
    slot_cert: Vec<u8>,
}

fn card() -> Card {
    let root = AttestationRoot::generate(t0(), &mut OsRng).unwrap();
    let (f9, f9_cert) = root.issue_device_attestation(t0(), &mut OsRng).unwrap();
    let slot_key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let slot_cert = attest(
        &f9,
        &f9_cert,
        &AttestedKey {
            slot: 0x9a,
            key: &slot_key,
            pin_policy: 2,
            touch_policy: 1,
            serial: SERIAL,
            firmware: Firmware(5, 7, 1),
        },
        &mut OsRng,
    )
    .unwrap();
    Card {
        root,
        f9_cert,
        slot_key,
        slot_cert,
    }
}

impl Card {
    fn roots(&self) -> AttestationRoots {
        roots_of(&[&self.root.cert_der])
    }
}

fn check(
    roots: &AttestationRoots,
    chain: &[&[u8]],
    spki: &[u8],
) -> Result<Attested, AttestationError> {
    verify_at(roots, &pems(chain), SERIAL, spki, at(t0()))
}

// ------------------------------------------------------------ accepted

#[test]
fn a_genuine_chain_from_the_software_yubikey_is_accepted() {
    let c = card();
    let a = check(
        &c.roots(),
        &[&c.slot_cert, &c.f9_cert],
        &c.slot_key.spki_der().unwrap(),
    )
    .unwrap();
    assert_eq!(a.serial, SERIAL);
    assert_eq!(a.firmware, Some((5, 7, 1)));
    assert_eq!(a.pin_policy, Some(PinPolicy::Once));
    assert_eq!(a.touch_policy, Some(TouchPolicy::Never));
    assert_eq!(a.form_factor, Some(1));
    // The root may be repeated at the end of the chain.
    check(
        &c.roots(),
        &[&c.slot_cert, &c.f9_cert, &c.root.cert_der],
        &c.slot_key.spki_der().unwrap(),
    )
    .unwrap();
}

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let text = match name {
        "5.4.3" => include_str!("testdata/yubikey-5.4.3-serial-25515137-slot-9c.pem"),
        "5.7.4" => include_str!("testdata/yubikey-5.7.4-serial-38906121-slot-9c.pem"),
        _ => include_str!("testdata/yubikey-4.3.4-serial-5970478-slot-9a.pem"),
    };
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| pem_to_der(b, "CERTIFICATE").unwrap())
        .collect()
}

#[test]
fn real_yubikey_5_chains_verify_against_the_built_in_yubico_trust() {
    let yubico = AttestationRoots::yubico().unwrap();
    // Firmware 5.4.3: slot 9c → f9 → Yubico PIV Root CA Serial 263751.
    let c = fixture("5.4.3");
    let a = verify_at(
        &yubico,
        &pems(&[&c[0], &c[1]]),
        25_515_137,
        &spki_of(&c[0]),
        at(t0()),
    )
    .unwrap();
    assert_eq!(a.firmware, Some((5, 4, 3)));
    assert_eq!(a.pin_policy, Some(PinPolicy::Always));
    assert_eq!(a.touch_policy, Some(TouchPolicy::Never));
    // Firmware 5.7.4: slot 9c → f9 → PIV Attestation B 1 → Intermediate B 1 →
    // Attestation Root 1, the intermediates from the bundle; the f9 signature
    // algorithm has absent parameters.
    let c = fixture("5.7.4");
    let a = verify_at(
        &yubico,
        &pems(&[&c[0], &c[1]]),
        38_906_121,
        &spki_of(&c[0]),
        at(t0()),
    )
    .unwrap();
    assert_eq!(a.firmware, Some((5, 7, 4)));
    assert_eq!(a.touch_policy, Some(TouchPolicy::Always));
    // Not under the software YubiKey's test root.
    let err = verify_at(
        &card().roots(),
        &pems(&[&c[0], &c[1]]),
        38_906_121,
        &spki_of(&c[0]),
        at(t0()),
    )
    .unwrap_err();
    assert!(matches!(err, AttestationError::UntrustedDevice(_)), "{err}");
}

#[test]
fn the_built_in_yubico_trust_is_two_roots_and_four_intermediates() {
    let yubico = AttestationRoots::yubico().unwrap();
    let (anchors, intermediates) = yubico.split();
    assert_eq!((anchors.len(), intermediates.len()), (2, 4));
    for der in &anchors {
        webpki::anchor_from_trusted_cert(&CertificateDer::from(*der)).unwrap();
    }
    let fingerprints: Vec<String> = anchors
        .iter()
        .map(|d| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(d)))
        .collect();
    assert_eq!(
        fingerprints,
        [
            "63ece914e54dd87915f34033c85af4c0696ba1512f8add66ced738331207b546",
            "62760c6a6ef91679f454c8902b80fd009825b3f25da90f1fbace2ec6586cd5a8"
        ]
    );
    let summary = yubico.summary();
    assert!(
        summary.contains("CN=Yubico PIV Attestation B 1"),
        "{summary}"
    );
}

// ------------------------------------------------------------ forged shapes
