//! The software YubiKey through the same code paths as hardware: the
//! `yubikey` crate over pcscd, cross-checked with `ykman` and
//! `yubico-piv-tool`.

use der::{Decode, Encode};
use kleidia_tests::card::{
    lock, ykman, yubico_piv_tool, VirtualYubiKey, DEFAULT_MGM_KEY, DEFAULT_PIN, DEFAULT_PUK,
};
use sha2::{Digest, Sha256};
use yubikey::piv::{self, AlgorithmId, ManagementSlotId, SlotId};
use yubikey::{Error, MgmAlgorithmId, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};

fn open(serial: u32) -> YubiKey {
    YubiKey::open_by_serial(Serial(serial)).unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The line of `ykman piv info` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
}

fn default_mgm(yk: &YubiKey) -> MgmKey {
    MgmKey::get_default(yk).unwrap()
}

#[test]
fn two_virtual_keys_are_opened_by_serial_and_ykman_info_reports_a_yubikey_5() {
    let _l = lock();
    let dir = tmp();
    let mut a = VirtualYubiKey::plug(dir.path(), 11111111, "5.4.3", 0).unwrap();
    let mut b = VirtualYubiKey::plug(dir.path(), 22222222, "5.7.1", 1).unwrap();

    let ya = open(11111111);
    assert_eq!(ya.serial(), Serial(11111111));
    assert_eq!(ya.version().to_string(), "5.4.3");
    assert_eq!(ya.name(), "Virtual PCD 00 00");
    drop(ya);
    let yb = open(22222222);
    assert_eq!(yb.version().to_string(), "5.7.1");
    assert_eq!(yb.name(), "Virtual PCD 00 01");
    drop(yb);
    assert!(
        YubiKey::open().is_err(),
        "open() refuses to choose between two keys"
    );
    assert!(matches!(
        YubiKey::open_by_serial(Serial(33333333)),
        Err(Error::NotFound)
    ));

    let info = ykman(a.reader_name(), &["info"]).unwrap();
    assert!(line(&info, "Device type:").contains("YubiKey 5"), "{info}");
    assert_eq!(line(&info, "Serial number:"), "Serial number: 11111111");
    assert_eq!(line(&info, "Firmware version:"), "Firmware version: 5.4.3");
    let info = ykman(b.reader_name(), &["info"]).unwrap();
    assert_eq!(line(&info, "Serial number:"), "Serial number: 22222222");

    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn pin_and_puk_changes_persist_across_a_replug_and_show_in_ykman_and_yubico_piv_tool() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");

    let mut yk = open(12345678);
    yk.change_pin(DEFAULT_PIN, b"24681357").unwrap();
    yk.change_puk(DEFAULT_PUK, b"97531864").unwrap();
    assert!(matches!(
        yk.verify_pin(DEFAULT_PIN),
        Err(Error::WrongPin { tries: 2 })
    ));
    yk.verify_pin(b"24681357").unwrap();
    assert!(matches!(
        yk.change_puk(DEFAULT_PUK, b"11223344"),
        Err(Error::WrongPin { tries: 2 })
    ));
    let pin = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Pin)).unwrap();
    assert_eq!(pin.default, Some(false));
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(puk.default, Some(false));
    assert_eq!(
        puk.retries.map(|r| (r.retry_count, r.remaining_count)),
        Some((3, 2))
    );
    drop(yk);

    // Pull the key out and put it back: the new values stay, the PIN session does not.
    key.unplug().unwrap();
    assert!(matches!(
        YubiKey::open_by_serial(Serial(12345678)),
        Err(Error::NotFound)
    ));
    key.replug().unwrap();
    key.restart().unwrap();
    let mut yk = open(12345678);
    assert_eq!(yk.get_pin_retries().unwrap(), 3);
    yk.verify_pin(b"24681357").unwrap();
    yk.change_puk(b"97531864", b"11223344").unwrap();
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(!info.contains("default PIN"), "{info}");
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    let status = yubico_piv_tool(reader, &["-a", "status"]).unwrap();
    assert!(status.contains("Serial Number:\t12345678"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    let state = key.state_json().unwrap();
    assert_eq!(state["pin"]["value"], hex::encode("24681357"));
    assert_eq!(state["puk"]["value"], hex::encode("11223344"));
    key.stop().unwrap();
}

#[test]
fn a_blocked_pin_is_unblocked_with_the_puk() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(12345678);
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 2 })
    ));
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 1 })
    ));
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 0 })
    ));
    assert!(
        matches!(
            yk.verify_pin(DEFAULT_PIN),
            Err(Error::WrongPin { tries: 0 })
        ),
        "blocked"
    );
    assert_eq!(yk.get_pin_retries().unwrap(), 0);
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 0/3"
    );
    let status = yubico_piv_tool(reader, &["-a", "status"]).unwrap();
    assert!(status.contains("PIN tries left:\t0"), "{status}");

    let mut yk = open(12345678);
    assert!(matches!(
        yk.unblock_pin(b"87654321", b"135790"),
        Err(Error::WrongPin { tries: 2 })
    ));
    yk.unblock_pin(DEFAULT_PUK, b"135790").unwrap();
    yk.verify_pin(b"135790").unwrap();
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(
        puk.retries.map(|r| r.remaining_count),
        Some(3),
        "a good PUK restores its counter"
    );
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );

    // New retry counts (ykman asks the device, which also restores the default PIN and PUK).
    let mgm = hex::encode(DEFAULT_MGM_KEY);
    ykman(
        reader,
        &[
            "piv",
            "access",
            "set-retries",
            "5",
            "4",
            "-m",
            &mgm,
            "-P",
            "135790",
            "-f",
        ],
    )
    .unwrap();
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 5/5"
    );
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    let mut yk = open(12345678);
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(
        puk.retries.map(|r| (r.retry_count, r.remaining_count)),
        Some((4, 4))
    );
    yk.verify_pin(DEFAULT_PIN).unwrap();
    drop(yk);
    key.stop().unwrap();
}

