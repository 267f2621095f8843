//! Management key: challenge-response authentication (3DES, AES-128/192/256)
//! and SET MANAGEMENT KEY.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use rand::{CryptoRng, RngCore};

use super::SLOT_MGM;
use crate::apdu::{sw, Command, Response};
use crate::card::{Card, MgmChallenge};
use crate::state::mgm_alg;
use crate::tlv;

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
    pub(super) fn mgm_authenticate(&mut self, algorithm: u8, items: &[tlv::Tlv<'_>]) -> Response {
        let key = self.state.management_key.clone();
        // Another algorithm than the management key's: 6A80, as on the device.
        if algorithm != key.algorithm {
            return Response::status(sw::INCORRECT_DATA);
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

    pub(super) fn set_mgm_key(&mut self, cmd: &Command) -> Response {
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
}
