//! The YubiKey 5 PIV applet: PIN/PUK, management key, key slots, data
//! objects, metadata and attestation, with the status words the real
//! device answers.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use rand::{CryptoRng, RngCore};

use crate::apdu::{sw, Command, Response};
use crate::attest::{self, AttestedKey};
use crate::card::{Card, MgmChallenge};
use crate::keys::{alg, PrivateKey};
use crate::state::{mgm_alg, SlotKey, ORIGIN_GENERATED, ORIGIN_IMPORTED, SLOT_ATTESTATION};
use crate::tlv;

pub mod ins {
    pub const VERIFY: u8 = 0x20;
    pub const CHANGE_REFERENCE: u8 = 0x24;
    pub const RESET_RETRY: u8 = 0x2C;
    pub const GENERATE: u8 = 0x47;
    pub const AUTHENTICATE: u8 = 0x87;
    pub const GET_DATA: u8 = 0xCB;
    pub const PUT_DATA: u8 = 0xDB;
    pub const MOVE_KEY: u8 = 0xF6;
    pub const GET_METADATA: u8 = 0xF7;
    pub const GET_SERIAL: u8 = 0xF8;
    pub const ATTEST: u8 = 0xF9;
    pub const SET_PIN_RETRIES: u8 = 0xFA;
    pub const RESET: u8 = 0xFB;
    pub const GET_VERSION: u8 = 0xFD;
    pub const IMPORT_KEY: u8 = 0xFE;
    pub const SET_MGM_KEY: u8 = 0xFF;
}

pub const SLOT_PIN: u8 = 0x80;
pub const SLOT_PUK: u8 = 0x81;
pub const SLOT_MGM: u8 = 0x9B;

pub mod pin_policy {
    pub const DEFAULT: u8 = 0;
    pub const NEVER: u8 = 1;
    pub const ONCE: u8 = 2;
    pub const ALWAYS: u8 = 3;
}
pub mod touch_policy {
    pub const DEFAULT: u8 = 0;
    pub const NEVER: u8 = 1;
    pub const CACHED: u8 = 3;
}

/// Largest data object a YubiKey 5 stores.
const MAX_OBJECT: usize = 3052;
/// Printed information object of ykman (PIN-protected management key).
const OBJ_PRINTED: u32 = 0x5F_C109;
/// Discovery object, answered from ROM.
const DISCOVERY: [u8; 20] = [
    0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x5F,
    0x2F, 0x02, 0x40, 0x00,
];

/// Slots that hold user keys: 9a, 9c, 9d, 9e and the retired 82..95.
pub fn is_key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

fn default_pin_policy(slot: u8) -> u8 {
    match slot {
        0x9C => pin_policy::ALWAYS,
        0x9E => pin_policy::NEVER,
        _ => pin_policy::ONCE,
    }
}

/// The host's 8-byte PIN field, stripped of `FF` padding; `None` when it is
/// not a valid 6–8 byte value.
fn unpad(field: &[u8]) -> Option<Vec<u8>> {
    let len = field.iter().position(|b| *b == 0xFF).unwrap_or(field.len());
    if field[len..].iter().any(|b| *b != 0xFF) || !(6..=8).contains(&len) {
        return None;
    }
    Some(field[..len].to_vec())
}

fn mgm_cipher(algorithm: u8, key: &[u8], block: &[u8], encrypt: bool) -> Option<Vec<u8>> {
    macro_rules! run {
        ($c:ty) => {{
            let c = <$c>::new_from_slice(key).ok()?;
            let mut b = aes::cipher::generic_array::GenericArray::clone_from_slice(block);
            if encrypt {
                c.encrypt_block(&mut b);
            } else {
                c.decrypt_block(&mut b);
            }
            Some(b.to_vec())
        }};
    }
    let block_len = if algorithm == mgm_alg::TDES { 8 } else { 16 };
    if block.len() != block_len {
        return None;
    }
    match algorithm {
        mgm_alg::TDES => run!(des::TdesEde3),
        mgm_alg::AES128 => run!(aes::Aes128),
        mgm_alg::AES192 => run!(aes::Aes192),
        mgm_alg::AES256 => run!(aes::Aes256),
        _ => None,
    }
}

