//! Finding and opening YubiKeys among the PC/SC readers.

use kleidia_protocol::agent::DiscoveredYubiKey;
use yubikey::YubiKey;

use super::{other_err, CardError, ReaderPolicy};

/// Opened keys by reader name; whether a reader with a card failed with a
/// PC/SC error; whether a reader reported no card.
type Scan = (Vec<(String, YubiKey)>, bool, bool);

/// Every allowed YubiKey: (reader name, opened key), and whether some reader
/// holding a card could not be read just now (e.g. it was reset a moment ago
/// by the previous session, or another process holds a transaction).
fn open_all_once(policy: ReaderPolicy) -> Result<Scan, CardError> {
    let mut ctx = yubikey::reader::Context::open().map_err(other_err)?;
    let readers = match ctx.iter() {
        Ok(r) => r,
        Err(yubikey::Error::PcscError {
            inner: Some(pcsc::Error::NoReadersAvailable),
        }) => return Ok((Vec::new(), false, false)),
        Err(e) => return Err(other_err(e)),
    };
    let readers: Vec<_> = readers
        .into_iter()
        .filter(|r| policy.allows(&r.name()))
        .collect();
    let names: Vec<String> = readers.iter().map(|r| r.name().into_owned()).collect();
    let no_card = readers_without_card(&names);
    let mut out = Vec::new();
    let (mut transient, mut empty) = (false, false);
    for (reader, name) in readers.into_iter().zip(names) {
        if no_card.contains(&name) {
            empty = true;
            continue;
        }
        // Empty readers and non-PIV cards fail to open; they are simply not YubiKeys.
        match reader.open() {
            Ok(yk) => out.push((name, yk)),
            Err(e) => {
                tracing::debug!(reader = %name, error = %e, "reader not opened");
                match e {
                    yubikey::Error::PcscError {
                        inner: Some(pcsc::Error::NoSmartcard),
                    } => empty = true,
                    yubikey::Error::PcscError { .. } => transient = true,
                    _ => {}
                }
            }
        }
    }
    Ok((out, transient, empty))
}

/// The readers PC/SC reports empty right now. Opening an empty reader fails
/// anyway, and the `yubikey` crate logs an ERROR for each such failure, so
/// an idle agent with an empty reader filled its log on every scan. If the
/// status cannot be read, every reader is tried as before.
fn readers_without_card(names: &[String]) -> std::collections::HashSet<String> {
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return Default::default();
    };
    let mut states: Vec<pcsc::ReaderState> = names
        .iter()
        .filter_map(|n| std::ffi::CString::new(n.as_str()).ok())
        .map(|n| pcsc::ReaderState::new(n, pcsc::State::UNAWARE))
        .collect();
    if ctx
        .get_status_change(Some(std::time::Duration::ZERO), &mut states)
        .is_err()
    {
        return Default::default();
    }
    states
        .iter()
        .filter(|s| s.event_state().contains(pcsc::State::EMPTY))
        .map(|s| s.name().to_string_lossy().into_owned())
        .collect()
}

/// Tries after a transient PC/SC failure, and the pause before each retry.
const OPEN_RETRIES: u32 = 8;
const OPEN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(150);

/// Like [`open_all_once`], retrying for a moment while `done` is not yet
/// satisfied and a reader answered with a PC/SC error. With `empty_too`, a
/// reader reporting no card counts as such an answer too: vsmartcard's vpcd
/// reports its card absent for a moment after a reset.
fn open_all_until(
    policy: ReaderPolicy,
    empty_too: bool,
    done: impl Fn(&[(String, YubiKey)]) -> bool,
) -> Result<Vec<(String, YubiKey)>, CardError> {
    let mut attempt = 0;
    loop {
        let (all, transient, empty) = open_all_once(policy)?;
        let retry = transient || (empty_too && empty);
        if done(&all) || !retry || attempt >= OPEN_RETRIES {
            return Ok(all);
        }
        all.into_iter().for_each(|(_, yk)| release(yk));
        attempt += 1;
        std::thread::sleep(OPEN_RETRY_PAUSE);
    }
}

