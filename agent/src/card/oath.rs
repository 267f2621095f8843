//! Resetting the OATH application (Yubico's YKOATH) as part of a wipe: the
//! `yubikey` crate only speaks PIV, so this goes through PC/SC directly, in
//! one transaction that first checks the card's serial (through PIV), so
//! the reset can only hit the key the ticket names.

use kleidia_protocol::agent::OathWipe;

use super::{map_pcsc, CardError};

const AID_PIV: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];
const AID_OATH: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
/// YubiKey PIV GET SERIAL (firmware 5).
const INS_GET_SERIAL: u8 = 0xF8;
/// YKOATH RESET, confirmed by P1 P2 = DE AD.
const OATH_RESET: [u8; 4] = [0x00, 0x04, 0xDE, 0xAD];
const SW_OK: u16 = 0x9000;
const SW_NOT_FOUND: u16 = 0x6A82;

fn apdu(ins: u8, p1: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, ins, p1, 0x00];
    if !data.is_empty() {
        out.push(data.len() as u8);
        out.extend_from_slice(data);
    }
    out
}

/// One exchange: response data and status word.
fn exchange(card: &pcsc::Card, cmd: &[u8]) -> Result<(Vec<u8>, u16), CardError> {
    let mut buf = [0u8; 258];
    let r = card.transmit(cmd, &mut buf).map_err(map_pcsc)?;
    let Some(split) = r.len().checked_sub(2) else {
        return Err(CardError::Card(
            "the YubiKey sent an answer without a status word".into(),
        ));
    };
    let sw = u16::from_be_bytes([r[split], r[split + 1]]);
    Ok((r[..split].to_vec(), sw))
}

/// Reset the OATH application of the key with `serial` in `reader`: every
/// OATH account is deleted. A key without the OATH application is not an
/// error: there is nothing to delete, and the answer says so.
pub fn reset_oath(reader: &str, serial: u32) -> Result<OathWipe, CardError> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(map_pcsc)?;
    let name = std::ffi::CString::new(reader)
        .map_err(|_| CardError::Invalid("reader name with a NUL byte".into()))?;
    let mut card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .map_err(map_pcsc)?;
    let result = {
        let tx = card.transaction().map_err(map_pcsc)?;
        reset_in(&tx, serial)
    };
    let _ = card.disconnect(pcsc::Disposition::LeaveCard);
    result
}

fn reset_in(tx: &pcsc::Card, serial: u32) -> Result<OathWipe, CardError> {
    // The same key as the PIV reset a moment ago, not one swapped in since.
    let (_, sw) = exchange(tx, &apdu(0xA4, 0x04, &AID_PIV))?;
    if sw != SW_OK {
        return Err(CardError::Card(format!(
            "selecting PIV to check the serial answered {sw:04X}"
        )));
    }
    let (data, sw) = exchange(tx, &apdu(INS_GET_SERIAL, 0, &[]))?;
    let found = <[u8; 4]>::try_from(&data[..]).ok().map(u32::from_be_bytes);
    if sw != SW_OK || found.is_none() {
        return Err(CardError::Card(format!(
            "reading the serial before the OATH reset answered {sw:04X}"
        )));
    }
    if found != Some(serial) {
        return Err(CardError::NotFound(serial));
    }
    let (_, sw) = exchange(tx, &apdu(0xA4, 0x04, &AID_OATH))?;
    match sw {
        SW_OK => {}
        // No OATH application (disabled, or none in this firmware).
        SW_NOT_FOUND => return Ok(OathWipe::NotPresent),
        sw => {
            return Err(CardError::Card(format!(
            "the PIV application was reset, but selecting the OATH application answered {sw:04X}"
        )))
        }
    }
    let (_, sw) = exchange(tx, &OATH_RESET)?;
    if sw != SW_OK {
        return Err(CardError::Card(format!(
            "the PIV application was reset, but the OATH application refused its reset ({sw:04X})"
        )));
    }
    Ok(OathWipe::Reset)
}