/// Encrypt one block with a management key (also used by tests as the host side).
pub fn mgm_encrypt(algorithm: u8, key: &[u8], block: &[u8]) -> Option<Vec<u8>> {
    mgm_cipher(algorithm, key, block, true)
}

/// Decrypt one block with a management key.
pub fn mgm_decrypt(algorithm: u8, key: &[u8], block: &[u8]) -> Option<Vec<u8>> {
    mgm_cipher(algorithm, key, block, false)
}

impl<R: RngCore + CryptoRng> Card<R> {
    pub(crate) fn piv_command(&mut self, cmd: &Command) -> Response {
        match cmd.ins {
            ins::GET_VERSION => Response::ok(self.state.firmware.bytes().to_vec()),
            ins::GET_SERIAL => Response::ok(self.state.serial.to_be_bytes().to_vec()),
            ins::VERIFY => self.verify(cmd),
            ins::CHANGE_REFERENCE => self.change_reference(cmd),
            ins::RESET_RETRY => self.reset_retry(cmd),
            ins::SET_PIN_RETRIES => self.set_pin_retries(cmd),
            ins::RESET => self.reset(),
            ins::GET_METADATA => self.metadata(cmd),
            ins::AUTHENTICATE => self.general_authenticate(cmd),
            ins::SET_MGM_KEY => self.set_mgm_key(cmd),
            ins::GENERATE => self.generate(cmd),
            ins::IMPORT_KEY => self.import(cmd),
            ins::GET_DATA => self.get_data(cmd),
            ins::PUT_DATA => self.put_data(cmd),
            ins::ATTEST => self.attest(cmd),
            ins::MOVE_KEY if self.state.firmware.is_5_7() => self.move_key(cmd),
            _ => Response::status(sw::INS_NOT_SUPPORTED),
        }
    }

    fn verify(&mut self, cmd: &Command) -> Response {
        if cmd.p2 != SLOT_PIN {
            return Response::status(sw::REF_NOT_FOUND);
        }
        match cmd.p1 {
            // Un-verify.
            0xFF if cmd.data.is_empty() => {
                self.session.pin_verified = false;
                self.session.pin_fresh = false;
                return Response::status(sw::OK);
            }
            0x00 => {}
            _ => return Response::status(sw::INCORRECT_P1P2),
        }
        if cmd.data.is_empty() {
            // Retries query.
            return if self.session.pin_verified {
                Response::status(sw::OK)
            } else if self.state.pin.blocked() {
                Response::status(sw::AUTH_BLOCKED)
            } else {
                Response::status(sw::verify_fail(self.state.pin.tries_left))
            };
        }
        if cmd.data.len() != 8 {
            return Response::status(sw::INCORRECT_DATA);
        }
        if self.state.pin.blocked() {
            return Response::status(sw::AUTH_BLOCKED);
        }
        if cmd.data[..] == self.state.pin.padded() {
            self.session.pin_verified = true;
            self.session.pin_fresh = true;
            if self.state.pin.tries_left != self.state.pin.max_tries {
                self.state.pin.tries_left = self.state.pin.max_tries;
                self.mark_dirty();
            }
            Response::status(sw::OK)
        } else {
            self.session.pin_verified = false;
            self.session.pin_fresh = false;
            self.state.pin.tries_left -= 1;
            self.mark_dirty();
            Response::status(sw::verify_fail(self.state.pin.tries_left))
        }
    }

