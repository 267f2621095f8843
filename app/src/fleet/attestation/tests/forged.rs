//! Each forged chain shape an insider can build, refused with the rule it breaks.

use super::*;

#[test]
fn a_slot_attestation_used_as_an_issuer_is_refused() {
    // The insider's forgery: their genuine slot key signs a "slot
    // attestation" for a software key, with the genuine slot attestation and
    // f9 certificate above it.
    let c = card();
    let software = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let forged = attest(
        &c.slot_key,
        &c.slot_cert,
        &AttestedKey {
            slot: 0x9a,
            key: &software,
            pin_policy: 2,
            touch_policy: 1,
            serial: SERIAL,
            firmware: Firmware(5, 7, 1),
        },
        &mut OsRng,
    )
    .unwrap();
    let spki = software.spki_der().unwrap();
    for chain in [
        vec![&forged[..], &c.slot_cert, &c.f9_cert],
        vec![&forged[..], &c.slot_cert],
        vec![&forged[..], &c.slot_cert, &c.f9_cert, &c.root.cert_der],
    ] {
        let err = check(&c.roots(), &chain, &spki).unwrap_err();
        assert!(
            matches!(&err, AttestationError::LeafOnly { cert, .. } if cert.contains("certificate 2")),
            "{err}"
        );
        assert!(err.to_string().contains("only ever a leaf"), "{err}");
    }
}

