//! A software YubiKey 5 (PIV and OATH applets and enough of the management
//! application for `ykman info`) that plugs into pcscd through vsmartcard's
//! vpcd reader driver. For tests and the demo only: vpcd listens on all
//! interfaces, so anything that reaches its port can insert a card.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apdu;
pub mod attest;
pub mod card;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod oath;
pub mod piv;
pub mod run;
pub mod state;
pub mod tlv;
pub mod vpcd;
