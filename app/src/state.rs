//! Shared application state, cloned into every handler through `State`.

use std::sync::Arc;

use axum::extract::FromRef;
use kleidia_license_client::LicenseClient;
use sqlx::PgPool;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::config::Config;
use crate::fleet::context::FleetContext;
use crate::fleet::escrow::Escrow;
use crate::fleet::pki::Pki;
use crate::metrics::Metrics;
use crate::vault::Bao;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub bao: Bao,
    pub metrics: Arc<Metrics>,
    /// Argon2id behind a semaphore.
    pub passwords: Passwords,
    /// The shared HS256 key for API tokens (from OpenBao).
    pub jwt: Arc<JwtKeys>,
    /// Ticket signing key, attestation roots and the PKI document cache.
    pub fleet: Arc<FleetContext>,
    /// The license service's client: a short cache, TRIAL when unreachable.
    pub license: Arc<LicenseClient>,
    /// OIDC sign-in, when `oidc.issuer` is set.
    pub oidc: Option<Arc<crate::auth::oidc::Oidc>>,
    /// Who each recently seen session is, for `session.cache_secs`.
    pub sessions: Arc<crate::auth::session_cache::SessionCache>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}

impl FromRef<AppState> for PgPool {
    fn from_ref(s: &AppState) -> Self {
        s.db.clone()
    }
}

impl FromRef<AppState> for Bao {
    fn from_ref(s: &AppState) -> Self {
        s.bao.clone()
    }
}

impl AppState {
    /// The escrow of device secrets (OpenBao KV).
    pub fn escrow(&self) -> Escrow<'_> {
        Escrow {
            bao: &self.bao,
            mount: &self.config.openbao.kv_mount,
        }
    }

    /// The issuing CA (OpenBao PKI).
    pub fn pki(&self) -> Pki<'_> {
        Pki {
            bao: &self.bao,
            mount: &self.config.openbao.pki_mount,
            cache: &self.fleet.pki_cache,
        }
    }
}
