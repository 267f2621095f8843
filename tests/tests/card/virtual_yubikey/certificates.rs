//! Certificates on the software YubiKey: a large one written and read back,
//! and the attestation chain to the test root.

use der::{Decode, Encode};
use kleidia_tests::card::{
    default_mgm, lock_blocking, open, ykman, yubico_piv_tool, VirtualYubiKey, DEFAULT_PIN,
};
use kleidia_tests::openssl;
use sha2::{Digest, Sha256};
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{PinPolicy, TouchPolicy, YubiKey};

/// A certificate of about 2 KB for the card's P-256 key in 9a, signed by
/// that key through the card (a large comment extension pads it).
fn big_certificate(yk: &mut YubiKey, point: &[u8]) -> Vec<u8> {
    use p256::pkcs8::EncodePublicKey;
    use std::str::FromStr;
    use x509_cert::{ext::Extension, name::Name, serial_number::SerialNumber, time::Validity};
    let now = std::time::SystemTime::now();
    let spki_der = p256::PublicKey::from_sec1_bytes(point)
        .unwrap()
        .to_public_key_der()
        .unwrap();
    let alg = spki::AlgorithmIdentifierOwned {
        oid: der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        parameters: None,
    };
    let tbs = x509_cert::TbsCertificate {
        version: x509_cert::Version::V3,
        serial_number: SerialNumber::new(&[0x01, 0x02, 0x03]).unwrap(),
        signature: alg.clone(),
        issuer: Name::from_str("CN=Kleidia test user,O=Kleidia").unwrap(),
        // UTCTime, as RFC 5280 wants before 2050 (the yubikey crate re-encodes otherwise).
        validity: Validity {
            not_before: x509_cert::time::Time::UtcTime(
                der::asn1::UtcTime::from_system_time(now).unwrap(),
            ),
            not_after: x509_cert::time::Time::UtcTime(
                der::asn1::UtcTime::from_system_time(now + std::time::Duration::from_secs(86400))
                    .unwrap(),
            ),
        },
        subject: Name::from_str("CN=Kleidia test user,O=Kleidia").unwrap(),
        subject_public_key_info: spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![Extension {
            extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.113730.1.13"),
            critical: false,
            extn_value: der::asn1::OctetString::new(
                der::asn1::Ia5String::new(&"x".repeat(1700))
                    .unwrap()
                    .to_der()
                    .unwrap(),
            )
            .unwrap(),
        }]),
    };
    let digest = Sha256::digest(tbs.to_der().unwrap());
    yk.verify_pin(DEFAULT_PIN).unwrap();
    let sig = piv::sign_data(yk, &digest, AlgorithmId::EccP256, SlotId::Authentication).unwrap();
    let cert = x509_cert::Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: der::asn1::BitString::from_bytes(&sig).unwrap(),
    };
    cert.to_der().unwrap()
}

/// The value of the first BER-TLV element in `buf` (one-byte tag).
fn first_value(buf: &[u8]) -> &[u8] {
    let (len, start) = match buf[1] {
        0x81 => (usize::from(buf[2]), 3),
        0x82 => (usize::from(buf[2]) << 8 | usize::from(buf[3]), 4),
        n => (usize::from(n), 2),
    };
    &buf[start..start + len]
}

fn extension(cert: &x509_cert::Certificate, oid: &str) -> Vec<u8> {
    let oid = der::asn1::ObjectIdentifier::new_unwrap(oid);
    cert.tbs_certificate
        .extensions
        .as_ref()
        .and_then(|e| e.iter().find(|e| e.extn_id == oid))
        .map(|e| e.extn_value.as_bytes().to_vec())
        .unwrap_or_else(|| panic!("no extension {oid}"))
}

fn verify_issued_by(cert: &x509_cert::Certificate, issuer: &x509_cert::Certificate) {
    use p256::ecdsa::signature::Verifier;
    assert_eq!(cert.tbs_certificate.issuer, issuer.tbs_certificate.subject);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let sig = p256::ecdsa::Signature::from_der(cert.signature.raw_bytes()).unwrap();
    vk.verify(&cert.tbs_certificate.to_der().unwrap(), &sig)
        .unwrap();
}

/// A factory-fresh key `serial` plugged into reader 0, opened, with a P-256
/// key generated in `slot` (authenticated with the factory management key);
/// the key's public point.
fn key_with_p256(
    dir: &std::path::Path,
    serial: u32,
    firmware: &str,
    slot: SlotId,
    (pin, touch): (PinPolicy, TouchPolicy),
) -> (VirtualYubiKey, YubiKey, Vec<u8>) {
    let key = VirtualYubiKey::plug(dir, serial, firmware, 0).unwrap();
    let mut yk = open(serial);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let point = piv::generate(&mut yk, slot, AlgorithmId::EccP256, pin, touch)
        .unwrap()
        .subject_public_key
        .raw_bytes()
        .to_vec();
    (key, yk, point)
}