#[test]
fn a_key_with_pin_and_puk_blocked_resets_to_factory_defaults() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::EccP256,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .unwrap();
    let new_mgm = MgmKey::from_bytes([7u8; 16], Some(MgmAlgorithmId::Aes128)).unwrap();
    new_mgm.set_manual(&mut yk, false).unwrap();
    yk.change_pin(DEFAULT_PIN, b"555555").unwrap();
    assert!(yk.reset_device().is_err(), "PIN and PUK still usable");

    for _ in 0..3 {
        let _ = yk.verify_pin(b"000000");
    }
    assert!(yk.reset_device().is_err(), "PUK still usable");
    // The crate burns the PUK and records "PUK blocked" in ykman's admin data object.
    yk.block_puk().unwrap();
    assert!(matches!(
        yk.unblock_pin(DEFAULT_PUK, b"000000"),
        Err(Error::PinLocked)
    ));
    // ykman resets the card when it lets go, so reconnect afterwards.
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("PUK blocked."), "{info}");
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 0/3"
    );
    let mut yk = open(12345678);
    yk.reset_device().unwrap();
    drop(yk);

    let mut yk = open(12345678);
    yk.verify_pin(DEFAULT_PIN).unwrap();
    yk.authenticate(&default_mgm(&yk)).unwrap();
    assert!(matches!(
        piv::metadata(&mut yk, SlotId::Authentication),
        Err(Error::NotFound)
    ));
    assert_eq!(
        piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Pin))
            .unwrap()
            .default,
        Some(true)
    );
    assert_eq!(
        piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management))
            .unwrap()
            .default,
        Some(true)
    );
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    assert!(
        info.contains("WARNING: Using default Management key!"),
        "{info}"
    );
    assert_eq!(
        line(&info, "Management key algorithm:"),
        "Management key algorithm: AES192"
    );
    assert_eq!(
        line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    let state = key.state_json().unwrap();
    let slots: Vec<&String> = state["slots"].as_object().unwrap().keys().collect();
    assert_eq!(
        slots,
        vec!["f9"],
        "only the attestation key survives a reset"
    );
    key.stop().unwrap();
}

