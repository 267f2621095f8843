//! The YKOATH applet (Yubico's OATH application, AID `A0 00 00 05 27 21 01`):
//! PUT, LIST, DELETE, RENAME, CALCULATE, CALCULATE ALL and RESET, enough for
//! `ykman oath accounts add|list|code|delete|rename` and `ykman oath reset`.
//! No access password (SET CODE / VALIDATE are refused as unsupported), and
//! touch is always satisfied, as for PIV: nobody is there to press the button.
//!
//! Protocol: <https://developers.yubico.com/OATH/YKOATH_Protocol.html>.

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};

use crate::apdu::{sw, Command, Response};
use crate::card::Card;
use crate::state::{OathCredential, OathState};
use crate::tlv;

pub const AID_OATH: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

pub const INS_PUT: u8 = 0x01;
pub const INS_DELETE: u8 = 0x02;
pub const INS_SET_CODE: u8 = 0x03;
pub const INS_RESET: u8 = 0x04;
pub const INS_RENAME: u8 = 0x05;
pub const INS_LIST: u8 = 0xA1;
pub const INS_CALCULATE: u8 = 0xA2;
pub const INS_VALIDATE: u8 = 0xA3;
pub const INS_CALCULATE_ALL: u8 = 0xA4;
/// The OATH applet's GET RESPONSE.
pub const INS_SEND_REMAINING: u8 = 0xA5;

const TAG_NAME: u8 = 0x71;
const TAG_NAME_LIST: u8 = 0x72;
const TAG_KEY: u8 = 0x73;
const TAG_CHALLENGE: u8 = 0x74;
const TAG_RESPONSE: u8 = 0x75;
const TAG_TRUNCATED: u8 = 0x76;
const TAG_HOTP: u8 = 0x77;
/// Property: unlike every other tag, followed by its one value byte without a length.
const TAG_PROPERTY: u8 = 0x78;
const TAG_VERSION: u8 = 0x79;
const TAG_IMF: u8 = 0x7A;
const TAG_TOUCH: u8 = 0x7C;

pub const TYPE_HOTP: u8 = 0x10;
pub const TYPE_TOTP: u8 = 0x20;
pub const ALG_SHA1: u8 = 0x01;
pub const ALG_SHA256: u8 = 0x02;
pub const ALG_SHA512: u8 = 0x03;
const PROP_REQUIRE_TOUCH: u8 = 0x02;

/// A YubiKey 5 holds 32 OATH accounts.
pub const MAX_CREDENTIALS: usize = 32;
pub const MAX_NAME_LEN: usize = 64;
/// ykman shortens longer keys to a hash; SHA-512's block is the largest.
pub const MAX_SECRET_LEN: usize = 128;
/// YKOATH "no such object".
const SW_NO_SUCH_OBJECT: u16 = 0x6984;

/// One `tag value` item of a YKOATH command body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item<'a> {
    tag: u8,
    value: &'a [u8],
}

/// Split a command body into its items: one-byte tags, BER lengths up to
/// `81 xx` (a SHA-512 key of 128 bytes needs it), except the property tag
/// `78`, which carries its single byte directly.
fn items(mut data: &[u8]) -> Option<Vec<Item<'_>>> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        let (value, rest) = if tag == TAG_PROPERTY {
            rest.split_at_checked(1)?
        } else {
            let (len, rest) = match rest.split_first()? {
                (&0x81, rest) => {
                    let (&len, rest) = rest.split_first()?;
                    (len, rest)
                }
                (&len, _) if len >= 0x80 => return None,
                (&len, rest) => (len, rest),
            };
            rest.split_at_checked(usize::from(len))?
        };
        out.push(Item { tag, value });
        data = rest;
    }
    Some(out)
}

fn find<'a>(items: &[Item<'a>], tag: u8) -> Option<&'a [u8]> {
    items.iter().find(|i| i.tag == tag).map(|i| i.value)
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

