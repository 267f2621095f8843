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
mod setup;

pub use client::OpenBao;
pub use config::{Auth, Config, Tls};
pub use error::Error;
pub use kv2::{Kv2, Metadata, VersionMetadata, Versioned};
pub use pki::{Pki, SignRequest, Signed};
pub use raw::Health;
pub use secrecy::SecretString;
pub use setup::{JwtRole, MountInfo, TokenInfo, TokenSpec};
