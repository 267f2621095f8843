//! The OATH applet through raw APDUs, as ykman sends them (no pcscd here),
//! checked against the RFC 4226 and RFC 6238 test vectors.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::card::{Card, AID_MANAGEMENT, AID_PIV};
use crate::state::{CardState, SlotKey};

fn state() -> CardState {
    let f9 = SlotKey {
        algorithm: 0x11,
        pkcs8: vec![1, 2, 3],
        pin_policy: 1,
        touch_policy: 1,
        origin: 2,
    };
    CardState::factory(12345678, "5.7.1".parse().unwrap(), f9, vec![0x30, 0])
}

fn card() -> Card<StdRng> {
    let mut c = Card::new(state(), StdRng::seed_from_u64(7));
    let (_, sw) = send(&mut c, 0xA4, 4, 0, &AID_OATH);
    assert_eq!(sw, 0x9000);
    c
}

/// A short APDU; follows `61xx` with SEND REMAINING as ykman does.
fn send(c: &mut Card<StdRng>, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let mut apdu = vec![0, ins, p1, p2];
    if !data.is_empty() {
        apdu.push(data.len() as u8);
        apdu.extend_from_slice(data);
    }
    let mut raw = c.process(&apdu);
    let mut out = Vec::new();
    loop {
        let sw = u16::from_be_bytes([raw[raw.len() - 2], raw[raw.len() - 1]]);
        out.extend_from_slice(&raw[..raw.len() - 2]);
        if sw >> 8 != 0x61 {
            return (out, sw);
        }
        raw = c.process(&[0, INS_SEND_REMAINING, 0, 0]);
    }
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag, value.len() as u8];
    v.extend_from_slice(value);
    v
}

/// PUT as ykman builds it (property byte without a length).
fn put_apdu(name: &str, type_alg: u8, digits: u8, secret: &[u8], touch: bool, imf: u32) -> Vec<u8> {
    let mut key = vec![type_alg, digits];
    key.extend_from_slice(secret);
    let mut d = tlv(TAG_NAME, name.as_bytes());
    d.extend(tlv(TAG_KEY, &key));
    if touch {
        d.extend([TAG_PROPERTY, PROP_REQUIRE_TOUCH]);
    }
    if imf > 0 {
        d.extend(tlv(TAG_IMF, &imf.to_be_bytes()));
    }
    d
}

fn put(c: &mut Card<StdRng>, name: &str, type_alg: u8, secret: &[u8]) -> u16 {
    send(
        c,
        INS_PUT,
        0,
        0,
        &put_apdu(name, type_alg, 6, secret, false, 0),
    )
    .1
}

fn names(c: &mut Card<StdRng>) -> Vec<(u8, String)> {
    let (data, sw) = send(c, INS_LIST, 0, 0, &[]);
    assert_eq!(sw, 0x9000);
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        assert_eq!(rest[0], TAG_NAME_LIST);
        let len = usize::from(rest[1]);
        let v = &rest[2..2 + len];
        out.push((v[0], String::from_utf8(v[1..].to_vec()).unwrap()));
        rest = &rest[2 + len..];
    }
    out
}

/// The truncated code as ykman formats it.
fn code(truncated: &[u8]) -> String {
    let digits = u32::from(truncated[0]);
    let n = u32::from_be_bytes(truncated[1..5].try_into().unwrap()) & 0x7FFF_FFFF;
    format!("{:0width$}", n % 10u32.pow(digits), width = digits as usize)
}

fn calculate(c: &mut Card<StdRng>, name: &str, challenge: &[u8]) -> (Vec<u8>, u16) {
    let mut d = tlv(TAG_NAME, name.as_bytes());
    d.extend(tlv(TAG_CHALLENGE, challenge));
    send(c, INS_CALCULATE, 0, 1, &d)
}

const RFC_SHA1: &[u8] = b"12345678901234567890";

