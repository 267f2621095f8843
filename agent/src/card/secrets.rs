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

/// What a settling change found; see [`kleidia_protocol::agent::Settled`].
pub use kleidia_protocol::agent::Settled;

/// A PIN or PUK is only probed with the new value when at least this many
/// tries are left, so a wrong probe alone can never block it.
const PROBE_MIN_TRIES: u8 = 2;

pub fn set_pin(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
    settle: bool,
) -> Result<Option<Settled>, CardError> {
    change(
        serial,
        policy,
        current,
        new,
        settle,
        Probe::Pin,
        |yk, current, new| yk.change_pin(current, new).map_err(pin_err),
    )
}

pub fn set_puk(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
    settle: bool,
) -> Result<Option<Settled>, CardError> {
    change(
        serial,
        policy,
        current,
        new,
        settle,
        Probe::Puk,
        |yk, current, new| yk.change_puk(current, new).map_err(puk_err),
    )
}

pub fn unblock_pin(
    serial: u32,
    policy: ReaderPolicy,
    puk: &[u8],
    new_pin: &[u8],
    settle: bool,
) -> Result<Option<Settled>, CardError> {
    change(
        serial,
        policy,
        puk,
        new_pin,
        settle,
        Probe::UnblockedPin,
        |yk, puk, new_pin| yk.unblock_pin(puk, new_pin).map_err(puk_err),
    )
}

/// How a settling change finds out whether the card already holds the new value.
#[derive(Clone, Copy)]
enum Probe {
    /// VERIFY the new PIN: a success resets the PIN's tries.
    Pin,
    /// CHANGE REFERENCE of the PUK from the new value to itself: a success
    /// resets the PUK's tries and changes nothing.
    Puk,
    /// After an unblock the new PIN verifies; a blocked PIN was not unblocked
    /// (nothing to try), and a wrong probe is undone by the unblock itself.
    UnblockedPin,
}

/// Whether the card already holds `new`, found out without leaving any
/// retry counter lower than it was: a successful probe restores the counter
/// it used, and a failed one is followed by the change, whose success
/// restores it too (DESIGN §8). Refuses (nothing tried) when a wrong probe
/// could block the credential.
fn holds_new_value(yk: &mut YubiKey, probe: Probe, new: &[u8]) -> Result<bool, CardError> {
    match probe {
        Probe::Pin | Probe::UnblockedPin => {
            // An empty VERIFY tells the tries left without trying a PIN.
            let left = yk.get_pin_retries().map_err(pin_err)?;
            if left == 0 {
                // Blocked: an applied change or unblock would have reset it.
                return Ok(false);
            }
            if left < PROBE_MIN_TRIES && matches!(probe, Probe::Pin) {
                return Err(CardError::CannotSettle("only one PIN try is left"));
            }
            probe_result(yk.verify_pin(new).map_err(pin_err))
        }
        Probe::Puk => {
            if !has_metadata(yk) {
                return Err(CardError::CannotSettle(
                    "this firmware cannot tell the PUK tries left without trying",
                ));
            }
            let puk =
                piv::metadata(yk, SlotId::Management(ManagementSlotId::Puk)).map_err(other_err)?;
            let left = puk.retries.map(|r| r.remaining_count).unwrap_or(0);
            if left == 0 {
                return Ok(false);
            }
            if left < PROBE_MIN_TRIES {
                return Err(CardError::CannotSettle("only one PUK try is left"));
            }
            probe_result(yk.change_puk(new, new).map_err(puk_err))
        }
    }
}

/// A refused probe means "not this value"; anything else is passed on.
fn probe_result(r: Result<(), CardError>) -> Result<bool, CardError> {
    match r {
        Ok(()) => Ok(true),
        Err(CardError::WrongPin(_) | CardError::WrongPuk(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A PIN or PUK change: both values checked here, then (when settling) the
/// probe for the new value, then `f` on the opened key.
fn change(
    serial: u32,
    policy: ReaderPolicy,
    proof: &[u8],
    new: &[u8],
    settle: bool,
    probe: Probe,
    f: impl FnOnce(&mut YubiKey, &[u8], &[u8]) -> Result<(), CardError>,
) -> Result<Option<Settled>, CardError> {
    check_pin_format(proof)?;
    check_pin_format(new)?;
    let (_, mut yk) = open(serial, policy)?;
    if settle && holds_new_value(&mut yk, probe, new)? {
        return Ok(Some(Settled::AlreadyApplied));
    }
    f(&mut yk, proof, new).map_err(sent_but_unanswered)?;
    Ok(settle.then_some(Settled::AppliedNow))
}

/// After the change command went out, only a refusal by the card is a
/// definite "not applied"; a broken connection or an odd answer leaves the
/// outcome open, and the server must keep the change to be settled.
fn sent_but_unanswered(e: CardError) -> CardError {
    match e {
        CardError::Removed | CardError::Card(_) | CardError::PcscUnavailable(_) => {
            CardError::OutcomeUnknown(e.to_string())
        }
        e => e,
    }
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
    settle: bool,
) -> Result<Option<Settled>, CardError> {
    let new_key = parse_mgm(new, mgm_alg_from_wire(algorithm))?;
    let (_, mut yk) = open(serial, policy)?;
    // A management key has no retry counter: trying the new one costs nothing.
    if settle && holds_new_mgm(&mut yk, new)? {
        return Ok(Some(Settled::AlreadyApplied));
    }
    authenticate(&mut yk, current)?;
    new_key
        .set_manual(&mut yk, require_touch)
        .map_err(other_err)
        .map_err(sent_but_unanswered)?;
    Ok(settle.then_some(Settled::AppliedNow))
}

/// Whether the card's management key is `new` (which may be of another
/// algorithm than the card's current key, if the rotation was not applied).
fn holds_new_mgm(yk: &mut YubiKey, new: &[u8]) -> Result<bool, CardError> {
    match authenticate(yk, new) {
        Ok(()) => Ok(true),
        Err(CardError::WrongManagementKey | CardError::InvalidSecret(_)) => Ok(false),
        Err(e) => Err(e),
    }
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
