//! Selecting the applications, PIN, PUK and management key, reset, power
//! cycles and the vpcd framing.

use super::*;

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
        0x6A80
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
        0x6A80
    );
    assert_eq!(authenticate(&mut c, mgm_alg::AES256, &new), 0x9000);
    let m = metadata(&mut c, 0x9B);
    assert_eq!(
        (meta(&m, 0x01), meta(&m, 0x05)),
        (vec![mgm_alg::AES256], vec![0])
    );
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
    crate::vpcd::serve(&mut d, &mut c, |_, _, _| crate::vpcd::Answer::Send).unwrap();
    let mut expect = vec![0, 18];
    expect.extend_from_slice(&crate::card::ATR);
    expect.extend_from_slice(&[0, 2, 0x6D, 0x00]);
    assert_eq!(d.1, expect);
}
