//! Wire types shared by the Kleidia server (`app`), the workstation agent
//! (`agent`) and the license service (`license`). Each side serialises and
//! deserialises exactly these structs, so the two ends cannot drift apart.
//!
//! With the `config` feature, also the configuration loader that the server
//! and the license service share (`config`).

pub mod agent;
#[cfg(feature = "config")]
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod license;
pub mod ticket;

/// Default TCP port of the workstation agent (`127.0.0.1:56123`).
pub const AGENT_DEFAULT_PORT: u16 = 56123;

/// Default listen address of the Kleidia server in a one-machine setup.
pub const APP_DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Default listen address of the license service in a one-machine setup.
pub const LICENSE_DEFAULT_ADDR: &str = "127.0.0.1:8090";

/// Body of a JSON error response, the same shape from every Kleidia process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `ticket_expired`.
    pub error: String,
    /// Human-readable explanation, safe to show to the user.
    pub message: String,
}