    fn change_reference(&mut self, cmd: &Command) -> Response {
        if cmd.p1 != 0 {
            return Response::status(sw::INCORRECT_P1P2);
        }
        if cmd.data.len() != 16 {
            return Response::status(sw::INCORRECT_DATA);
        }
        let is_pin = match cmd.p2 {
            SLOT_PIN => true,
            SLOT_PUK => false,
            _ => return Response::status(sw::REF_NOT_FOUND),
        };
        let cred = if is_pin {
            &mut self.state.pin
        } else {
            &mut self.state.puk
        };
        if cred.blocked() {
            return Response::status(sw::AUTH_BLOCKED);
        }
        if cmd.data[..8] != cred.padded() {
            cred.tries_left -= 1;
            let left = cred.tries_left;
            if is_pin {
                self.session.pin_verified = false;
            }
            self.mark_dirty();
            return Response::status(sw::verify_fail(left));
        }
        // The old value is checked first (a wrong one costs a try even when
        // the new one is malformed; `ykman piv reset` relies on that).
        let Some(new) = unpad(&cmd.data[8..]) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let cred = if is_pin {
            &mut self.state.pin
        } else {
            &mut self.state.puk
        };
        cred.value = new;
        cred.tries_left = cred.max_tries;
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn reset_retry(&mut self, cmd: &Command) -> Response {
        if cmd.p1 != 0 || cmd.p2 != SLOT_PIN {
            return Response::status(sw::INCORRECT_P1P2);
        }
        if cmd.data.len() != 16 {
            return Response::status(sw::INCORRECT_DATA);
        }
        if self.state.puk.blocked() {
            return Response::status(sw::AUTH_BLOCKED);
        }
        if cmd.data[..8] != self.state.puk.padded() {
            self.state.puk.tries_left -= 1;
            self.mark_dirty();
            return Response::status(sw::verify_fail(self.state.puk.tries_left));
        }
        let Some(new) = unpad(&cmd.data[8..]) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        self.state.puk.tries_left = self.state.puk.max_tries;
        self.state.pin.value = new;
        self.state.pin.tries_left = self.state.pin.max_tries;
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn set_pin_retries(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated || !self.session.pin_verified {
            return Response::status(sw::SECURITY_STATUS);
        }
        if cmd.p1 == 0 || cmd.p2 == 0 {
            return Response::status(sw::INCORRECT_P1P2);
        }
        // As on the device: new retry counts also put PIN and PUK back to their defaults.
        self.state.pin = crate::state::Credential::new(crate::state::DEFAULT_PIN, cmd.p1);
        self.state.puk = crate::state::Credential::new(crate::state::DEFAULT_PUK, cmd.p2);
        self.session.pin_verified = false;
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn reset(&mut self) -> Response {
        // Only a key whose PIN and PUK are both blocked may be reset.
        if !(self.state.pin.blocked() && self.state.puk.blocked()) {
            return Response::status(sw::CONDITIONS);
        }
        self.state.reset();
        self.session = Default::default();
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn metadata(&mut self, cmd: &Command) -> Response {
        let mut out = Vec::new();
        match cmd.p2 {
            SLOT_PIN | SLOT_PUK => {
                let (cred, default) = if cmd.p2 == SLOT_PIN {
                    (&self.state.pin, self.state.pin_is_default())
                } else {
                    (&self.state.puk, self.state.puk_is_default())
                };
                tlv::encode_into(0x01, &[0xFF], &mut out);
                tlv::encode_into(0x05, &[u8::from(default)], &mut out);
                tlv::encode_into(0x06, &[cred.max_tries, cred.tries_left], &mut out);
            }
            SLOT_MGM => {
                let m = &self.state.management_key;
                let touch = if m.touch_required { 0x02 } else { 0x01 };
                tlv::encode_into(0x01, &[m.algorithm], &mut out);
                tlv::encode_into(0x02, &[0x00, touch], &mut out);
                tlv::encode_into(0x05, &[u8::from(self.state.mgm_is_default())], &mut out);
            }
            slot if is_key_slot(slot) || slot == SLOT_ATTESTATION => {
                let Some(sk) = self.state.slots.get(&slot) else {
                    return Response::status(sw::REF_NOT_FOUND);
                };
                let key = match PrivateKey::from_pkcs8(sk.algorithm, &sk.pkcs8) {
                    Ok(k) => k,
                    Err(_) => return Response::status(sw::NO_PRECISE_DIAGNOSIS),
                };
                tlv::encode_into(0x01, &[sk.algorithm], &mut out);
                tlv::encode_into(0x02, &[sk.pin_policy, sk.touch_policy], &mut out);
                tlv::encode_into(0x03, &[sk.origin], &mut out);
                tlv::encode_into(0x04, &key.public_tlv(), &mut out);
            }
            _ => return Response::status(sw::REF_NOT_FOUND),
        }
        Response::ok(out)
    }

    fn general_authenticate(&mut self, cmd: &Command) -> Response {
        let Ok((outer, _)) = tlv::parse(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        if outer.tag != 0x7C {
            return Response::status(sw::INCORRECT_DATA);
        }
        let Ok(items) = tlv::parse_all(outer.value) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        if cmd.p2 == SLOT_MGM {
            return self.mgm_authenticate(cmd.p1, &items);
        }
        self.key_operation(cmd.p1, cmd.p2, &items)
    }

    fn mgm_authenticate(&mut self, algorithm: u8, items: &[tlv::Tlv<'_>]) -> Response {
        let key = self.state.management_key.clone();
        if algorithm != key.algorithm {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let block_len = if algorithm == mgm_alg::TDES { 8 } else { 16 };
        let witness = tlv::find(items, 0x80);
        let challenge = tlv::find(items, 0x81);
        let response = tlv::find(items, 0x82);
        let pending = self.session.mgm_challenge.take();
        self.session.mgm_authenticated = false;
        let encrypt = |b: &[u8]| mgm_encrypt(key.algorithm, &key.key, b);
        match (witness, challenge, response) {
            // Mutual, step 1: send an encrypted witness.
            (Some([]), None, _) => {
                let mut w = vec![0u8; block_len];
                self.rng.fill_bytes(&mut w);
                let Some(enc) = encrypt(&w) else {
                    return Response::status(sw::NO_PRECISE_DIAGNOSIS);
                };
                self.session.mgm_challenge = Some(MgmChallenge::Witness(w));
                Response::ok(tlv::encode(0x7C, &tlv::encode(0x80, &enc)))
            }
            // Mutual, step 2: the host decrypted the witness and challenges us.
            (Some(w), Some(c), _) if !w.is_empty() && c.len() == block_len => match pending {
                Some(MgmChallenge::Witness(expected)) if expected == w => {
                    let Some(enc) = encrypt(c) else {
                        return Response::status(sw::NO_PRECISE_DIAGNOSIS);
                    };
                    self.session.mgm_authenticated = true;
                    Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &enc)))
                }
                _ => Response::status(sw::SECURITY_STATUS),
            },
            // Single, step 1: send a plaintext challenge.
            (None, Some([]), _) => {
                let mut c = vec![0u8; block_len];
                self.rng.fill_bytes(&mut c);
                let Some(enc) = encrypt(&c) else {
                    return Response::status(sw::NO_PRECISE_DIAGNOSIS);
                };
                self.session.mgm_challenge = Some(MgmChallenge::Expected(enc));
                Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &c)))
            }
            // Single, step 2: the host encrypted it.
            (None, None, Some(r)) if !r.is_empty() => match pending {
                Some(MgmChallenge::Expected(expected)) if expected == r => {
                    self.session.mgm_authenticated = true;
                    Response::status(sw::OK)
                }
                _ => Response::status(sw::SECURITY_STATUS),
            },
            _ => Response::status(sw::INCORRECT_DATA),
        }
    }

    fn load_slot_key(&self, slot: u8) -> Result<(SlotKey, PrivateKey), u16> {
        let sk = self.state.slots.get(&slot).ok_or(sw::NOT_FOUND)?.clone();
        let key = PrivateKey::from_pkcs8(sk.algorithm, &sk.pkcs8)
            .map_err(|_| sw::NO_PRECISE_DIAGNOSIS)?;
        Ok((sk, key))
    }

    fn pin_policy_satisfied(&mut self, policy: u8) -> bool {
        match policy {
            pin_policy::NEVER => true,
            pin_policy::ALWAYS => {
                std::mem::take(&mut self.session.pin_fresh) && self.session.pin_verified
            }
            _ => self.session.pin_verified,
        }
    }

    fn key_operation(&mut self, algorithm: u8, slot: u8, items: &[tlv::Tlv<'_>]) -> Response {
        if !is_key_slot(slot) && slot != SLOT_ATTESTATION {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let (sk, key) = match self.load_slot_key(slot) {
            Ok(k) => k,
            Err(code) => return Response::status(code),
        };
        if sk.algorithm != algorithm {
            return Response::status(sw::INCORRECT_P1P2);
        }
        if tlv::find(items, 0x82) != Some(&[]) {
            return Response::status(sw::INCORRECT_DATA);
        }
        if !self.pin_policy_satisfied(sk.pin_policy) {
            return Response::status(sw::SECURITY_STATUS);
        }
        // Touch is always satisfied: nobody is there to press the button.
        let result = if let Some(challenge) = tlv::find(items, 0x81) {
            key.private_operation(challenge, &mut self.rng)
        } else if let Some(point) = tlv::find(items, 0x85) {
            key.ecdh(point)
        } else {
            return Response::status(sw::INCORRECT_DATA);
        };
        match result {
            Ok(out) => Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &out))),
            Err(_) => Response::status(sw::INCORRECT_DATA),
        }
    }

