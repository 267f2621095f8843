//! Changing the PIN, the PUK and the management key.

use kleidia_protocol::agent::ManagementKeyAlgorithm;
use yubikey::piv::{self, ManagementSlotId, SlotAlgorithmId, SlotId};
use yubikey::{MgmAlgorithmId, MgmKey, YubiKey};

use super::open::open;
use super::wire::mgm_alg_from_wire;
use super::{has_metadata, mgm_err, other_err, pin_err, puk_err, CardError, ReaderPolicy};

/// PINs and PUKs are 6–8 bytes on a YubiKey; refuse anything else before the
/// card counts it as a wrong attempt.
pub(super) fn check_pin_format(v: &[u8]) -> Result<(), CardError> {
    if !(6..=8).contains(&v.len()) || v.contains(&0xFF) {
        return Err(CardError::InvalidSecret(
            "a PIN or PUK must be 6 to 8 characters",
        ));
    }
    Ok(())
}

pub fn set_pin(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
) -> Result<(), CardError> {
    change(serial, policy, current, new, |yk, current, new| {
        yk.change_pin(current, new).map_err(pin_err)
    })
}

pub fn set_puk(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
) -> Result<(), CardError> {
    change(serial, policy, current, new, |yk, current, new| {
        yk.change_puk(current, new).map_err(puk_err)
    })
}

pub fn unblock_pin(
    serial: u32,
    policy: ReaderPolicy,
    puk: &[u8],
    new_pin: &[u8],
) -> Result<(), CardError> {
    change(serial, policy, puk, new_pin, |yk, puk, new_pin| {
        yk.unblock_pin(puk, new_pin).map_err(puk_err)
    })
}

/// A PIN or PUK change: both values checked here, then `f` on the opened key.
fn change(
    serial: u32,
    policy: ReaderPolicy,
    proof: &[u8],
    new: &[u8],
    f: impl FnOnce(&mut YubiKey, &[u8], &[u8]) -> Result<(), CardError>,
) -> Result<(), CardError> {
    check_pin_format(proof)?;
    check_pin_format(new)?;
    let (_, mut yk) = open(serial, policy)?;
    f(&mut yk, proof, new)
}

/// Parse a management key given as hex for `alg`.
pub(super) fn parse_mgm(hex_key: &[u8], alg: MgmAlgorithmId) -> Result<MgmKey, CardError> {
    let text = std::str::from_utf8(hex_key)
        .map_err(|_| CardError::InvalidSecret("a management key must be hex"))?;
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| CardError::InvalidSecret("a management key must be hex"))?,
    );
    MgmKey::from_bytes(bytes.as_slice(), Some(alg)).map_err(|_| {
        CardError::InvalidSecret(
            "the management key has the wrong length for its algorithm, or is weak",
        )
    })
}

/// The algorithm of the card's current management key (3DES before metadata existed).
fn current_mgm_alg(yk: &mut YubiKey) -> Result<MgmAlgorithmId, CardError> {
    if !has_metadata(yk) {
        return Ok(MgmAlgorithmId::ThreeDes);
    }
    match piv::metadata(yk, SlotId::Management(ManagementSlotId::Management))
        .map_err(other_err)?
        .algorithm
    {
        SlotAlgorithmId::Management(a) => Ok(a),
        _ => Err(CardError::Card("unexpected management key metadata".into())),
    }
}

pub(super) fn authenticate(yk: &mut YubiKey, mgm_hex: &[u8]) -> Result<(), CardError> {
    let alg = current_mgm_alg(yk)?;
    let key = parse_mgm(mgm_hex, alg)?;
    yk.authenticate(&key).map_err(mgm_err)
}

pub fn rotate_management_key(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
    algorithm: ManagementKeyAlgorithm,
    require_touch: bool,
) -> Result<(), CardError> {
    let new_key = parse_mgm(new, mgm_alg_from_wire(algorithm))?;
    let (_, mut yk) = open(serial, policy)?;
    authenticate(&mut yk, current)?;
    new_key
        .set_manual(&mut yk, require_touch)
        .map_err(other_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_of_the_wrong_length_is_refused_before_it_reaches_the_card() {
        assert!(check_pin_format(b"12345").is_err());
        assert!(check_pin_format(b"123456789").is_err());
        assert!(check_pin_format(b"123456").is_ok());
    }
}