impl<R: RngCore + CryptoRng> Card<R> {
    /// SELECT of the OATH AID: version, and the salt that names this
    /// application instance (ykman's device id). No challenge: no password.
    pub(crate) fn oath_select(&self) -> Option<Response> {
        let oath = self.state.oath.as_ref()?;
        let mut out = tlv::encode(u16::from(TAG_VERSION), &self.state.firmware.bytes());
        tlv::encode_into(u16::from(TAG_NAME), &oath.salt, &mut out);
        Some(Response::ok(out))
    }

    pub(crate) fn oath_command(&mut self, cmd: &Command) -> Response {
        if self.state.oath.is_none() {
            return Response::status(sw::INS_NOT_SUPPORTED);
        }
        match cmd.ins {
            INS_PUT => self.oath_put(cmd),
            INS_DELETE => self.oath_delete(cmd),
            INS_RENAME => self.oath_rename(cmd),
            INS_RESET => self.oath_reset(cmd),
            INS_LIST => self.oath_list(),
            INS_CALCULATE => self.oath_calculate(cmd),
            INS_CALCULATE_ALL => self.oath_calculate_all(cmd),
            // No access password in this emulator.
            INS_SET_CODE | INS_VALIDATE => Response::status(sw::INS_NOT_SUPPORTED),
            _ => Response::status(sw::INS_NOT_SUPPORTED),
        }
    }

    fn oath_state(&mut self) -> &mut OathState {
        // Only called from oath_command, which checked that there is one.
        self.state.oath.get_or_insert_with(OathState::default)
    }

