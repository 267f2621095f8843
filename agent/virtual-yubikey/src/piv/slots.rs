//! Key slots: GENERATE, IMPORT, GENERAL AUTHENTICATE with a slot key
//! (sign, RSA decrypt, ECDH), ATTEST and (5.7) MOVE/DELETE KEY.

use rand::{CryptoRng, RngCore};

use super::{default_pin_policy, is_key_slot, pin_policy, touch_policy};
use crate::apdu::{sw, Command, Response};
use crate::attest::{self, AttestedKey};
use crate::card::Card;
use crate::keys::{alg, PrivateKey};
use crate::state::{SlotKey, ORIGIN_GENERATED, ORIGIN_IMPORTED, SLOT_ATTESTATION};
use crate::tlv;

impl<R: RngCore + CryptoRng> Card<R> {
    pub(super) fn load_slot_key(&self, slot: u8) -> Result<(SlotKey, PrivateKey), u16> {
        let sk = self.state.slots.get(&slot).ok_or(sw::NOT_FOUND)?.clone();
        let key = PrivateKey::from_pkcs8(sk.algorithm, &sk.pkcs8)
            .map_err(|_| sw::NO_PRECISE_DIAGNOSIS)?;
        Ok((sk, key))
    }

    pub(super) fn pin_policy_satisfied(&mut self, policy: u8) -> bool {
        match policy {
            pin_policy::NEVER => true,
            pin_policy::ALWAYS => {
                std::mem::take(&mut self.session.pin_fresh) && self.session.pin_verified
            }
            _ => self.session.pin_verified,
        }
    }

    pub(super) fn key_operation(
        &mut self,
        algorithm: u8,
        slot: u8,
        items: &[tlv::Tlv<'_>],
    ) -> Response {
        if !is_key_slot(slot) && slot != SLOT_ATTESTATION {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let (sk, key) = match self.load_slot_key(slot) {
            Ok(k) => k,
            Err(code) => return Response::status(code),
        };
        // A key of another algorithm: 6A80, as on the device (ykman's
        // check_key takes it for "does not match").
        if sk.algorithm != algorithm {
            return Response::status(sw::INCORRECT_DATA);
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

    pub(super) fn algorithm_supported(&self, a: u8) -> bool {
        match a {
            alg::RSA1024 | alg::RSA2048 | alg::P256 | alg::P384 => true,
            alg::RSA3072 | alg::RSA4096 | alg::ED25519 | alg::X25519 => {
                self.state.firmware.is_5_7()
            }
            _ => false,
        }
    }

    /// Parse optional `AA` (PIN policy) and `AB` (touch policy) values.
    pub(super) fn policies(&self, slot: u8, items: &[tlv::Tlv<'_>]) -> Result<(u8, u8), u16> {
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

    pub(super) fn generate(&mut self, cmd: &Command) -> Response {
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

    pub(super) fn import(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        if !is_key_slot(cmd.p2) {
            return Response::status(sw::INCORRECT_SLOT);
        }
        // An algorithm this key does not have: 6A80, as on the device.
        if !self.algorithm_supported(cmd.p1) {
            return Response::status(sw::INCORRECT_DATA);
        }
        let Ok(items) = tlv::parse_all(&cmd.data) else {
            return Response::status(sw::INCORRECT_DATA);
        };
        let key = if alg::rsa_bits(cmd.p1).is_some() {
            // The key is rebuilt from p and q (e = 65537, as the card requires);
            // its size must be the one the command names.
            match (tlv::find(&items, 0x01), tlv::find(&items, 0x02)) {
                (Some(p), Some(q)) => match PrivateKey::from_rsa_crt(p, q) {
                    Ok(k) if k.algorithm() == cmd.p1 => k,
                    _ => return Response::status(sw::INCORRECT_DATA),
                },
                _ => return Response::status(sw::INCORRECT_DATA),
            }
        } else if let alg::ED25519 | alg::X25519 = cmd.p1 {
            // The raw private key: tag 07 for Ed25519, 08 for X25519.
            let tag = if cmd.p1 == alg::ED25519 { 0x07 } else { 0x08 };
            match tlv::find(&items, tag).map(|k| PrivateKey::from_raw_25519(cmd.p1, k)) {
                Some(Ok(k)) => k,
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

    pub(super) fn move_key(&mut self, cmd: &Command) -> Response {
        if !self.session.mgm_authenticated {
            return Response::status(sw::SECURITY_STATUS);
        }
        let (to, from) = (cmd.p1, cmd.p2);
        if !is_key_slot(from) || !(to == 0xFF || is_key_slot(to)) {
            return Response::status(sw::INCORRECT_P1P2);
        }
        if !self.state.slots.contains_key(&from) {
            return Response::status(sw::REF_NOT_FOUND);
        }
        // The device refuses to overwrite a key (ykman: "DEST slot is not empty").
        if to != 0xFF && self.state.slots.contains_key(&to) {
            return Response::status(sw::INCORRECT_DATA);
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

    pub(super) fn attest(&mut self, cmd: &Command) -> Response {
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
