//! The applet through raw APDUs, as pcscd would deliver them (no pcscd here).
//! The helpers below talk to it like the `yubikey` crate and ykman do.

use std::time::SystemTime;

use rand::rngs::OsRng;

use super::*;
use crate::attest::AttestationRoot;
use crate::card::{Card, AID_MANAGEMENT, AID_PIV};
use crate::keys::alg;
use crate::state::{mgm_alg, CardState, SlotKey, DEFAULT_MGM_KEY};

mod keys;
mod session;

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
