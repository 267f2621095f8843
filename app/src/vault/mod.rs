//! Kleidia's OpenBao layer on the shared client ([`kleidia_openbao`], on
//! vaultrs): the client built from `[openbao]` (address, TLS, machine login
//! with renewal), plus what only Kleidia knows: its layout (`layout`), its
//! KV helpers (`kv`) and `kleidia bootstrap` (`bootstrap`).
//!
//! The client's error keeps the causes callers branch on: sealed and down
//! (→ 503), permission denied, check-and-set conflicts.

pub mod bootstrap;
pub mod kv;
pub mod layout;

pub use kleidia_openbao::{Error as BaoError, Health as BaoHealth, OpenBao as Bao, RawAnswer};

use crate::config::OpenBaoConfig;

/// The client for `[openbao]`: its address, TLS trust and login method. With
/// a login method (token file, AppRole, JWT) a background task keeps the
/// token renewed and logs in again when OpenBao stops accepting it; nothing
/// is sent before the first call. Needs a Tokio runtime.
pub fn client(config: &OpenBaoConfig) -> Result<Bao, BaoError> {
    Bao::new(config.client_config())
}

/// A client for `[openbao]`'s address and TLS settings that makes only
/// unauthenticated calls (health, public CA files).
pub fn anonymous(config: &OpenBaoConfig) -> Result<Bao, BaoError> {
    let mut c = config.client_config();
    c.auth = kleidia_openbao::Auth::None;
    Bao::new(c)
}