#[test]
fn an_issuer_without_the_ca_flag_or_keycertsign_is_refused() {
    let root = Ca::root("Test Root", Some(2));
    let roots = roots_of(&[&root.der]);
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let spki = key.spki_der().unwrap();
    let no_bc = root.issue("Device", vec![]);
    let ca_false = root.issue(
        "Device",
        vec![ext(
            "2.5.29.19",
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        )],
    );
    let no_cert_sign = root.issue(
        "Device",
        vec![
            ext(
                "2.5.29.19",
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
            ),
            ext("2.5.29.15", true, &Ku(KeyUsages::DigitalSignature.into())),
        ],
    );
    for (f9, why) in [
        (&no_bc, "no basicConstraints"),
        (&ca_false, "cA is false"),
        (&no_cert_sign, "keyCertSign"),
    ] {
        let err = check(&roots, &[&f9.attest(&key, SERIAL), &f9.der], &spki).unwrap_err();
        assert!(
            matches!(&err, AttestationError::NotCa { cert, why: w, .. }
                if cert.contains("f9") && w.contains(why)),
            "{err}"
        );
    }
    // A non-CA certificate higher up (supplied by the bundle) fails path validation.
    let inter = root.issue("Intermediate", ca_exts(Some(1)));
    let f9 = inter.issue("Device", ca_exts(Some(0)));
    let not_ca = root.issue("Not A CA", vec![]);
    let bad_bundle = AttestationRoots(vec![root.der.clone(), not_ca.der.clone()]);
    let f9_under_not_ca = not_ca.issue("Device", ca_exts(Some(0)));
    let err = check(
        &bad_bundle,
        &[&f9_under_not_ca.attest(&key, SERIAL), &f9_under_not_ca.der],
        &spki,
    )
    .unwrap_err();
    assert!(matches!(err, AttestationError::NotCa { .. }), "{err}");
    // ...and with a proper intermediate the same shape is accepted.
    check(
        &roots_of(&[&root.der, &inter.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &spki,
    )
    .unwrap();
}

#[test]
fn a_real_yubikey_4_f9_certificate_is_not_a_ca_and_is_refused_as_openssl_does() {
    let c = fixture("4.3.4");
    let err = verify_at(
        &AttestationRoots::yubico().unwrap(),
        &pems(&[&c[0], &c[1]]),
        5_970_478,
        &spki_of(&c[0]),
        at(t0()),
    )
    .unwrap_err();
    assert!(
        matches!(&err, AttestationError::NotCa { cert, .. } if cert.contains("f9")),
        "{err}"
    );
}

#[test]
fn an_f9_certificate_not_issued_by_a_trusted_ca_is_refused() {
    let c = card();
    let spki = c.slot_key.spki_der().unwrap();
    // Another root altogether.
    let other = card();
    let err = check(&other.roots(), &[&c.slot_cert, &c.f9_cert], &spki).unwrap_err();
    assert!(
        err.to_string().contains("trusted attestation root"),
        "{err}"
    );
    // An f9 certificate naming the trusted root as its issuer, signed by another key.
    let trusted = Ca::root("Test Root", Some(1));
    let impostor = Ca {
        key: p256_key(),
        name: trusted.name.clone(),
        der: Vec::new(),
    };
    let f9 = impostor.issue("Device", ca_exts(Some(0)));
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let err = check(
        &roots_of(&[&trusted.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, AttestationError::UntrustedDevice(why) if why.contains("signature")),
        "{err}"
    );
    // A CA the request brings along is not trusted for being there.
    let rogue = Ca::root("Rogue", None);
    let rogue_f9 = rogue.issue("Device", ca_exts(Some(0)));
    let err = check(
        &roots_of(&[&trusted.der]),
        &[&rogue_f9.attest(&key, SERIAL), &rogue_f9.der, &rogue.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, AttestationError::NotConfiguredCa { cert, .. } if cert.contains("certificate 3")),
        "{err}"
    );
    // The slot attestation must be signed by the f9 key.
    let err = check(&c.roots(), &[&c.slot_cert, &other.f9_cert], &spki).unwrap_err();
    assert_eq!(err, AttestationError::BadSlotSignature);
}

#[test]
fn certificates_outside_their_validity_period_are_refused() {
    let c = card();
    let spki = c.slot_key.spki_der().unwrap();
    let chain: Vec<String> = pems(&[&c.slot_cert, &c.f9_cert]);
    // The card copies the f9 validity into the slot attestation: both end in 20 years.
    for now in [t0() - 2 * YEAR, t0() + 21 * YEAR] {
        let err = verify_at(&c.roots(), &chain, SERIAL, &spki, at(now)).unwrap_err();
        assert!(
            matches!(&err, AttestationError::Expired { cert, .. } if cert.contains("slot attestation")),
            "{err}"
        );
        assert!(err.to_string().contains("outside its validity period"));
    }
    // An expired intermediate in the trust bundle.
    let root = Ca::root("Test Root", None);
    let old = root.issue_with(
        "Old Intermediate",
        ca_exts(None),
        t0() - 3 * YEAR,
        t0() - YEAR,
        ECDSA_SHA256,
    );
    let f9 = old.issue("Device", ca_exts(Some(0)));
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let err = check(
        &roots_of(&[&root.der, &old.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, AttestationError::Expired { .. }), "{err}");
}

#[test]
fn a_signature_algorithm_outside_the_allow_list_is_refused() {
    let root = Ca::root("Test Root", Some(1));
    let f9 = root.issue_with(
        "Device",
        ca_exts(Some(0)),
        t0() - YEAR,
        t0() + YEAR,
        ECDSA_SHA1,
    );
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let err = check(
        &roots_of(&[&root.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, AttestationError::Algorithm { cert, algorithm }
            if cert.contains("f9") && algorithm.contains(ECDSA_SHA1)),
        "{err}"
    );
}

#[test]
fn a_chain_or_path_longer_than_the_limit_is_refused() {
    let c = card();
    let spki = c.slot_key.spki_der().unwrap();
    let root = &c.root.cert_der[..];
    let err = check(
        &c.roots(),
        &[&c.slot_cert, &c.f9_cert, root, root, root, root],
        &spki,
    )
    .unwrap_err();
    assert_eq!(err, AttestationError::ChainTooLong { len: 6, max: 5 });
    // Root → three intermediates → f9 → slot: six on the path.
    let root = Ca::root("Test Root", None);
    let i1 = root.issue("I1", ca_exts(None));
    let i2 = i1.issue("I2", ca_exts(None));
    let i3 = i2.issue("I3", ca_exts(None));
    let f9 = i3.issue("Device", ca_exts(Some(0)));
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let chain = [&f9.attest(&key, SERIAL)[..], &f9.der];
    let err = check(
        &roots_of(&[&root.der, &i1.der, &i2.der, &i3.der]),
        &chain,
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert_eq!(err, AttestationError::ChainTooLong { len: 6, max: 5 });
    // One intermediate less fits.
    let f9 = i2.issue("Device", ca_exts(Some(0)));
    check(
        &roots_of(&[&root.der, &i1.der, &i2.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap();
}

#[test]
fn path_length_constraints_are_enforced() {
    // An intermediate that allows no CA below it, above an f9 (a CA).
    let root = Ca::root("Test Root", None);
    let inter = root.issue("Intermediate", ca_exts(Some(0)));
    let f9 = inter.issue("Device", ca_exts(Some(0)));
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let err = check(
        &roots_of(&[&root.der, &inter.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert_eq!(err, AttestationError::PathLen);
    // The root's own constraint counts too: Yubico's 263751 root allows one CA (the f9).
    let root = Ca::root("Test Root", Some(0));
    let inter = root.issue("Intermediate", ca_exts(None));
    let f9 = inter.issue("Device", ca_exts(Some(0)));
    let err = check(
        &roots_of(&[&root.der, &inter.der]),
        &[&f9.attest(&key, SERIAL), &f9.der],
        &key.spki_der().unwrap(),
    )
    .unwrap_err();
    assert_eq!(err, AttestationError::PathLen);
}

#[test]
fn the_attestation_must_be_for_this_device_and_this_key() {
    let c = card();
    let spki = c.slot_key.spki_der().unwrap();
    let chain = pems(&[&c.slot_cert, &c.f9_cert]);
    let err = verify_at(&c.roots(), &chain, SERIAL + 1, &spki, at(t0())).unwrap_err();
    assert!(err.to_string().contains("not for this device"), "{err}");
    let other = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let err = verify_at(
        &c.roots(),
        &chain,
        SERIAL,
        &other.spki_der().unwrap(),
        at(t0()),
    )
    .unwrap_err();
    assert_eq!(err, AttestationError::KeyMismatch);
    let err = verify_at(&c.roots(), &chain[..1], SERIAL, &spki, at(t0())).unwrap_err();
    assert!(err.to_string().contains("device (f9)"), "{err}");
}

#[test]
fn a_trust_bundle_must_hold_only_ca_certificates() {
    let c = card();
    let err = AttestationRoots::from_pem(&pems(&[&c.slot_cert]).concat()).unwrap_err();
    assert!(err.to_string().contains("slot attestation"), "{err}");
    let leaf = Ca::root("Test Root", None).issue("Leaf", vec![]);
    let err = AttestationRoots::from_pem(&pems(&[&leaf.der]).concat()).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
    assert!(AttestationRoots::from_pem("").is_err());
    // The software YubiKey's test root is a proper one.
    assert_eq!(c.roots().0.len(), 1);
}

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
