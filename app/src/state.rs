//! Shared application state, cloned into every handler through `State`.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::vault::Bao;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub bao: Bao,
    pub metrics: Arc<Metrics>,
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
