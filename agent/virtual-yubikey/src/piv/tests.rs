//! The applet through raw APDUs, as pcscd would deliver them (no pcscd here).

use std::time::SystemTime;

use rand::rngs::OsRng;

use super::*;
use crate::attest::AttestationRoot;
use crate::card::{Card, AID_MANAGEMENT, AID_PIV};
use crate::keys::alg;
use crate::state::{mgm_alg, CardState, SlotKey, DEFAULT_MGM_KEY};

fn card(firmware: &str) -> Card<OsRng> {
    let root = AttestationRoot::generate(SystemTime::now(), &mut OsRng).unwrap();
    let (f9, cert) = root
        .issue_device_attestation(SystemTime::now(), &mut OsRng)
        .unwrap();
    let f9 = SlotKey {
        algorithm: f9.algorithm(),
        pkcs8: f9.to_pkcs8().unwrap(),
        pin_policy: 1,
        touch_policy: 1,
        origin: 2,
    };
    let mut c = Card::new(
        CardState::factory(12345678, firmware.parse().unwrap(), f9, cert),
        OsRng,
    );
    assert_eq!(send(&mut c, 0, 0xA4, 4, 0, &AID_PIV[..5]).1, 0x9000);
    c
}

/// Send a short APDU (chaining data over 255 bytes, following 61xx) like the yubikey crate.
fn send(c: &mut Card<OsRng>, cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let mut chunks: Vec<&[u8]> = data.chunks(255).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut raw = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let cla = if i < last { cla | 0x10 } else { cla };
        let mut apdu = vec![cla, ins, p1, p2];
        if !chunk.is_empty() {
            apdu.push(chunk.len() as u8);
            apdu.extend_from_slice(chunk);
        }
        raw = c.process(&apdu);
        if i < last {
            assert_eq!(raw, vec![0x90, 0x00], "chained part accepted");
        }
    }
    let mut data = Vec::new();
    loop {
        let sw = u16::from_be_bytes([raw[raw.len() - 2], raw[raw.len() - 1]]);
        data.extend_from_slice(&raw[..raw.len() - 2]);
        if sw >> 8 != 0x61 {
            return (data, sw);
        }
        raw = c.process(&[0, 0xC0, 0, 0, 0]);
    }
}

fn padded(pin: &[u8]) -> Vec<u8> {
    let mut v = pin.to_vec();
    v.resize(8, 0xFF);
    v
}

fn verify(c: &mut Card<OsRng>, pin: &[u8]) -> u16 {
    send(
        c,
        0,
        ins::VERIFY,
        0,
        0x80,
        &if pin.is_empty() { vec![] } else { padded(pin) },
    )
    .1
}

/// Mutual authentication as the yubikey crate and ykman do it.
fn authenticate(c: &mut Card<OsRng>, alg: u8, key: &[u8]) -> u16 {
    let (resp, sw) = send(
        c,
        0,
        ins::AUTHENTICATE,
        alg,
        0x9B,
        &[0x7C, 0x02, 0x80, 0x00],
    );
    if sw != 0x9000 {
        return sw;
    }
    let witness = mgm_decrypt(alg, key, &resp[4..]).unwrap();
    let challenge = vec![0x5A; witness.len()];
    let mut inner = tlv::encode(0x80, &witness);
    tlv::encode_into(0x81, &challenge, &mut inner);
    let (resp, sw) = send(
        c,
        0,
        ins::AUTHENTICATE,
        alg,
        0x9B,
        &tlv::encode(0x7C, &inner),
    );
    if sw == 0x9000 {
        assert_eq!(
            resp[4..],
            mgm_encrypt(alg, key, &challenge).unwrap()[..],
            "card proves it knows the key"
        );
    }
    sw
}

fn metadata(c: &mut Card<OsRng>, slot: u8) -> Vec<(u16, Vec<u8>)> {
    let (resp, sw) = send(c, 0, ins::GET_METADATA, 0, slot, &[]);
    assert_eq!(sw, 0x9000);
    tlv::parse_all(&resp)
        .unwrap()
        .into_iter()
        .map(|t| (t.tag, t.value.to_vec()))
        .collect()
}

