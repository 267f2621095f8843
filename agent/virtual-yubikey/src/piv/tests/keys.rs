//! Keys in the slots: generation with policies, import, attestation, ECDH,
//! moving and deleting; and data objects too large for one APDU.

use super::*;

#[test]
fn generated_keys_sign_with_the_pin_and_their_metadata_shows_policies() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let mut c = card("5.7.1");
    let gen = [
        0xAC,
        0x09,
        0x80,
        0x01,
        alg::P256,
        0xAA,
        0x01,
        0x03,
        0xAB,
        0x01,
        0x02,
    ];
    assert_eq!(send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen).1, 0x6982);
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(
        send(
            &mut c,
            0,
            ins::GENERATE,
            0,
            0x9A,
            &[0xAC, 0x03, 0x80, 0x01, 0x42]
        )
        .1,
        0x6A80
    );
    assert_eq!(send(&mut c, 0, ins::GENERATE, 0, 0x9B, &gen).1, 0x6B00);
    let (resp, sw) = send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen);
    assert_eq!(sw, 0x9000);
    let (outer, _) = tlv::parse(&resp).unwrap();
    assert_eq!(outer.tag, 0x7F49);
    let point = tlv::find(&tlv::parse_all(outer.value).unwrap(), 0x86)
        .unwrap()
        .to_vec();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();

    let m = metadata(&mut c, 0x9A);
    assert_eq!(meta(&m, 0x01), vec![alg::P256]);
    assert_eq!(meta(&m, 0x02), vec![3, 2]);
    assert_eq!(meta(&m, 0x03), vec![1]);
    assert_eq!(meta(&m, 0x04), outer.value.to_vec());

    let digest = [0x33u8; 32];
    let mut inner = tlv::encode(0x82, &[]);
    tlv::encode_into(0x81, &digest, &mut inner);
    let body = tlv::encode(0x7C, &inner);
    assert_eq!(
        send(&mut c, 0, ins::AUTHENTICATE, alg::P256, 0x9A, &body).1,
        0x6982,
        "PIN first"
    );
    assert_eq!(verify(&mut c, b"123456"), 0x9000);
    let (resp, sw) = send(&mut c, 0, ins::AUTHENTICATE, alg::P256, 0x9A, &body);
    assert_eq!(sw, 0x9000);
    let sig = tlv::parse(tlv::parse(&resp).unwrap().0.value)
        .unwrap()
        .0
        .value;
    vk.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(sig).unwrap())
        .unwrap();
    assert_eq!(
        send(&mut c, 0, ins::AUTHENTICATE, alg::P256, 0x9A, &body).1,
        0x6982,
        "PIN policy ALWAYS: one signature per VERIFY"
    );
    assert_eq!(
        send(&mut c, 0, ins::AUTHENTICATE, alg::P384, 0x9A, &body).1,
        0x6A86,
        "wrong algorithm"
    );
}

#[test]
fn rsa_3072_and_4096_are_only_offered_by_5_7() {
    let mut c = card("5.4.3");
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    let gen = [0xAC, 0x03, 0x80, 0x01, alg::RSA4096];
    assert_eq!(send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen).1, 0x6A80);
    let mut c = card("5.7.1");
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    let gen = [0xAC, 0x03, 0x80, 0x01, alg::RSA3072];
    let (resp, sw) = send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen);
    assert_eq!(sw, 0x9000);
    let (outer, _) = tlv::parse(&resp).unwrap();
    let items = tlv::parse_all(outer.value).unwrap();
    assert_eq!(tlv::find(&items, 0x81).unwrap().len(), 384);
    assert_eq!(tlv::find(&items, 0x82), Some(&[1, 0, 1][..]));
    assert_eq!(meta(&metadata(&mut c, 0x9A), 0x01), vec![alg::RSA3072]);
}

#[test]
fn objects_over_255_bytes_are_chained_in_and_come_back_with_get_response() {
    let mut c = card("5.4.3");
    let content: Vec<u8> = (0..2100u32).map(|i| i as u8).collect();
    let mut data = vec![0x5C, 0x03, 0x5F, 0xC1, 0x05];
    data.extend(tlv::encode(0x53, &content));
    assert_eq!(send(&mut c, 0, ins::PUT_DATA, 0x3F, 0xFF, &data).1, 0x6982);
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(send(&mut c, 0, ins::PUT_DATA, 0x3F, 0xFF, &data).1, 0x9000);
    let get = [0x5C, 0x03, 0x5F, 0xC1, 0x05];
    let first = c.process(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 0x03, 0x5F, 0xC1, 0x05]);
    assert_eq!(first.len(), 258, "256 bytes, then 61xx");
    assert_eq!(first[256], 0x61);
    let (resp, sw) = send(&mut c, 0, ins::GET_DATA, 0x3F, 0xFF, &get);
    assert_eq!(sw, 0x9000);
    assert_eq!(resp, tlv::encode(0x53, &content));
    assert_eq!(
        send(
            &mut c,
            0,
            ins::GET_DATA,
            0x3F,
            0xFF,
            &[0x5C, 0x03, 0x5F, 0xC1, 0x0A]
        )
        .1,
        0x6A82
    );
}