#[test]
fn select_answers_the_version_and_the_salt_and_a_key_without_oath_does_not_know_the_aid() {
    let mut c = Card::new(state(), StdRng::seed_from_u64(1));
    let (data, sw) = send(&mut c, 0xA4, 4, 0, &AID_OATH);
    assert_eq!(sw, 0x9000);
    let salt = c.state.oath.as_ref().unwrap().salt.clone();
    assert_eq!(salt.len(), 8);
    let mut want = tlv(TAG_VERSION, &[5, 7, 1]);
    want.extend(tlv(TAG_NAME, &salt));
    assert_eq!(data, want);

    let mut st = state();
    st.oath = None;
    let mut c = Card::new(st, StdRng::seed_from_u64(1));
    assert_eq!(send(&mut c, 0xA4, 4, 0, &AID_OATH).1, sw::NOT_FOUND);
    // Nothing selected: OATH commands are not understood.
    assert_eq!(send(&mut c, INS_LIST, 0, 0, &[]).1, sw::INS_NOT_SUPPORTED);
    // And the management application does not claim OATH.
    assert_eq!(send(&mut c, 0xA4, 4, 0, &AID_MANAGEMENT).1, 0x9000);
    let info = c.device_info();
    assert_eq!(&info[1..5], &[0x01, 0x02, 0x02, 0x1B], "{info:02x?}");
    assert_eq!(&card().device_info()[1..5], &[0x01, 0x02, 0x02, 0x3B]);
}

#[test]
fn put_list_rename_and_delete_change_what_list_shows_and_the_saved_state() {
    let mut c = card();
    assert!(names(&mut c).is_empty());
    assert_eq!(
        put(&mut c, "GitHub:ada", TYPE_TOTP | ALG_SHA1, RFC_SHA1),
        0x9000
    );
    assert_eq!(
        put(&mut c, "counter", TYPE_HOTP | ALG_SHA256, RFC_SHA1),
        0x9000
    );
    assert!(c.take_dirty());
    assert_eq!(
        names(&mut c),
        vec![
            (0x21, "GitHub:ada".to_string()),
            (0x12, "counter".to_string())
        ]
    );
    // The same name again replaces the account.
    assert_eq!(
        put(&mut c, "counter", TYPE_HOTP | ALG_SHA1, RFC_SHA1),
        0x9000
    );
    assert_eq!(names(&mut c)[1], (0x11, "counter".to_string()));

    let mut d = tlv(TAG_NAME, b"GitHub:ada");
    d.extend(tlv(TAG_NAME, b"GitLab:ada"));
    assert_eq!(send(&mut c, INS_RENAME, 0, 0, &d).1, 0x9000);
    assert_eq!(names(&mut c)[0].1, "GitLab:ada");
    // Renaming onto another account's name is refused.
    let mut d = tlv(TAG_NAME, b"GitLab:ada");
    d.extend(tlv(TAG_NAME, b"counter"));
    assert_eq!(send(&mut c, INS_RENAME, 0, 0, &d).1, sw::INCORRECT_DATA);

    c.take_dirty();
    let (_, sw) = send(&mut c, INS_DELETE, 0, 0, &tlv(TAG_NAME, b"nobody"));
    assert_eq!(sw, SW_NO_SUCH_OBJECT);
    assert!(!c.take_dirty(), "a refused delete changes nothing");
    let (_, sw) = send(&mut c, INS_DELETE, 0, 0, &tlv(TAG_NAME, b"counter"));
    assert_eq!(sw, 0x9000);
    assert!(c.take_dirty());
    assert_eq!(names(&mut c), vec![(0x21, "GitLab:ada".to_string())]);

    // What is saved comes back the same.
    let json = serde_json::to_string(&c.state).unwrap();
    let back: CardState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c.state);
    assert_eq!(back.oath.unwrap().credentials[0].secret, RFC_SHA1);
}