#[test]
fn a_2_kb_certificate_is_written_and_read_back_and_listed_by_ykman_and_yubico_piv_tool() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let policy = (PinPolicy::Once, TouchPolicy::Never);
    let (mut key, mut yk, point) = key_with_p256(
        dir.path(),
        12345678,
        "5.4.3",
        SlotId::Authentication,
        policy,
    );
    let reader = key.reader_name();
    let der = big_certificate(&mut yk, &point);
    assert!(
        der.len() > 1900 && der.len() < 2300,
        "about 2 KB: {}",
        der.len()
    );
    yubikey::Certificate::from_bytes(der.clone())
        .unwrap()
        .write(
            &mut yk,
            SlotId::Authentication,
            yubikey::certificate::CertInfo::Uncompressed,
        )
        .unwrap();
    drop(yk);
    key.restart().unwrap();

    let mut yk = open(12345678);
    let back = yubikey::Certificate::read(&mut yk, SlotId::Authentication).unwrap();
    assert_eq!(back.subject(), "CN=Kleidia test user,O=Kleidia");
    let object = yk.fetch_object(0x5FC105).unwrap();
    assert_eq!(object[0], 0x70);
    assert!(
        first_value(&object) == &der[..],
        "the stored bytes are the certificate as written"
    );
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(
        info.contains(
            "Slot 9a:\n\tAlgorithm:\tECCP256\n\tSubject DN:\tCN=Kleidia test user,O=Kleidia"
        ),
        "{info}"
    );
    let status = yubico_piv_tool(reader, &["-a", "status"]).unwrap();
    assert!(status.contains("Slot 9a:"), "{status}");
    assert!(status.contains("Algorithm:\tECCP256"), "{status}");
    assert!(status.contains("Kleidia test user"), "{status}");
    assert!(!status.contains("Slot 9c:"), "{status}");
    let pem = ykman(reader, &["piv", "certificates", "export", "9a", "-"]).unwrap();
    let (_, exported) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    assert!(exported == der, "ykman exports the same certificate");
    key.stop().unwrap();
}

#[test]
fn the_attestation_chain_verifies_to_the_test_root_and_carries_the_card_serial() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let policy = (PinPolicy::Once, TouchPolicy::Always);
    let (mut key, mut yk, point) =
        key_with_p256(dir.path(), 24681357, "5.7.1", SlotId::KeyManagement, policy);
    let reader = key.reader_name();
    let leaf_der = piv::attest(&mut yk, SlotId::KeyManagement)
        .unwrap()
        .to_vec();
    let f9_object = yk.fetch_object(0x5FFF01).unwrap();
    drop(yk);
    // Object 5FFF01 holds the f9 certificate as PIV stores certificates: 70 <cert> 71 00 FE 00.
    assert_eq!(f9_object[0], 0x70);
    let f9_der = first_value(&f9_object).to_vec();
    let root_pem = key.attestation_root_pem().unwrap();
    let (label, root_der) = der::pem::decode_vec(root_pem.as_bytes()).unwrap();
    assert_eq!(label, "CERTIFICATE");

    let root = x509_cert::Certificate::from_der(&root_der).unwrap();
    let f9 = x509_cert::Certificate::from_der(&f9_der).unwrap();
    let leaf = x509_cert::Certificate::from_der(&leaf_der).unwrap();
    verify_issued_by(&root, &root);
    verify_issued_by(&f9, &root);
    verify_issued_by(&leaf, &f9);
    assert_eq!(
        leaf.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
        &point[..],
        "the attestation certifies the generated key"
    );
    let serial = der::asn1::Uint::from_der(&extension(&leaf, "1.3.6.1.4.1.41482.3.7")).unwrap();
    let serial = serial
        .as_bytes()
        .iter()
        .fold(0u64, |a, b| a << 8 | u64::from(*b));
    assert_eq!(serial, 24681357);
    assert_eq!(extension(&leaf, "1.3.6.1.4.1.41482.3.3"), vec![5, 7, 1]);
    assert_eq!(
        extension(&leaf, "1.3.6.1.4.1.41482.3.8"),
        vec![2, 2],
        "PIN once, touch always"
    );
    assert_eq!(extension(&leaf, "1.3.6.1.4.1.41482.3.9"), vec![1]);

    // The same chain checked by OpenSSL, and the attestation fetched by ykman.
    let files = dir.path();
    std::fs::write(files.join("root.pem"), &root_pem).unwrap();
    std::fs::write(
        files.join("f9.pem"),
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &f9_der).unwrap(),
    )
    .unwrap();
    let att = ykman(reader, &["piv", "keys", "attest", "9d", "-"]).unwrap();
    std::fs::write(files.join("leaf.pem"), &att).unwrap();
    openssl(
        files,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "f9.pem",
            "leaf.pem",
        ],
    )
    .unwrap();

    let mut yk = open(24681357);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let scalar = [0x11u8; 32];
    piv::import_ecc_key(
        &mut yk,
        SlotId::CardAuthentication,
        AlgorithmId::EccP256,
        &scalar,
        TouchPolicy::Never,
        PinPolicy::Never,
    )
    .unwrap();
    assert!(
        piv::attest(&mut yk, SlotId::CardAuthentication).is_err(),
        "imported keys are not attested"
    );
    drop(yk);
    key.stop().unwrap();
}
