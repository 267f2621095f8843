//! GET DATA / PUT DATA for PIV data objects (certificates, CHUID, CCC,
//! ykman's admin data, the attestation certificate).

use rand::{CryptoRng, RngCore};

use crate::apdu::{sw, Command, Response};
use crate::card::Card;
use crate::tlv;

/// Largest data object a YubiKey 5 stores.
const MAX_OBJECT: usize = 3052;
/// Printed information object of ykman (PIN-protected management key).
const OBJ_PRINTED: u32 = 0x5F_C109;
/// Discovery object, answered from ROM.
const DISCOVERY: [u8; 20] = [
    0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x5F,
    0x2F, 0x02, 0x40, 0x00,
];

/// Object ids PUT DATA accepts: like a YubiKey, any 3-byte id 5F0000..5FFFFF
/// (the PIV objects, Yubico's, and free ones an application picks) and the
/// biometric group template 7F61; the discovery object 7E is read-only.
fn writable(tag: u32) -> bool {
    (0x5F_0000..=0x5F_FFFF).contains(&tag) || tag == 0x7F61
}

impl<R: RngCore + CryptoRng> Card<R> {
    pub(super) fn object_tag(data: &[u8]) -> Result<(u32, &[u8]), u16> {
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

    pub(super) fn get_data(&mut self, cmd: &Command) -> Response {
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

    pub(super) fn put_data(&mut self, cmd: &Command) -> Response {
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
        if !writable(tag) {
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
}