#[test]
fn bad_puts_are_refused_and_change_nothing() {
    let mut c = card();
    assert_eq!(put(&mut c, "kept", TYPE_TOTP | ALG_SHA1, RFC_SHA1), 0x9000);
    c.take_dirty();
    let before = c.state.clone();
    let long_name = "n".repeat(MAX_NAME_LEN + 1);
    for data in [
        put_apdu("x", 0x30 | ALG_SHA1, 6, RFC_SHA1, false, 0), // no such type
        put_apdu("x", TYPE_TOTP | 0x04, 6, RFC_SHA1, false, 0), // no such hash
        put_apdu("x", TYPE_TOTP | ALG_SHA1, 5, RFC_SHA1, false, 0), // 5 digits
        put_apdu("x", TYPE_TOTP | ALG_SHA1, 9, RFC_SHA1, false, 0), // 9 digits
        put_apdu(&long_name, TYPE_TOTP | ALG_SHA1, 6, RFC_SHA1, false, 0),
        put_apdu("", TYPE_TOTP | ALG_SHA1, 6, RFC_SHA1, false, 0),
        tlv(TAG_NAME, b"no key"),
        tlv(TAG_KEY, &[0x21, 6, 1, 2]),
        vec![TAG_NAME, 10, b'x'], // truncated
        vec![TAG_NAME, 1, b'x', TAG_KEY, 2, 0x21, 6, TAG_PROPERTY], // property without its byte
        [
            tlv(TAG_NAME, b"x"),
            tlv(TAG_KEY, &[0x21, 6, 1]),
            tlv(TAG_IMF, &[1, 2]),
        ]
        .concat(),
    ] {
        let (_, sw) = send(&mut c, INS_PUT, 0, 0, &data);
        assert_eq!(sw, sw::INCORRECT_DATA, "{data:02x?}");
    }
    // A key longer than SHA-512's block (ykman would have hashed it).
    let long_key = |n: usize| {
        let mut d = tlv(TAG_NAME, b"x");
        d.extend([TAG_KEY, 0x81, (n + 2) as u8, TYPE_TOTP | ALG_SHA512, 6]);
        d.extend(vec![7u8; n]);
        d
    };
    let (_, sw) = send(&mut c, INS_PUT, 0, 0, &long_key(MAX_SECRET_LEN + 1));
    assert_eq!(sw, sw::INCORRECT_DATA);
    let (_, sw) = send(&mut c, INS_PUT, 0, 0, &[TAG_NAME, 0x82, 0, 1, b'x']);
    assert_eq!(sw, sw::INCORRECT_DATA);
    assert!(!c.take_dirty());
    assert_eq!(c.state, before);
    // The longest key there may be is taken.
    let (_, sw) = send(&mut c, INS_PUT, 0, 0, &long_key(MAX_SECRET_LEN));
    assert_eq!(sw, 0x9000);
}

#[test]
fn a_full_application_refuses_one_more_account_but_takes_a_replacement() {
    let mut c = card();
    for i in 0..MAX_CREDENTIALS {
        assert_eq!(
            put(
                &mut c,
                &format!("acct{i:02}"),
                TYPE_TOTP | ALG_SHA1,
                RFC_SHA1
            ),
            0x9000
        );
    }
    assert_eq!(
        put(&mut c, "one more", TYPE_TOTP | ALG_SHA1, RFC_SHA1),
        sw::NO_SPACE
    );
    assert_eq!(
        put(&mut c, "acct00", TYPE_HOTP | ALG_SHA1, RFC_SHA1),
        0x9000
    );
    // 32 names do not fit one response: LIST goes on with SEND REMAINING.
    let all = names(&mut c);
    assert_eq!(all.len(), MAX_CREDENTIALS);
    assert_eq!(all[31].1, "acct31");
}