#[test]
fn extended_length_commands_get_the_whole_answer_at_once() {
    let mut c = card("5.7.1");
    let (_, sw) = send(&mut c, 0, 0xA4, 4, 0, &AID_PIV);
    assert_eq!(sw, 0x9000);
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    let content = vec![0xEE; 1000];
    let mut data = vec![0x5C, 0x03, 0x5F, 0xC1, 0x0A];
    data.extend(tlv::encode(0x53, &content));
    let mut apdu = vec![0, ins::PUT_DATA, 0x3F, 0xFF, 0];
    apdu.extend_from_slice(&(data.len() as u16).to_be_bytes());
    apdu.extend_from_slice(&data);
    assert_eq!(c.process(&apdu), vec![0x90, 0]);
    let mut get = vec![
        0,
        ins::GET_DATA,
        0x3F,
        0xFF,
        0,
        0,
        5,
        0x5C,
        0x03,
        0x5F,
        0xC1,
        0x0A,
        0,
        0,
    ];
    let resp = c.process(&get);
    assert_eq!(resp[resp.len() - 2..], [0x90, 0]);
    assert_eq!(resp[..resp.len() - 2], tlv::encode(0x53, &content)[..]);
    // Ask for just 16 bytes: the rest waits for GET RESPONSE.
    get.truncate(12);
    get.extend([0x00, 0x10]);
    let resp = c.process(&get);
    assert_eq!(resp.len(), 18);
    assert_eq!(resp[16], 0x61);
}

#[test]
fn attestation_is_refused_for_imported_keys() {
    let mut c = card("5.4.3");
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    let scalar = p256::SecretKey::random(&mut OsRng).to_bytes();
    let mut data = tlv::encode(0x06, &scalar);
    data.extend([0xAA, 0x01, 0x01]);
    assert_eq!(
        send(&mut c, 0, ins::IMPORT_KEY, alg::P256, 0x9D, &data).1,
        0x9000
    );
    assert_eq!(meta(&metadata(&mut c, 0x9D), 0x03), vec![2]);
    assert_eq!(send(&mut c, 0, ins::ATTEST, 0x9D, 0, &[]).1, 0x6A80);
    assert_eq!(
        send(&mut c, 0, ins::ATTEST, 0x9E, 0, &[]).1,
        0x6A88,
        "empty slot"
    );
    let gen = [0xAC, 0x03, 0x80, 0x01, alg::P256];
    assert_eq!(send(&mut c, 0, ins::GENERATE, 0, 0x9E, &gen).1, 0x9000);
    let (cert, sw) = send(&mut c, 0, ins::ATTEST, 0x9E, 0, &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!(cert[0], 0x30);
}

#[test]
fn ecdh_with_a_key_in_the_key_management_slot() {
    let mut c = card("5.7.1");
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    let gen = [0xAC, 0x06, 0x80, 0x01, alg::P256, 0xAA, 0x01, 0x01];
    let (resp, _) = send(&mut c, 0, ins::GENERATE, 0, 0x9D, &gen);
    let point = tlv::find(
        &tlv::parse_all(tlv::parse(&resp).unwrap().0.value).unwrap(),
        0x86,
    )
    .unwrap()
    .to_vec();
    let peer = p256::SecretKey::random(&mut OsRng);
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let mut inner = tlv::encode(0x82, &[]);
    tlv::encode_into(
        0x85,
        peer.public_key().to_encoded_point(false).as_bytes(),
        &mut inner,
    );
    let (resp, sw) = send(
        &mut c,
        0,
        ins::AUTHENTICATE,
        alg::P256,
        0x9D,
        &tlv::encode(0x7C, &inner),
    );
    assert_eq!(sw, 0x9000);
    let shared = tlv::parse(tlv::parse(&resp).unwrap().0.value)
        .unwrap()
        .0
        .value
        .to_vec();
    let card_pk = p256::PublicKey::from_sec1_bytes(&point).unwrap();
    let expect = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_pk.as_affine());
    assert_eq!(shared, expect.raw_secret_bytes().to_vec());
}

