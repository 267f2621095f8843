//! `Application::build(config)` → `.port()` → `.run_until_stopped()`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kleidia_openbao::OpenBao;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{Config, LogFormat};
use crate::keys;
use crate::service::{self, EffectiveTime};
use crate::store::{Installation, KvStore};
use crate::web::{self, AppState};

/// How long start-up keeps retrying while OpenBao is not reachable yet.
const OPENBAO_WAIT: Duration = Duration::from_secs(30);
/// How often the clock high-water mark is advanced in the background.
const CLOCK_TICK: Duration = Duration::from_secs(60);

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // vaultrs and rustify log request paths and bodies: off unless RUST_LOG names them.
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(kleidia_openbao::quiet_log_filter(&spec))
        .unwrap_or_else(|_| EnvFilter::new(kleidia_openbao::quiet_log_filter("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: a second call (tests) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
}

/// OpenBao down or sealed (worth waiting for at start-up), as opposed to refused.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<kleidia_openbao::Error>()
            .is_some_and(kleidia_openbao::Error::is_unavailable)
    })
}

impl Application {
    pub async fn build(config: Config) -> Result<Self> {
        let key = keys::vendor_key()?;
        if keys::VENDOR_PUBKEY_IS_TEST {
            tracing::warn!(
                "built with the TEST vendor key (license/keys/test-vendor.pub): anyone can sign licenses this build accepts; not for production"
            );
        }
        let test_start = config.test_start()?;
        if let Some(t) = test_start {
            tracing::warn!(test_now = %t, "TEST clock in use (KLEIDIA_LICENSE_TEST_NOW)");
        }
        let clock = Arc::new(Clock::new(test_start)?);
        let bao =
            OpenBao::new(config.openbao_client_config()?).context("building the OpenBao client")?;
        let store = KvStore::new(&bao, &config.openbao_mount);

        let deadline = Instant::now() + OPENBAO_WAIT;
        let installation = loop {
            let candidate = Installation {
                installation_id: uuid::Uuid::new_v4().to_string(),
                created_at: clock.unix(),
            };
            match store.installation(candidate).await {
                Ok(i) => break i,
                Err(e) if is_unreachable(&e) && Instant::now() < deadline => {
                    tracing::warn!(error = format!("{e:#}"), "waiting for OpenBao");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.context("read or create the installation id")),
            }
        };
        let now = clock.unix();
        let high_water = store
            .raise_clock(now)
            .await
            .context("update the clock high-water mark")?;
        let t = EffectiveTime::new(now, high_water);
        if t.rollback {
            tracing::warn!(
                clock = %service::fmt_time(now),
                latest_seen = %service::fmt_time(high_water),
                "system clock is behind the latest time seen; using the latest time"
            );
        }
        tracing::info!(
            installation_id = %installation.installation_id,
            trial_started = %service::fmt_time(installation.created_at),
            vendor_key = %keys::vendor_key_fingerprint(),
            "license service ready"
        );

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let state = AppState {
            store,
            key,
            installation: Arc::new(installation),
            clock,
            expiring_days: config.expiring_days,
            api_token: config.api_token.clone().map(Arc::new),
        };
        if state.api_token.is_none() {
            tracing::info!("no api_token configured: the API is open to whoever can reach it (restrict with a NetworkPolicy)");
        }
        Ok(Self {
            listener,
            state,
            grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn port(&self) -> Result<u16> {
        Ok(self.local_addr()?.port())
    }

    pub fn installation_id(&self) -> &str {
        &self.state.installation.installation_id
    }

    /// Serve until SIGTERM/SIGINT, then let in-flight requests finish for up
    /// to the grace period.
    pub async fn run_until_stopped(self) -> Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "listening");
        let ticker = tokio::spawn(advance_clock(self.state.clone()));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(self.listener, web::router(self.state)).with_graceful_shutdown(
            async move {
                let mut rx = rx;
                let _ = rx.wait_for(|stop| *stop).await;
            },
        );
        let server = std::future::IntoFuture::into_future(server);
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.context("HTTP server failed"),
            () = shutdown_signal() => {
                tracing::info!("shutting down");
                let _ = tx.send(true);
                match tokio::time::timeout(self.grace, &mut server).await {
                    Ok(r) => r.context("HTTP server failed"),
                    Err(_) => {
                        tracing::warn!("requests still running after the grace period; exiting");
                        Ok(())
                    }
                }
            }
        };
        ticker.abort();
        result
    }
}

/// Keep the high-water mark moving even when nobody asks for the status, so
/// a clock turned back while the app is idle is still caught.
async fn advance_clock(state: AppState) {
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.store.raise_clock(state.clock.unix()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not advance the clock high-water mark"
            );
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
