//! Kleidia's one OpenBao client, on [vaultrs]: KV v2 with check-and-set,
//! PKI, health, and machine authentication (AppRole, Kubernetes JWT, token
//! file) with the token renewed in the background and a re-login when
//! OpenBao no longer accepts it. TLS through rustls with a private CA.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kleidia_openbao::Error> {
//! use kleidia_openbao::{Auth, Config, OpenBao};
//! let config = Config::new(
//!     "https://openbao.internal:8200".parse().expect("address"),
//!     Auth::AppRole {
//!         mount: "approle".into(),
//!         role_id_file: "/run/kleidia/role_id".into(),
//!         secret_id_file: "/run/kleidia/secret_id".into(),
//!     },
//! );
//! let bao = OpenBao::connect(config).await?;
//! let secret = bao.kv2("secret").read::<serde_json::Value>("kleidia/app").await?;
//! # Ok(()) }
//! ```
//!
//! Tokens are never logged: [`OpenBao`]'s and [`Auth`]'s `Debug` leave them
//! out and log lines name only the method and the TTL. vaultrs reports every
//! failed request at ERROR level under the `vaultrs` target (a 404 of an
//! absent secret included); the application's log filter should quiet it
//! (`vaultrs=off`): the errors reach the caller as [`Error`] anyway.

mod auth;
mod client;
mod config;
mod error;
mod kv2;
mod pki;
mod raw;
mod settings;
mod setup;

pub use client::OpenBao;
pub use config::{Auth, Config, Tls};
pub use error::Error;
pub use kv2::{Kv2, Metadata, VersionMetadata, Versioned};
pub use pki::{Pki, SignRequest, Signed};
pub use raw::{Health, RawAnswer};
pub use secrecy::SecretString;
pub use settings::{AuthMethod, AuthSettings, SERVICE_ACCOUNT_TOKEN_FILE};
pub use setup::{JwtRole, MountInfo, TokenInfo, TokenSpec};

/// The log targets of vaultrs and its request layer (rustify), which log
/// requests, answers and failures (and with them paths and bodies) at
/// various levels. Every error reaches the caller as [`Error`] anyway.
const CLIENT_LOG_TARGETS: &[&str] = &["vaultrs", "rustify"];

/// `spec` (an `EnvFilter` directive list such as `info` or `RUST_LOG`'s
/// value) with vaultrs' and rustify's logging turned off, unless `spec`
/// names them itself (then that setting stands, for debugging).
pub fn quiet_log_filter(spec: &str) -> String {
    let mut out = spec.trim().to_string();
    for target in CLIENT_LOG_TARGETS {
        let named = out
            .split(',')
            .any(|d| d.trim().split(['=', '[', ':']).next() == Some(target));
        if !named {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(target);
            out.push_str("=off");
        }
    }
    out
}

#[cfg(test)]
mod log_tests {
    #[test]
    fn client_logs_are_off_unless_asked_for() {
        assert_eq!(
            super::quiet_log_filter("info"),
            "info,vaultrs=off,rustify=off"
        );
        assert_eq!(
            super::quiet_log_filter("debug,vaultrs=debug"),
            "debug,vaultrs=debug,rustify=off"
        );
        assert_eq!(super::quiet_log_filter(""), "vaultrs=off,rustify=off");
    }
}