#[test]
fn keys_move_between_slots_and_are_deleted_on_5_7_only() {
    let mut c = card("5.7.1");
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    let gen = [0xAC, 0x03, 0x80, 0x01, alg::P256];
    let (resp, _) = send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen);
    let public = tlv::parse(&resp).unwrap().0.value.to_vec();
    assert_eq!(send(&mut c, 0, ins::MOVE_KEY, 0x82, 0x9A, &[]).1, 0x9000);
    assert_eq!(send(&mut c, 0, ins::GET_METADATA, 0, 0x9A, &[]).1, 0x6A88);
    assert_eq!(meta(&metadata(&mut c, 0x82), 0x04), public);
    assert_eq!(send(&mut c, 0, ins::MOVE_KEY, 0xFF, 0x82, &[]).1, 0x9000);
    assert_eq!(send(&mut c, 0, ins::GET_METADATA, 0, 0x82, &[]).1, 0x6A88);

    let mut old = card("5.4.3");
    assert_eq!(
        authenticate(&mut old, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(send(&mut old, 0, ins::GENERATE, 0, 0x9A, &gen).1, 0x9000);
    assert_eq!(send(&mut old, 0, ins::MOVE_KEY, 0xFF, 0x9A, &[]).1, 0x6D00);
}

#[test]
fn a_presence_key_in_retired_slot_95_signs_without_the_pin_is_attested_with_policies_never_and_goes_with_a_reset(
) {
    use der::Decode as _;
    use der::Encode as _;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey as _;
    let mut c = card("5.7.1");
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    // PIN policy never (AA 01 01), touch policy never (AB 01 01).
    let gen = [
        0xAC,
        0x09,
        0x80,
        0x01,
        alg::P256,
        0xAA,
        0x01,
        0x01,
        0xAB,
        0x01,
        0x01,
    ];
    let (resp, sw) = send(&mut c, 0, ins::GENERATE, 0, 0x95, &gen);
    assert_eq!(sw, 0x9000);
    let (outer, _) = tlv::parse(&resp).unwrap();
    let point = tlv::find(&tlv::parse_all(outer.value).unwrap(), 0x86)
        .unwrap()
        .to_vec();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let m = metadata(&mut c, 0x95);
    assert_eq!(meta(&m, 0x02), vec![1, 1], "policies never/never");

    // A fresh session: no PIN verified, no management key; it signs anyway.
    assert_eq!(send(&mut c, 0, 0xA4, 4, 0, &AID_PIV[..5]).1, 0x9000);
    let digest = [0x5Cu8; 32];
    let mut inner = tlv::encode(0x82, &[]);
    tlv::encode_into(0x81, &digest, &mut inner);
    let (resp, sw) = send(
        &mut c,
        0,
        ins::AUTHENTICATE,
        alg::P256,
        0x95,
        &tlv::encode(0x7C, &inner),
    );
    assert_eq!(sw, 0x9000);
    let sig = tlv::parse(tlv::parse(&resp).unwrap().0.value)
        .unwrap()
        .0
        .value;
    vk.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(sig).unwrap())
        .unwrap();

    // The attestation names slot 95, carries the policies and the key.
    let (cert, sw) = send(&mut c, 0, ins::ATTEST, 0x95, 0, &[]);
    assert_eq!(sw, 0x9000);
    let cert = x509_cert::Certificate::from_der(&cert).unwrap();
    assert_eq!(
        cert.tbs_certificate.subject.to_string(),
        "CN=YubiKey PIV Attestation 95"
    );
    let policy = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == crate::attest::OID_POLICY)
        .unwrap()
        .extn_value
        .as_bytes()
        .to_vec();
    assert_eq!(policy, vec![1, 1]);
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
    assert_eq!(key, vk);

    // A PIV reset (PIN and PUK blocked first) removes it.
    for _ in 0..3 {
        verify(&mut c, b"000000");
    }
    for _ in 0..3 {
        send(
            &mut c,
            0,
            ins::RESET_RETRY,
            0,
            0x80,
            &[padded(b"00000000"), padded(b"654321")].concat(),
        );
    }
    assert_eq!(send(&mut c, 0, ins::RESET, 0, 0, &[]).1, 0x9000);
    assert_eq!(send(&mut c, 0, ins::ATTEST, 0x95, 0, &[]).1, 0x6A88);
}