#[test]
fn the_factory_3des_key_authenticates_on_5_4_3_and_aes_192_on_5_7() {
    let _l = lock();
    let dir = tmp();
    let mut old = VirtualYubiKey::plug(dir.path(), 11111111, "5.4.3", 0).unwrap();
    let mut new = VirtualYubiKey::plug(dir.path(), 22222222, "5.7.1", 1).unwrap();

    let mut yk = open(11111111);
    let tdes = MgmKey::from_bytes(DEFAULT_MGM_KEY, Some(MgmAlgorithmId::ThreeDes)).unwrap();
    let aes = MgmKey::from_bytes(DEFAULT_MGM_KEY, Some(MgmAlgorithmId::Aes192)).unwrap();
    assert_eq!(default_mgm(&yk).algorithm_id(), MgmAlgorithmId::ThreeDes);
    yk.authenticate(&tdes).unwrap();
    assert!(
        yk.authenticate(&aes).is_err(),
        "a 5.4.3 key has a 3DES factory key"
    );
    let meta = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management)).unwrap();
    assert_eq!(format!("{:?}", meta.algorithm), "Management(ThreeDes)");
    drop(yk);

    let mut yk = open(22222222);
    assert_eq!(default_mgm(&yk).algorithm_id(), MgmAlgorithmId::Aes192);
    yk.authenticate(&aes).unwrap();
    assert!(yk.authenticate(&tdes).is_err());
    let wrong = MgmKey::from_bytes([0x42u8; 24], Some(MgmAlgorithmId::Aes192)).unwrap();
    assert!(matches!(
        yk.authenticate(&wrong),
        Err(Error::AuthenticationError)
    ));
    drop(yk);

    let info = ykman(old.reader_name(), &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "Management key algorithm:"),
        "Management key algorithm: TDES"
    );
    let info = ykman(new.reader_name(), &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "Management key algorithm:"),
        "Management key algorithm: AES192"
    );
    old.stop().unwrap();
    new.stop().unwrap();
}

#[test]
fn a_new_management_key_is_required_after_it_is_set() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    let new_key = [0x5Au8; 32];
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    MgmKey::from_bytes(new_key, Some(MgmAlgorithmId::Aes256))
        .unwrap()
        .set_manual(&mut yk, false)
        .unwrap();
    drop(yk);
    key.restart().unwrap();

    let mut yk = open(12345678);
    assert!(yk.authenticate(&default_mgm(&yk)).is_err());
    let mgm = MgmKey::from_bytes(new_key, Some(MgmAlgorithmId::Aes256)).unwrap();
    yk.authenticate(&mgm).unwrap();
    let meta = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management)).unwrap();
    assert_eq!(meta.default, Some(false));
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        line(&info, "Management key algorithm:"),
        "Management key algorithm: AES256"
    );
    assert!(!info.contains("default Management key"), "{info}");
    // ykman authenticates with the new key too: generating needs it.
    let hex_key = hex::encode(new_key);
    let out = ykman(
        reader,
        &[
            "piv", "keys", "generate", "-m", &hex_key, "-a", "ECCP256", "9e", "-",
        ],
    )
    .unwrap();
    assert!(out.contains("BEGIN PUBLIC KEY"), "{out}");
    assert!(ykman(
        reader,
        &[
            "piv",
            "keys",
            "generate",
            "-m",
            &hex::encode(DEFAULT_MGM_KEY),
            "9d",
            "-"
        ]
    )
    .is_err());
    let state = key.state_json().unwrap();
    assert_eq!(state["management_key"]["algorithm"], 0x0C);
    assert!(state["slots"]["9e"].is_object());
    key.stop().unwrap();
}

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 2048-bit key.
fn pkcs1_sha256(digest: &[u8]) -> Vec<u8> {
    let prefix = hex::decode("3031300d060960864801650304020105000420").unwrap();
    let mut em = vec![0x00, 0x01];
    em.resize(256 - prefix.len() - digest.len() - 1, 0xFF);
    em.push(0x00);
    em.extend(prefix);
    em.extend_from_slice(digest);
    em
}