    fn set_mgm_key(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        let touch_required = match (cmd.p1, cmd.p2) {
            (0xFF, 0xFF) => false,
            (0xFF, 0xFE) => true,
            _ => return Response::status(sw::INCORRECT_P1P2),
        };
        let d = &cmd.data;
        if d.len() < 3 || d[1] != SLOT_MGM || usize::from(d[2]) != d.len() - 3 {
            return Response::status(sw::INCORRECT_DATA);
        }
        if mgm_alg::key_len(d[0]) != Some(d.len() - 3) {
            return Response::status(sw::INCORRECT_DATA);
        }
        self.state.management_key = crate::state::ManagementKey {
            algorithm: d[0],
            key: d[3..].to_vec(),
            touch_required,
        };
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn algorithm_supported(&self, a: u8) -> bool {
        match a {
            alg::RSA1024 | alg::RSA2048 | alg::P256 | alg::P384 => true,
            alg::RSA3072 | alg::RSA4096 => self.state.firmware.is_5_7(),
            _ => false,
        }
    }

    /// Parse optional `AA` (PIN policy) and `AB` (touch policy) values.
    fn policies(&self, slot: u8, items: &[tlv::Tlv<'_>]) -> Result<(u8, u8), u16> {
        let pin = match tlv::find(items, 0xAA) {
            None | Some([pin_policy::DEFAULT]) => default_pin_policy(slot),
            Some([p @ (pin_policy::NEVER | pin_policy::ONCE | pin_policy::ALWAYS)]) => *p,
            _ => return Err(sw::INCORRECT_DATA),
        };
        let touch = match tlv::find(items, 0xAB) {
            None | Some([touch_policy::DEFAULT]) => touch_policy::NEVER,
            Some([t @ 1..=touch_policy::CACHED]) => *t,
            _ => return Err(sw::INCORRECT_DATA),
        };
        Ok((pin, touch))
    }

    fn generate(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        if cmd.p1 != 0 || !is_key_slot(cmd.p2) {
            return Response::status(sw::INCORRECT_SLOT);
        }
        let Ok((template, _)) = tlv::parse(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let Ok(items) = tlv::parse_all(template.value) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let algorithm = match tlv::find(&items, 0x80) {
            Some([a]) if template.tag == 0xAC && self.algorithm_supported(*a) => *a,
            _ => return Response::status(sw::INCORRECT_DATA),
        };
        let (pin, touch) = match self.policies(cmd.p2, &items) {
            Ok(p) => p,
            Err(code) => return Response::status(code),
        };
        let key = match PrivateKey::generate(algorithm, &mut self.rng) {
            Ok(k) => k,
            Err(_) => return Response::status(sw::NO_PRECISE_DIAGNOSIS),
        };
        let Ok(pkcs8) = key.to_pkcs8() else {
            return Response::status(sw::NO_PRECISE_DIAGNOSIS);
        };
        self.state.slots.insert(
            cmd.p2,
            SlotKey {
                algorithm,
                pkcs8,
                pin_policy: pin,
                touch_policy: touch,
                origin: ORIGIN_GENERATED,
            },
        );
        self.mark_dirty();
        Response::ok(tlv::encode(0x7F49, &key.public_tlv()))
    }

    fn import(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        if !is_key_slot(cmd.p2) {
            return Response::status(sw::INCORRECT_SLOT);
        }
        if !self.algorithm_supported(cmd.p1) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let Ok(items) = tlv::parse_all(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let key = if let Some(bits) = alg::rsa_bits(cmd.p1) {
            match (tlv::find(&items, 0x01), tlv::find(&items, 0x02)) {
                (Some(p), Some(q)) => match PrivateKey::from_rsa_crt(p, q) {
                    Ok(k) if k.algorithm() == cmd.p1 && bits > 0 => k,
                    _ => return Response::status(sw::INCORRECT_DATA),
                },
                _ => return Response::status(sw::INCORRECT_DATA),
            }
        } else {
            match tlv::find(&items, 0x06).map(|s| PrivateKey::from_ec_scalar(cmd.p1, s)) {
                Some(Ok(k)) => k,
                _ => return Response::status(sw::INCORRECT_DATA),
            }
        };
        let (pin, touch) = match self.policies(cmd.p2, &items) {
            Ok(p) => p,
            Err(code) => return Response::status(code),
        };
        let Ok(pkcs8) = key.to_pkcs8() else {
            return Response::status(sw::NO_PRECISE_DIAGNOSIS);
        };
        self.state.slots.insert(
            cmd.p2,
            SlotKey {
                algorithm: cmd.p1,
                pkcs8,
                pin_policy: pin,
                touch_policy: touch,
                origin: ORIGIN_IMPORTED,
            },
        );
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn move_key(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        let (to, from) = (cmd.p1, cmd.p2);
        if !is_key_slot(from) || !(to == 0xFF || is_key_slot(to)) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let Some(key) = self.state.slots.remove(&from) else {
            return Response::status(sw::REF_NOT_FOUND);
        };
        if to != 0xFF {
            self.state.slots.insert(to, key);
        }
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn object_tag(data: &[u8]) -> Result<(u32, &[u8]), u16> {
        let (t, rest) = tlv::parse(data).map_err(|_| sw::INCORRECT_DATA)?;
        if t.tag != 0x5C || t.value.is_empty() || t.value.len() > 3 {
            return Err(sw::INCORRECT_DATA);
        }
        let tag = t
            .value
            .iter()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        Ok((tag, rest))
    }

    fn get_data(&mut self, cmd: &Command) -> Response {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let tag = match Self::object_tag(&cmd.data) {
            Ok((tag, [])) => tag,
            Ok(_) => return Response::status(sw::INCORRECT_DATA),
            Err(code) => return Response::status(code),
        };
        if tag == 0x7E {
            return Response::ok(DISCOVERY.to_vec());
        }
        if tag == OBJ_PRINTED && !self.session.pin_verified {
            return Response::status(sw::SECURITY_STATUS);
        }
        match self.state.objects.get(&tag) {
            Some(content) => Response::ok(tlv::encode(0x53, content)),
            None => Response::status(sw::NOT_FOUND),
        }
    }

    fn put_data(&mut self, cmd: &Command) -> Response {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        let (tag, rest) = match Self::object_tag(&cmd.data) {
            Ok(v) => v,
            Err(code) => return Response::status(code),
        };
        if !(0x5F_C101..=0x5F_C123).contains(&tag) && !(0x5F_FF00..=0x5F_FF15).contains(&tag) {
            return Response::status(sw::INCORRECT_DATA);
        }
        let content = match tlv::parse(rest) {
            Ok((t, [])) if t.tag == 0x53 => t.value.to_vec(),
            _ => return Response::status(sw::INCORRECT_DATA),
        };
        if content.len() > MAX_OBJECT {
            return Response::status(sw::NO_SPACE);
        }
        if content.is_empty() {
            self.state.objects.remove(&tag);
        } else {
            self.state.objects.insert(tag, content);
        }
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn attest(&mut self, cmd: &Command) -> Response {
        let slot = cmd.p1;
        if !is_key_slot(slot) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let (sk, key) = match self.load_slot_key(slot) {
            Ok(k) => k,
            Err(_) => return Response::status(sw::REF_NOT_FOUND),
        };
        // Only keys generated on the card can be attested.
        if sk.origin != ORIGIN_GENERATED {
            return Response::status(sw::INCORRECT_DATA);
        }
        let (Ok((_, f9)), Some(f9_cert)) = (
            self.load_slot_key(SLOT_ATTESTATION),
            self.state
                .objects
                .get(&crate::state::OBJ_ATTESTATION_CERT)
                .and_then(|o| attest::cert_from_object(o)),
        ) else {
            return Response::status(sw::REF_NOT_FOUND);
        };
        let subject = AttestedKey {
            slot,
            key: &key,
            pin_policy: sk.pin_policy,
            touch_policy: sk.touch_policy,
            serial: self.state.serial,
            firmware: self.state.firmware,
        };
        match attest::attest(&f9, &f9_cert, &subject, &mut self.rng) {
            Ok(cert) => Response::ok(cert),
            Err(_) => Response::status(sw::NO_PRECISE_DIAGNOSIS),
        }
    }
}

#[cfg(test)]
mod tests;