    fn oath_put(&mut self, cmd: &Command) -> Response {
        let Some(items) = items(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let (Some(name), Some(key)) = (find(&items, TAG_NAME), find(&items, TAG_KEY)) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let [type_alg, digits, secret @ ..] = key else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let (kind, algorithm) = (type_alg & 0xF0, type_alg & 0x0F);
        if !valid_name(name)
            || !matches!(kind, TYPE_HOTP | TYPE_TOTP)
            || !matches!(algorithm, ALG_SHA1 | ALG_SHA256 | ALG_SHA512)
            || !(6..=8).contains(digits)
            || secret.len() > MAX_SECRET_LEN
        {
            return Response::status(sw::INCORRECT_DATA);
        }
        let touch = match find(&items, TAG_PROPERTY) {
            None => false,
            Some([p]) => p & PROP_REQUIRE_TOUCH != 0,
            Some(_) => return Response::status(sw::INCORRECT_DATA),
        };
        let counter = match find(&items, TAG_IMF) {
            None => 0,
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            Some(_) => return Response::status(sw::INCORRECT_DATA),
        };
        let cred = OathCredential {
            name: name.to_vec(),
            kind,
            algorithm,
            digits: *digits,
            secret: secret.to_vec(),
            touch,
            counter,
        };
        let oath = self.oath_state();
        // Putting a name that exists replaces that account.
        if let Some(old) = oath.credentials.iter_mut().find(|c| c.name == name) {
            *old = cred;
        } else if oath.credentials.len() >= MAX_CREDENTIALS {
            return Response::status(sw::NO_SPACE);
        } else {
            oath.credentials.push(cred);
        }
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn oath_delete(&mut self, cmd: &Command) -> Response {
        let Some(name) = items(&cmd.data).and_then(|i| find(&i, TAG_NAME)) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let oath = self.oath_state();
        let before = oath.credentials.len();
        oath.credentials.retain(|c| c.name != name);
        if oath.credentials.len() == before {
            return Response::status(SW_NO_SUCH_OBJECT);
        }
        self.mark_dirty();
        Response::status(sw::OK)
    }

    /// RENAME (firmware 5.3 and later): the old name, then the new one.
    fn oath_rename(&mut self, cmd: &Command) -> Response {
        let Some(items) = items(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let names: Vec<&[u8]> = items
            .iter()
            .filter(|i| i.tag == TAG_NAME)
            .map(|i| i.value)
            .collect();
        let [old, new] = names[..] else {
            return Response::status(sw::INCORRECT_DATA);
        };
        if !valid_name(new) {
            return Response::status(sw::INCORRECT_DATA);
        }
        let oath = self.oath_state();
        if old != new && oath.credentials.iter().any(|c| c.name == new) {
            return Response::status(sw::INCORRECT_DATA);
        }
        let Some(cred) = oath.credentials.iter_mut().find(|c| c.name == old) else {
            return Response::status(SW_NO_SUCH_OBJECT);
        };
        cred.name = new.to_vec();
        self.mark_dirty();
        Response::status(sw::OK)
    }

    /// RESET (P1 P2 = DE AD): every account gone, and a new salt, so the
    /// application is a different one to ykman (its device id changes).
    fn oath_reset(&mut self, cmd: &Command) -> Response {
        if (cmd.p1, cmd.p2) != (0xDE, 0xAD) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let mut salt = [0u8; 8];
        self.rng.fill_bytes(&mut salt);
        *self.oath_state() = OathState::new(salt);
        self.mark_dirty();
        Response::status(sw::OK)
    }

    fn oath_list(&mut self) -> Response {
        let mut out = Vec::new();
        for c in &self.oath_state().credentials {
            let mut v = vec![c.kind | c.algorithm];
            v.extend_from_slice(&c.name);
            tlv::encode_into(u16::from(TAG_NAME_LIST), &v, &mut out);
        }
        Response::ok(out)
    }

    /// CALCULATE one account: P2 bit 0 asks for the truncated code.
    fn oath_calculate(&mut self, cmd: &Command) -> Response {
        let Some(items) = items(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let (Some(name), Some(challenge)) = (find(&items, TAG_NAME), find(&items, TAG_CHALLENGE))
        else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let truncate = cmd.p2 & 1 != 0;
        let oath = self.oath_state();
        let Some(cred) = oath.credentials.iter_mut().find(|c| c.name == name) else {
            return Response::status(SW_NO_SUCH_OBJECT);
        };
        let hotp = cred.kind == TYPE_HOTP;
        let message = if hotp {
            let m = u64::from(cred.counter).to_be_bytes().to_vec();
            cred.counter = cred.counter.wrapping_add(1);
            m
        } else {
            challenge.to_vec()
        };
        let (digits, mac) = (cred.digits, mac_of(cred.algorithm, &cred.secret, &message));
        if hotp {
            self.mark_dirty();
        }
        Response::ok(code_tlv(digits, &mac, truncate))
    }

    /// CALCULATE ALL (P2 bit 0: truncated): every TOTP account's code for the
    /// challenge; HOTP accounts are only named (a code would use up a count).
    fn oath_calculate_all(&mut self, cmd: &Command) -> Response {
        let Some(challenge) = items(&cmd.data).and_then(|i| find(&i, TAG_CHALLENGE)) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let truncate = cmd.p2 & 1 != 0;
        let mut out = Vec::new();
        for c in &self.oath_state().credentials {
            tlv::encode_into(u16::from(TAG_NAME), &c.name, &mut out);
            if c.kind == TYPE_HOTP {
                tlv::encode_into(u16::from(TAG_HOTP), &[c.digits], &mut out);
            } else if c.touch {
                tlv::encode_into(u16::from(TAG_TOUCH), &[c.digits], &mut out);
            } else {
                let mac = mac_of(c.algorithm, &c.secret, challenge);
                out.extend(code_tlv(c.digits, &mac, truncate));
            }
        }
        Response::ok(out)
    }
}

/// HMAC of `message` under `key` with the account's hash.
fn mac_of(algorithm: u8, key: &[u8], message: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        ALG_SHA256 => run::<Hmac<sha2::Sha256>>(key, message),
        ALG_SHA512 => run::<Hmac<sha2::Sha512>>(key, message),
        _ => run::<Hmac<sha1::Sha1>>(key, message),
    }
}

/// `76 digits code(4)` (RFC 4226 dynamic truncation) or `75 digits hmac`.
fn code_tlv(digits: u8, mac: &[u8], truncate: bool) -> Vec<u8> {
    let mut v = vec![digits];
    if truncate {
        let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0F);
        let mut four = [0u8; 4];
        four.copy_from_slice(&mac[offset..offset + 4]);
        four[0] &= 0x7F;
        v.extend_from_slice(&four);
        tlv::encode(u16::from(TAG_TRUNCATED), &v)
    } else {
        v.extend_from_slice(mac);
        tlv::encode(u16::from(TAG_RESPONSE), &v)
    }
}

#[cfg(test)]
mod tests;
