//! The YubiKey 5 PIV applet: PIN/PUK, management key, key slots, data
//! objects, metadata and attestation, with the status words the real
//! device answers.

use rand::{CryptoRng, RngCore};

use crate::apdu::{sw, Command, Response};
use crate::card::Card;
use crate::keys::PrivateKey;
use crate::state::SLOT_ATTESTATION;
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
}

mod mgm;
mod objects;
mod slots;
#[cfg(test)]
mod tests;

pub use mgm::{mgm_decrypt, mgm_encrypt};