/// Disconnect without resetting the card. Only for sessions in which nothing
/// was authenticated; a session that verified a PIN or the management key is
/// dropped instead, which resets the card so no other program inherits it.
pub(super) fn release(yk: YubiKey) {
    let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
}

/// Open the YubiKey with `serial` among the allowed readers.
pub fn open(serial: u32, policy: ReaderPolicy) -> Result<(String, YubiKey), CardError> {
    let all = open_all_until(policy, true, |all| {
        all.iter().any(|(_, yk)| yk.serial().0 == serial)
    })?;
    if all.is_empty() {
        return Err(CardError::NoYubiKey);
    }
    let mut found = None;
    for (reader, yk) in all {
        if yk.serial().0 == serial && found.is_none() {
            found = Some((reader, yk));
        } else {
            release(yk);
        }
    }
    found.ok_or(CardError::NotFound(serial))
}

/// A failed exchange can look like a card refusal (the `yubikey` crate turns
/// some broken exchanges into "authentication error"), so when the key is
/// gone afterwards, say that instead of blaming the management key.
pub fn explain_failure(serial: u32, policy: ReaderPolicy, e: CardError) -> CardError {
    match e {
        CardError::WrongManagementKey | CardError::Card(_) | CardError::NotSupported(_) => {
            match open(serial, policy) {
                Ok((_, yk)) => {
                    release(yk);
                    e
                }
                Err(CardError::NoYubiKey | CardError::NotFound(_) | CardError::Removed) => {
                    CardError::Removed
                }
                Err(_) => e,
            }
        }
        e => e,
    }
}

pub fn discover(policy: ReaderPolicy) -> Result<Vec<DiscoveredYubiKey>, CardError> {
    let all = open_all_until(policy, false, |_| false)?;
    let mut out = Vec::new();
    for (reader, yk) in all {
        let serial = yk.serial().0;
        let firmware = yk.version().to_string();
        release(yk);
        out.push(DiscoveredYubiKey {
            serial,
            firmware,
            form_factor: form_factor(&reader),
            reader,
        });
    }
    out.sort_by_key(|k| k.serial);
    Ok(out)
}

/// The form factor from the management application's device info (`1D`),
/// which the `yubikey` crate parses but does not expose.
fn form_factor(reader: &str) -> Option<String> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).ok()?;
    let name = std::ffi::CString::new(reader).ok()?;
    let card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .ok()?;
    let mut buf = [0u8; 258];
    let select = [
        0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17,
    ];
    let r = card.transmit(&select, &mut buf).ok()?;
    if r.len() < 2 || r[r.len() - 2..] != [0x90, 0x00] {
        return None;
    }
    let r = card
        .transmit(&[0x00, 0x1D, 0x00, 0x00, 0x00], &mut buf)
        .ok()?;
    if r.len() < 3 || r[r.len() - 2..] != [0x90, 0x00] {
        return None;
    }
    let data = &r[1..r.len() - 2];
    let mut i = 0;
    while i + 2 <= data.len() {
        let (tag, len) = (data[i], data[i + 1] as usize);
        let value = data.get(i + 2..i + 2 + len)?;
        if tag == 0x04 && len == 1 {
            let _ = card.disconnect(pcsc::Disposition::LeaveCard);
            return Some(
                match value[0] & 0x0F {
                    1 => "usb_a_keychain",
                    2 => "usb_a_nano",
                    3 => "usb_c_keychain",
                    4 => "usb_c_nano",
                    5 => "usb_c_lightning",
                    6 => "usb_a_bio",
                    7 => "usb_c_bio",
                    _ => "unknown",
                }
                .to_string(),
            );
        }
        i += 2 + len;
    }
    None
}
