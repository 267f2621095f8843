//! Building and running the server: `Application::build(config)` connects to
//! PostgreSQL (and applies migrations), prepares the OpenBao client and binds
//! the listener (HTTPS with `server.tls_cert_file`, see [`tls`]);
//! `run_until_stopped` serves until SIGTERM/SIGINT and then drains in-flight
//! requests for the configured grace period.

mod tls;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::audit::anchor::{self, AnchorStore};
use crate::auth::jwt::{self, JwtKeys};
use crate::auth::password::Passwords;
use crate::config::Config;
use crate::fleet::attestation::AttestationRoots;
use crate::fleet::context::FleetContext;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::vault::Bao;
use crate::{db, fleet, web};

pub struct Application {
    listener: TcpListener,
    /// HTTPS on `listener` with these files, or plain HTTP.
    tls: Option<tls::TlsFiles>,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::roles::connect_and_migrate(&config.database).await?;
        let bao = crate::vault::client(&config.openbao).context("building the OpenBao client")?;
        let jwt_secret = load_jwt_secret(&bao, &config).await?;
        let jwt = JwtKeys::new(
            &jwt_secret,
            config.jwt_issuer(),
            config.auth.jwt_audience.clone(),
            Duration::from_secs(config.auth.jwt_ttl_secs),
        );
        let passwords = Passwords::new(config.auth.hash_concurrency)
            .await
            .map_err(|e| anyhow::anyhow!("preparing password hashing: {e}"))?
            .with_queue(config.auth.hash_queue);
        let ticket_key = fleet::context::load_ticket_key(&bao, &config.openbao.app_mount).await?;
        let roots = match &config.attestation.roots_file {
            Some(p) => {
                let pem = std::fs::read_to_string(p)
                    .with_context(|| format!("attestation.roots_file {}", p.display()))?;
                AttestationRoots::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("attestation.roots_file {}: {e}", p.display()))?
            }
            None => AttestationRoots::yubico()
                .map_err(|e| anyhow::anyhow!("built-in Yubico attestation roots: {e}"))?,
        };
        tracing::info!(cas = %roots.summary(), "trusted PIV attestation CAs");
        let license = crate::licensing::client(&config)?;
        crate::licensing::keep_last_verified(&license, &db).await;
        let tls = match (&config.server.tls_cert_file, &config.server.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::TlsFiles::load(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let oidc = if config.oidc.enabled() {
            let key = crate::auth::oidc::load_key(&bao, &config.openbao.app_mount)
                .await
                .context("reading the OIDC sealing key from OpenBao")?;
            crate::auth::oidc::Oidc::new(&config, &key)?.map(Arc::new)
        } else {
            None
        };
        let sessions = Arc::new(crate::auth::session_cache::SessionCache::new(
            std::time::Duration::from_secs(config.session.cache_secs),
        ));
        let fleet = Arc::new(
            FleetContext::new(ticket_key, roots)
                .with_ticket_lifetime(config.operations.ticket_lifetime_secs),
        );
        let state = AppState {
            sessions,
            config: Arc::new(config),
            db,
            bao,
            metrics: Arc::new(Metrics::new()),
            passwords,
            jwt: Arc::new(jwt),
            fleet,
            license,
            oidc,
        };
        Ok(Self {
            listener,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_secs);
        let app = web::router(self.state.clone());
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutdown requested; finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let server: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match self.tls {
            None => Box::pin(
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .into_future(),
            ),
            Some(files) => {
                tracing::info!("serving HTTPS; SIGHUP reloads the certificate and key");
                // `tap_io` only so that axum hands the peer address to
                // `ConnectInfo<SocketAddr>` as it does for a TcpListener.
                let listener = files.listen(self.listener)?.tap_io(|_| {});
                Box::pin(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .into_future(),
                )
            }
        };
        let pool = self.state.db.clone();
        let sweeper = tokio::spawn(sweep(self.state.clone()));
        // s5-bench: CRL rebuilds after revocations, one at a time (and one now).
        let crl_state = self.state.clone();
        let crl_rebuilds =
            tokio::spawn(async move { crate::fleet::pki::run_crl_rebuilds(crl_state.pki()).await });
        let anchor_store = AnchorStore::new(self.state.bao.clone(), &self.state.config.openbao);
        let anchorer = tokio::spawn(anchor::run(
            pool.clone(),
            anchor_store.clone(),
            self.state.config.audit.clone(),
        ));
        let oidc_rechecks = self
            .state
            .oidc
            .clone()
            .map(|o| tokio::spawn(crate::auth::oidc::run_rechecks(o, pool.clone())));
        // s5-faults: close operations whose ticket expired with no result.
        let expiry = tokio::spawn(crate::fleet::operations::expiry::run(
            pool.clone(),
            self.state.config.operations.clone(),
        ));
        // s4-fleet: expiry notices on their schedule.
        let notices = self.state.config.notices.enabled.then(|| {
            tokio::spawn(crate::fleet::notices::run(
                pool.clone(),
                self.state.config.clone(),
            ))
        });
        tokio::select! {
            res = server => res.context("HTTP server failed")?,
            _ = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => tracing::warn!(?grace, "grace period over; closing remaining connections"),
        }
        sweeper.abort();
        crl_rebuilds.abort();
        anchorer.abort();
        expiry.abort();
        // A revocation whose CRL rebuild has not run yet gets it now.
        let pki = self.state.pki();
        let last_crl = pki.rebuild_crl_if_wanted();
        match tokio::time::timeout(self.state.config.openbao_timeout() * 2, last_crl).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "CRL rebuild at shutdown failed"),
            Err(_) => tracing::warn!("CRL rebuild at shutdown timed out"),
        }
        if let Some(t) = oidc_rechecks {
            t.abort();
        }
        if let Some(n) = notices {
            n.abort();
        }
        // The last events of this replica get anchored before it goes.
        let last_anchor = anchor::anchor_logged(&pool, &anchor_store);
        if tokio::time::timeout(self.state.config.openbao_timeout() * 2, last_anchor)
            .await
            .is_err()
        {
            tracing::warn!("anchoring the audit log at shutdown timed out");
        }
        pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The JWT key from OpenBao (created on the very first start), retried for
/// `database.connect_retry_secs` so OpenBao may start a little after the app.
async fn load_jwt_secret(bao: &Bao, config: &Config) -> anyhow::Result<Vec<u8>> {
    let deadline =
        std::time::Instant::now() + Duration::from_secs(config.database.connect_retry_secs);
    loop {
        match jwt::load_or_create_secret(bao, &config.openbao.app_mount).await {
            Ok(k) => return Ok(k),
            Err(e) if e.is_unavailable() && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "OpenBao not ready for the JWT key yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the JWT signing key at {}/data/{}",
                        config.openbao.app_mount,
                        jwt::KEY_PATH
                    )
                })
            }
        }
    }
}

/// Deletes expired sessions (and with them their agent keys) and stale
/// throttling counters every minute.
async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match crate::db::sessions::delete_expired(&state.db).await {
            Ok(n) if n > 0 => tracing::info!(sessions = n, "expired sessions removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "removing expired sessions failed"),
        }
        if let Err(e) = crate::auth::throttle::delete_stale(&state.db, &state.config.throttle).await
        {
            tracing::warn!(error = %e, "removing stale sign-in counters failed");
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