#[test]
fn generated_rsa_2048_and_p256_keys_sign_decrypt_and_agree_keys_as_their_public_keys_expect() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use rsa::pkcs1::DecodeRsaPublicKey;
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let rsa_spki = piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::Rsa2048,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    let ec_spki = piv::generate(
        &mut yk,
        SlotId::Signature,
        AlgorithmId::EccP256,
        PinPolicy::Always,
        TouchPolicy::Cached,
    )
    .unwrap();
    let digest = Sha256::digest(b"Kleidia signs this");

    assert!(
        matches!(
            piv::sign_data(
                &mut yk,
                &pkcs1_sha256(&digest),
                AlgorithmId::Rsa2048,
                SlotId::Authentication
            ),
            Err(Error::AuthenticationError)
        ),
        "PIN policy: no signature before VERIFY"
    );
    yk.verify_pin(DEFAULT_PIN).unwrap();
    let sig = piv::sign_data(
        &mut yk,
        &pkcs1_sha256(&digest),
        AlgorithmId::Rsa2048,
        SlotId::Authentication,
    )
    .unwrap();
    let rsa_pub =
        rsa::RsaPublicKey::from_pkcs1_der(rsa_spki.subject_public_key.raw_bytes()).unwrap();
    rsa_pub
        .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();

    let sig = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).unwrap();
    let vk =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(ec_spki.subject_public_key.raw_bytes()).unwrap();
    vk.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();
    assert!(
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).is_err(),
        "PIN policy ALWAYS: a second signature needs another VERIFY"
    );

    // RSA decryption: the card returns the padded block, the host unpads it.
    let ciphertext = rsa_pub
        .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, b"session key")
        .unwrap();
    let block = piv::decrypt_data(
        &mut yk,
        &ciphertext,
        AlgorithmId::Rsa2048,
        SlotId::Authentication,
    )
    .unwrap();
    assert_eq!(block.len(), 256);
    assert_eq!(&block[..2], &[0x00, 0x02]);
    assert_eq!(&block[block.len() - 11..], b"session key");

    // ECDH with the P-256 key (PIN always: verify first).
    let peer = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let peer_point = {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        peer.public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    };
    yk.verify_pin(DEFAULT_PIN).unwrap();
    let shared = piv::decrypt_data(
        &mut yk,
        &peer_point,
        AlgorithmId::EccP256,
        SlotId::Signature,
    )
    .unwrap();
    let card_pub =
        p256::PublicKey::from_sec1_bytes(ec_spki.subject_public_key.raw_bytes()).unwrap();
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_pub.as_affine());
    assert_eq!(&shared[..], &expected.raw_secret_bytes()[..]);

    let meta = piv::metadata(&mut yk, SlotId::Signature).unwrap();
    assert_eq!(meta.policy, Some((PinPolicy::Always, TouchPolicy::Cached)));
    assert_eq!(
        meta.public.unwrap().subject_public_key.raw_bytes(),
        ec_spki.subject_public_key.raw_bytes()
    );
    drop(yk);
    let state = key.state_json().unwrap();
    assert_eq!(state["slots"]["9a"]["algorithm"], 0x07);
    assert_eq!(state["slots"]["9c"]["algorithm"], 0x11);
    key.stop().unwrap();
}

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

#[test]
fn a_2_kb_certificate_is_written_and_read_back_and_listed_by_ykman_and_yubico_piv_tool() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let spki = piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    let der = big_certificate(&mut yk, spki.subject_public_key.raw_bytes());
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

#[test]
fn the_attestation_chain_verifies_to_the_test_root_and_carries_the_card_serial() {
    let _l = lock();
    let dir = tmp();
    let mut key = VirtualYubiKey::plug(dir.path(), 24681357, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(24681357);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let spki = piv::generate(
        &mut yk,
        SlotId::KeyManagement,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        TouchPolicy::Always,
    )
    .unwrap();
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
        spki.subject_public_key.raw_bytes(),
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
    let out = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "f9.pem",
            "leaf.pem",
        ])
        .current_dir(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
