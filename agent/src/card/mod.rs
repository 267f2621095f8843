//! Blocking YubiKey operations through PC/SC and the `yubikey` crate. Callers
//! run these in `spawn_blocking`. Secrets come in as bytes that the caller
//! zeroizes; nothing here logs them.

#[doc(hidden)]
pub mod fuzzing;
mod info;
mod keys;
mod oath;
mod open;
mod presence;
mod reset;
mod secrets;
mod wire;

pub use info::{check_defaults, info};
pub use keys::{attest, generate_csr, import_certificate, CsrRequest, CsrResult};
pub use open::{discover, explain_failure, open};
pub use presence::{prove_presence, Presence};
pub use reset::reset;
pub use secrets::{rotate_management_key, set_pin, set_puk, unblock_pin, Settled};

use kleidia_protocol::agent::PivSlot;
use yubikey::YubiKey;

/// Which PC/SC readers may hold a YubiKey we use.
#[derive(Debug, Clone, Copy)]
pub struct ReaderPolicy {
    pub allow_virtual_readers: bool,
}

impl ReaderPolicy {
    /// Real YubiKeys show up as "Yubico YubiKey …" readers. vsmartcard's
    /// `Virtual PCD` readers accept a card from anything that reaches their
    /// TCP port, so they are only used when explicitly allowed.
    pub fn allows(&self, reader: &str) -> bool {
        let lower = reader.to_ascii_lowercase();
        if lower.contains("yubico") || lower.contains("yubikey") {
            return true;
        }
        self.allow_virtual_readers && reader.starts_with("Virtual PCD")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("the PC/SC service is not available ({0}); is pcscd running?")]
    PcscUnavailable(String),
    #[error("no YubiKey is connected")]
    NoYubiKey,
    #[error("no YubiKey with serial {0} is connected")]
    NotFound(u32),
    #[error("the YubiKey was removed during the operation")]
    Removed,
    #[error("wrong PIN; {0} attempts left")]
    WrongPin(u8),
    #[error("the PIN is blocked; unblock it with the PUK")]
    PinBlocked,
    #[error("wrong PUK; {0} attempts left")]
    WrongPuk(u8),
    #[error("the PUK is blocked; only a PIV reset helps now")]
    PukBlocked,
    #[error("wrong management key")]
    WrongManagementKey,
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not supported by this YubiKey: {0}")]
    NotSupported(&'static str),
    #[error("slot {0} holds no key")]
    EmptySlot(PivSlot),
    #[error("the certificate's public key is not the key in that slot")]
    CertificateMismatch,
    #[error("the YubiKey holds no presence key in slot 95; it was reset or enrolled before presence keys existed")]
    NoPresenceKey,
    #[error("the YubiKey refused the reset")]
    ResetRefused,
    #[error("the YubiKey reported an error: {0}")]
    Card(String),
    /// The change command went to the card, its answer did not come back.
    #[error("the change was sent to the YubiKey but its answer was lost ({0}); it may or may not have been applied")]
    OutcomeUnknown(String),
    #[error("cannot tell which value the YubiKey holds without risking a block: {0}")]
    CannotSettle(&'static str),
}

/// What a credential failure means depends on what was being checked.
#[derive(Clone, Copy)]
enum Ctx {
    Pin,
    Puk,
    Mgm,
    Other,
}

fn map_err(e: yubikey::Error, ctx: Ctx) -> CardError {
    use yubikey::Error as E;
    match e {
        E::PcscError { inner: Some(p) } => map_pcsc(p),
        E::PcscError { inner: None } => CardError::Card("PC/SC error".into()),
        E::WrongPin { tries } => match ctx {
            Ctx::Puk if tries == 0 => CardError::PukBlocked,
            Ctx::Puk => CardError::WrongPuk(tries),
            _ if tries == 0 => CardError::PinBlocked,
            _ => CardError::WrongPin(tries),
        },
        E::PinLocked => match ctx {
            Ctx::Puk => CardError::PukBlocked,
            _ => CardError::PinBlocked,
        },
        E::AuthenticationError if matches!(ctx, Ctx::Mgm) => CardError::WrongManagementKey,
        E::NotSupported => CardError::NotSupported("the card refused the command as unsupported"),
        other => CardError::Card(other.to_string()),
    }
}

fn map_pcsc(p: pcsc::Error) -> CardError {
    use pcsc::Error as P;
    match p {
        P::RemovedCard
        | P::ResetCard
        | P::NoSmartcard
        | P::ReaderUnavailable
        | P::UnpoweredCard
        | P::UnresponsiveCard => CardError::Removed,
        P::NoReadersAvailable => CardError::NoYubiKey,
        P::NoService | P::ServiceStopped => CardError::PcscUnavailable(p.to_string()),
        other => CardError::Card(other.to_string()),
    }
}

fn pin_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Pin)
}
fn puk_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Puk)
}
fn mgm_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Mgm)
}
fn other_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Other)
}

/// Firmware 5.3 and later answer GET METADATA for slots, PIN, PUK and management key.
fn has_metadata(yk: &YubiKey) -> bool {
    let v = yk.version();
    (v.major, v.minor) >= (5, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yubikey_readers_are_used_unless_virtual_readers_are_allowed() {
        let strict = ReaderPolicy {
            allow_virtual_readers: false,
        };
        let lax = ReaderPolicy {
            allow_virtual_readers: true,
        };
        assert!(strict.allows("Yubico YubiKey OTP+FIDO+CCID 00 00"));
        assert!(!strict.allows("Virtual PCD 00 00"));
        assert!(!strict.allows("Alcor Micro AU9540 00 00"));
        assert!(lax.allows("Virtual PCD 00 01"));
        assert!(!lax.allows("Alcor Micro AU9540 00 00"));
    }

    #[test]
    fn a_wrong_pin_and_a_wrong_puk_are_told_apart_and_zero_tries_means_blocked() {
        assert_eq!(
            pin_err(yubikey::Error::WrongPin { tries: 2 }),
            CardError::WrongPin(2)
        );
        assert_eq!(
            puk_err(yubikey::Error::WrongPin { tries: 2 }),
            CardError::WrongPuk(2)
        );
        assert_eq!(
            pin_err(yubikey::Error::WrongPin { tries: 0 }),
            CardError::PinBlocked
        );
        assert_eq!(puk_err(yubikey::Error::PinLocked), CardError::PukBlocked);
        assert_eq!(
            mgm_err(yubikey::Error::AuthenticationError),
            CardError::WrongManagementKey
        );
        assert_eq!(
            other_err(yubikey::Error::PcscError {
                inner: Some(pcsc::Error::RemovedCard)
            }),
            CardError::Removed
        );
    }
}
