//! Returning the PIV application to its factory state, and the OATH
//! application with it.

use yubikey::YubiKey;

use kleidia_protocol::agent::OathWipe;

use super::oath::reset_oath;
use super::open::{open, release};
use super::{other_err, CardError, ReaderPolicy};

/// Values used to block the PIN and PUK before a reset. Policy-generated
/// PINs and PUKs are digits, so these control bytes can never be the real one;
/// two of them in case someone set one by hand.
const BLOCKERS: [[u8; 8]; 2] = [[0x00; 8], [0x01; 8]];

/// Kleidia's wipe: the PIV application back to factory state, then the
/// OATH application reset (every OATH account deleted), so the next person
/// gets none of the previous owner's one-time-password accounts. FIDO2
/// credentials need a reset within seconds of plugging the key in, with a
/// touch: no program can do that for a person (the device page says how).
pub fn reset(serial: u32, policy: ReaderPolicy) -> Result<OathWipe, CardError> {
    let (reader, mut yk) = open(serial, policy)?;
    // A PIV reset is only possible once both PIN and PUK are blocked.
    block(&mut yk, |yk, value| yk.verify_pin(value))?;
    block(&mut yk, |yk, value| yk.change_puk(value, value))?;
    yk.reset_device().map_err(|e| match e {
        yubikey::Error::GenericError => CardError::ResetRefused,
        e => other_err(e),
    })?;
    // Nothing was authenticated: let go of the card without resetting it.
    release(yk);
    reset_oath(&reader, serial)
}

/// Try the [`BLOCKERS`] until the card says the PIN (or PUK) is blocked.
fn block(
    yk: &mut YubiKey,
    attempt: impl Fn(&mut YubiKey, &[u8]) -> Result<(), yubikey::Error>,
) -> Result<(), CardError> {
    for value in BLOCKERS {
        for _ in 0..16 {
            match attempt(yk, &value) {
                // Someone set this value by hand: try the next one.
                Ok(()) => break,
                Err(yubikey::Error::WrongPin { tries: 0 } | yubikey::Error::PinLocked) => {
                    return Ok(())
                }
                Err(yubikey::Error::WrongPin { .. }) => {}
                Err(e) => return Err(other_err(e)),
            }
        }
    }
    Err(CardError::ResetRefused)
}
