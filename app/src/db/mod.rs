//! PostgreSQL: pool construction with start-up retries, and migrations.

pub mod oidc;
pub mod roles;
pub mod sessions;
pub mod users;

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub fn connect_options(cfg: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    // The parse error could echo the URL (and its password): keep it out.
    PgConnectOptions::from_str(cfg.url.expose_secret())
        .map_err(|_| anyhow::anyhow!("database.url is not a valid PostgreSQL URL"))
}

/// Connect, retrying for `connect_retry_secs` so that a database that starts
/// a little after the app does not fail the deployment.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let opts = connect_options(cfg)?;
    let deadline = Instant::now() + Duration::from_secs(cfg.connect_retry_secs);
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(cfg.acquire_timeout_secs.max(1)))
            .connect_with(opts.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("cannot connect to PostgreSQL"),
        }
    }
}

/// Apply pending migrations; a runtime role that does not own the schema
/// only checks that none are pending (see [`roles`]).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    if !roles::may_migrate(pool).await? {
        return roles::check_applied(pool).await;
    }
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")?;
    Ok(())
}