#[test]
fn hotp_and_totp_codes_match_the_rfc_test_vectors() {
    let mut c = card();
    // RFC 4226 appendix D: counter 0 and 1.
    assert_eq!(put(&mut c, "hotp", TYPE_HOTP | ALG_SHA1, RFC_SHA1), 0x9000);
    let (r, sw) = calculate(&mut c, "hotp", &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!((r[0], r[1]), (TAG_TRUNCATED, 5));
    assert_eq!(code(&r[2..]), "755224");
    assert_eq!(code(&calculate(&mut c, "hotp", &[]).0[2..]), "287082");
    assert!(c.take_dirty(), "the HOTP counter moved and is saved");
    assert_eq!(c.state.oath.as_ref().unwrap().credentials[0].counter, 2);
    // A HOTP account with an initial moving factor (IMF).
    let d = put_apdu("hotp9", TYPE_HOTP | ALG_SHA1, 6, RFC_SHA1, false, 9);
    assert_eq!(send(&mut c, INS_PUT, 0, 0, &d).1, 0x9000);
    assert_eq!(code(&calculate(&mut c, "hotp9", &[]).0[2..]), "520489");

    // RFC 6238 appendix B, T = 59 s: 8 digits, per hash.
    let t59 = 1u64.to_be_bytes();
    for (name, alg, secret, want) in [
        ("sha1", ALG_SHA1, &b"12345678901234567890"[..], "94287082"),
        (
            "sha256",
            ALG_SHA256,
            &b"12345678901234567890123456789012"[..],
            "46119246",
        ),
        (
            "sha512",
            ALG_SHA512,
            &b"1234567890123456789012345678901234567890123456789012345678901234"[..],
            "90693936",
        ),
    ] {
        let d = put_apdu(name, TYPE_TOTP | alg, 8, secret, false, 0);
        assert_eq!(send(&mut c, INS_PUT, 0, 0, &d).1, 0x9000, "{name}");
        let (r, sw) = calculate(&mut c, name, &t59);
        assert_eq!(sw, 0x9000);
        assert_eq!(code(&r[2..]), want, "{name}");
    }
    // Untruncated: the whole HMAC after the digits byte.
    let mut d = tlv(TAG_NAME, b"sha256");
    d.extend(tlv(TAG_CHALLENGE, &t59));
    let (r, _) = send(&mut c, INS_CALCULATE, 0, 0, &d);
    assert_eq!((r[0], r[1], r[2]), (TAG_RESPONSE, 33, 8));
    assert_eq!(calculate(&mut c, "nobody", &t59).1, SW_NO_SUCH_OBJECT);
}

#[test]
fn calculate_all_codes_totp_names_hotp_and_touch_and_is_not_taken_for_select() {
    let mut c = card();
    assert_eq!(put(&mut c, "totp", TYPE_TOTP | ALG_SHA1, RFC_SHA1), 0x9000);
    assert_eq!(put(&mut c, "hotp", TYPE_HOTP | ALG_SHA1, RFC_SHA1), 0x9000);
    let d = put_apdu("touch", TYPE_TOTP | ALG_SHA1, 6, RFC_SHA1, true, 0);
    assert_eq!(send(&mut c, INS_PUT, 0, 0, &d).1, 0x9000);
    let t59 = 1u64.to_be_bytes();
    // INS A4 with P1 00: CALCULATE ALL, not SELECT.
    let (r, sw) = send(&mut c, INS_CALCULATE_ALL, 0, 1, &tlv(TAG_CHALLENGE, &t59));
    assert_eq!(sw, 0x9000);
    let mut want = tlv(TAG_NAME, b"totp");
    want.extend([TAG_TRUNCATED, 5]);
    let (single, _) = calculate(&mut c, "totp", &t59);
    want.extend_from_slice(&single[2..]);
    want.extend(tlv(TAG_NAME, b"hotp"));
    want.extend(tlv(TAG_HOTP, &[6]));
    want.extend(tlv(TAG_NAME, b"touch"));
    want.extend(tlv(TAG_TOUCH, &[6]));
    assert_eq!(r, want);
    assert_eq!(code(&single[2..]), "287082");
    // The HOTP counter did not move.
    assert_eq!(c.state.oath.as_ref().unwrap().credentials[1].counter, 0);
}

#[test]
fn reset_deletes_every_account_and_renames_the_application_and_piv_reset_leaves_it() {
    let mut c = card();
    assert_eq!(
        put(&mut c, "GitHub:ada", TYPE_TOTP | ALG_SHA1, RFC_SHA1),
        0x9000
    );
    // A PIV reset is another application's.
    c.state.reset();
    assert_eq!(names(&mut c).len(), 1);

    let salt = c.state.oath.as_ref().unwrap().salt.clone();
    c.take_dirty();
    assert_eq!(send(&mut c, INS_RESET, 0, 0, &[]).1, sw::INCORRECT_P1P2);
    assert!(!c.take_dirty());
    assert_eq!(names(&mut c).len(), 1);
    assert_eq!(send(&mut c, INS_RESET, 0xDE, 0xAD, &[]).1, 0x9000);
    assert!(c.take_dirty());
    assert!(names(&mut c).is_empty());
    let new_salt = c.state.oath.as_ref().unwrap().salt.clone();
    assert_eq!(new_salt.len(), 8);
    assert_ne!(new_salt, salt);
    // SELECT shows the new salt.
    let (data, _) = send(&mut c, 0xA4, 4, 0, &AID_OATH);
    assert!(data.ends_with(&new_salt));
    // And the PIV applet is still reachable next to it.
    assert_eq!(send(&mut c, 0xA4, 4, 0, &AID_PIV).1, 0x9000);
}

#[test]
fn a_password_cannot_be_set_and_a_state_file_from_before_oath_gets_an_empty_application() {
    let mut c = card();
    let d = [
        tlv(TAG_KEY, &[0x21, 1, 2, 3]),
        tlv(TAG_CHALLENGE, &[0; 8]),
        tlv(TAG_RESPONSE, &[0; 20]),
    ]
    .concat();
    assert_eq!(
        send(&mut c, INS_SET_CODE, 0, 0, &d).1,
        sw::INS_NOT_SUPPORTED
    );
    assert!(!c.take_dirty());

    let mut json: serde_json::Value = serde_json::to_value(state()).unwrap();
    json.as_object_mut().unwrap().remove("oath");
    let old: CardState = serde_json::from_value(json.clone()).unwrap();
    let oath = old.oath.expect("an OATH application");
    assert!(oath.credentials.is_empty() && oath.salt.len() == 8);
    json["oath"] = serde_json::Value::Null;
    let without: CardState = serde_json::from_value(json).unwrap();
    assert!(without.oath.is_none());
}