fn meta(items: &[(u16, Vec<u8>)], tag: u16) -> Vec<u8> {
    items
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v.clone())
        .unwrap()
}

#[test]
fn select_by_short_or_full_aid_then_version_and_serial() {
    let mut c = card("5.4.3");
    let (resp, sw) = send(&mut c, 0, 0xA4, 4, 0, &AID_PIV);
    assert_eq!(sw, 0x9000);
    assert_eq!(resp[0], 0x61);
    assert_eq!(
        send(&mut c, 0, ins::GET_VERSION, 0, 0, &[]),
        (vec![5, 4, 3], 0x9000)
    );
    assert_eq!(
        send(&mut c, 0, ins::GET_SERIAL, 0, 0, &[]),
        (12345678u32.to_be_bytes().to_vec(), 0x9000)
    );
    assert_eq!(send(&mut c, 0, 0xA4, 4, 0, &[0xA0, 0, 0, 9, 9]).1, 0x6A82);
}

#[test]
fn the_management_application_reports_version_serial_and_form_factor() {
    let mut c = card("5.7.1");
    assert_eq!(
        send(&mut c, 0, 0xA4, 4, 0, &AID_MANAGEMENT),
        (b"5.7.1".to_vec(), 0x9000)
    );
    let (info, sw) = send(&mut c, 0, 0x1D, 0, 0, &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!(usize::from(info[0]), info.len() - 1);
    let items = tlv::parse_all(&info[1..]).unwrap();
    assert_eq!(
        tlv::find(&items, 0x02),
        Some(&12345678u32.to_be_bytes()[..])
    );
    assert_eq!(tlv::find(&items, 0x05), Some(&[5, 7, 1][..]));
    assert_eq!(tlv::find(&items, 0x04), Some(&[1][..]));
}

#[test]
fn an_empty_verify_reports_retries_and_wrong_pins_block_at_zero() {
    let mut c = card("5.4.3");
    assert_eq!(verify(&mut c, b""), 0x63C3);
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(verify(&mut c, b"123456"), 0x9000);
    assert_eq!(verify(&mut c, b""), 0x9000, "verified: nothing to report");
    assert_eq!(
        verify(&mut c, b"000000"),
        0x63C2,
        "a success restored the counter"
    );
    assert_eq!(verify(&mut c, b"000000"), 0x63C1);
    assert_eq!(verify(&mut c, b"000000"), 0x63C0);
    assert_eq!(
        verify(&mut c, b"123456"),
        0x6983,
        "blocked: even the right PIN fails"
    );
    assert_eq!(verify(&mut c, b""), 0x6983);
    assert!(c.take_dirty(), "counters are persistent");
}

#[test]
fn pin_and_puk_change_and_the_puk_unblocks_the_pin() {
    let mut c = card("5.4.3");
    let mut data = padded(b"123456");
    data.extend(padded(b"24681357"));
    assert_eq!(
        send(&mut c, 0, ins::CHANGE_REFERENCE, 0, 0x80, &data).1,
        0x9000
    );
    assert_eq!(verify(&mut c, b"123456"), 0x63C2);
    assert_eq!(verify(&mut c, b"24681357"), 0x9000);
    let mut short = padded(b"24681357");
    short.extend(padded(b"12345"));
    assert_eq!(
        send(&mut c, 0, ins::CHANGE_REFERENCE, 0, 0x80, &short).1,
        0x6A80,
        "5 digits are too short"
    );

    let mut wrong_old = padded(b"000000");
    wrong_old.extend([0xFF; 8]);
    assert_eq!(
        send(&mut c, 0, ins::CHANGE_REFERENCE, 0, 0x80, &wrong_old).1,
        0x63C2,
        "a wrong old PIN costs a try even with an empty new one (ykman piv reset)"
    );
    assert_eq!(verify(&mut c, b"24681357"), 0x9000);

    let mut puk = padded(b"12345678");
    puk.extend(padded(b"87654321"));
    assert_eq!(
        send(&mut c, 0, ins::CHANGE_REFERENCE, 0, 0x81, &puk).1,
        0x9000
    );
    for left in [2u16, 1, 0] {
        assert_eq!(verify(&mut c, b"000000"), 0x63C0 | left);
    }
    let mut unblock = padded(b"12345678");
    unblock.extend(padded(b"111111"));
    assert_eq!(
        send(&mut c, 0, ins::RESET_RETRY, 0, 0x80, &unblock).1,
        0x63C2,
        "old PUK no longer works"
    );
    let mut unblock = padded(b"87654321");
    unblock.extend(padded(b"111111"));
    assert_eq!(
        send(&mut c, 0, ins::RESET_RETRY, 0, 0x80, &unblock).1,
        0x9000
    );
    assert_eq!(verify(&mut c, b""), 0x63C3);
    assert_eq!(verify(&mut c, b"111111"), 0x9000);
    let pin = metadata(&mut c, 0x80);
    assert_eq!(meta(&pin, 0x05), vec![0], "no longer the default PIN");
    assert_eq!(meta(&pin, 0x06), vec![3, 3]);
    let puk = metadata(&mut c, 0x81);
    assert_eq!(meta(&puk, 0x06), vec![3, 3]);
}

#[test]
fn reset_needs_pin_and_puk_blocked_and_restores_factory_defaults() {
    let mut c = card("5.7.1");
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    let gen = [0xAC, 0x03, 0x80, 0x01, alg::P256];
    assert_eq!(send(&mut c, 0, ins::GENERATE, 0, 0x9A, &gen).1, 0x9000);
    assert_eq!(send(&mut c, 0, ins::RESET, 0, 0, &[]).1, 0x6985);
    while verify(&mut c, b"000000") != 0x6983 {}
    assert_eq!(
        send(&mut c, 0, ins::RESET, 0, 0, &[]).1,
        0x6985,
        "PUK still usable"
    );
    let mut bad = padded(b"00000000");
    bad.extend(padded(b"000000"));
    while send(&mut c, 0, ins::RESET_RETRY, 0, 0x80, &bad).1 != 0x6983 {}
    assert_eq!(send(&mut c, 0, ins::RESET, 0, 0, &[]).1, 0x9000);
    assert_eq!(verify(&mut c, b"123456"), 0x9000);
    assert_eq!(
        send(&mut c, 0, ins::GET_METADATA, 0, 0x9A, &[]).1,
        0x6A88,
        "keys are gone"
    );
    assert_eq!(meta(&metadata(&mut c, 0x9B), 0x05), vec![1]);
    assert_eq!(
        authenticate(&mut c, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(
        meta(&metadata(&mut c, 0xF9), 0x01),
        vec![alg::P256],
        "attestation key survives"
    );
}

#[test]
fn factory_management_keys_follow_the_firmware_personality() {
    let mut old = card("5.4.3");
    assert_eq!(meta(&metadata(&mut old, 0x9B), 0x01), vec![mgm_alg::TDES]);
    assert_eq!(
        authenticate(&mut old, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x6A86
    );
    assert_eq!(authenticate(&mut old, mgm_alg::TDES, &[9; 24]), 0x6982);
    assert_eq!(
        authenticate(&mut old, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    let mut new = card("5.7.1");
    let m = metadata(&mut new, 0x9B);
    assert_eq!(meta(&m, 0x01), vec![mgm_alg::AES192]);
    assert_eq!(meta(&m, 0x05), vec![1]);
    assert_eq!(meta(&m, 0x02), vec![0, 1]);
    assert_eq!(
        authenticate(&mut new, mgm_alg::AES192, &DEFAULT_MGM_KEY),
        0x9000
    );
}

#[test]
fn single_challenge_authentication_also_works() {
    let mut c = card("5.4.3");
    let (resp, sw) = send(
        &mut c,
        0,
        ins::AUTHENTICATE,
        mgm_alg::TDES,
        0x9B,
        &[0x7C, 0x02, 0x81, 0x00],
    );
    assert_eq!(sw, 0x9000);
    let enc = mgm_encrypt(mgm_alg::TDES, &DEFAULT_MGM_KEY, &resp[4..]).unwrap();
    let body = tlv::encode(0x7C, &tlv::encode(0x82, &enc));
    assert_eq!(
        send(&mut c, 0, ins::AUTHENTICATE, mgm_alg::TDES, 0x9B, &body).1,
        0x9000
    );
    assert!(c.session.mgm_authenticated);
}

#[test]
fn a_new_management_key_replaces_the_old_one() {
    let mut c = card("5.4.3");
    let new = [0x11u8; 32];
    let mut data = vec![mgm_alg::AES256, 0x9B, 32];
    data.extend_from_slice(&new);
    assert_eq!(
        send(&mut c, 0, ins::SET_MGM_KEY, 0xFF, 0xFF, &data).1,
        0x6982,
        "needs authentication"
    );
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(
        send(&mut c, 0, ins::SET_MGM_KEY, 0xFF, 0xFF, &data).1,
        0x9000
    );
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x6A86
    );
    assert_eq!(authenticate(&mut c, mgm_alg::AES256, &new), 0x9000);
    let m = metadata(&mut c, 0x9B);
    assert_eq!(
        (meta(&m, 0x01), meta(&m, 0x05)),
        (vec![mgm_alg::AES256], vec![0])
    );
}

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
fn set_pin_retries_needs_pin_and_management_key_and_restores_default_pin() {
    let mut c = card("5.4.3");
    let mut data = padded(b"123456");
    data.extend(padded(b"999999"));
    assert_eq!(
        send(&mut c, 0, ins::CHANGE_REFERENCE, 0, 0x80, &data).1,
        0x9000
    );
    assert_eq!(
        authenticate(&mut c, mgm_alg::TDES, &DEFAULT_MGM_KEY),
        0x9000
    );
    assert_eq!(send(&mut c, 0, ins::SET_PIN_RETRIES, 5, 6, &[]).1, 0x6982);
    assert_eq!(verify(&mut c, b"999999"), 0x9000);
    assert_eq!(send(&mut c, 0, ins::SET_PIN_RETRIES, 5, 6, &[]).1, 0x9000);
    assert_eq!(verify(&mut c, b""), 0x63C5);
    assert_eq!(meta(&metadata(&mut c, 0x81), 0x06), vec![6, 6]);
    assert_eq!(verify(&mut c, b"123456"), 0x9000);
}

#[test]
fn power_cycles_forget_the_pin_but_not_the_keys() {
    let mut c = card("5.4.3");
    assert_eq!(verify(&mut c, b"123456"), 0x9000);
    assert!(crate::vpcd::handle_message(&mut c, &[crate::vpcd::CTRL_RESET]).is_none());
    assert_eq!(
        crate::vpcd::handle_message(&mut c, &[crate::vpcd::CTRL_ATR]),
        Some(crate::card::ATR.to_vec())
    );
    assert_eq!(
        c.process(&[0, ins::GET_VERSION, 0, 0]),
        vec![0x6D, 0x00],
        "nothing selected after reset"
    );
    send(&mut c, 0, 0xA4, 4, 0, &AID_PIV[..5]);
    assert_eq!(verify(&mut c, b""), 0x63C3);
}

#[test]
fn the_atr_check_byte_is_correct() {
    let x = crate::card::ATR[1..].iter().fold(0u8, |a, b| a ^ b);
    assert_eq!(x, 0, "XOR of T0..TCK is zero");
}

#[test]
fn vpcd_frames_are_length_prefixed() {
    let mut c = card("5.4.3");
    let mut input = Vec::new();
    for msg in [
        &[crate::vpcd::CTRL_ON][..],
        &[crate::vpcd::CTRL_ATR][..],
        &[0, ins::GET_VERSION, 0, 0][..],
    ] {
        input.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        input.extend_from_slice(msg);
    }
    struct Duplex(std::io::Cursor<Vec<u8>>, Vec<u8>);
    impl std::io::Read for Duplex {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    impl std::io::Write for Duplex {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut d = Duplex(std::io::Cursor::new(input), Vec::new());
    crate::vpcd::serve(&mut d, &mut c, |_| {}).unwrap();
    let mut expect = vec![0, 18];
    expect.extend_from_slice(&crate::card::ATR);
    expect.extend_from_slice(&[0, 2, 0x6D, 0x00]);
    assert_eq!(d.1, expect);
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
