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
pub mod machine;

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

/// A new KV v2 mount on a server with persistent storage answers 400
/// "Upgrading from non-versioned to versioned data" for a moment after it is
/// mounted; wait (up to 30 s) until its `config` reads.
pub(crate) async fn wait_kv_upgraded(
    bao: &Bao,
    mount: &str,
    version: Option<&str>,
) -> Result<(), BaoError> {
    if version != Some("2") {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match bao.read(&format!("{mount}/config")).await {
            Err(BaoError::Other { message, .. })
                if message.contains("Upgrading") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            r => return r.map(|_| ()),
        }
    }
}
