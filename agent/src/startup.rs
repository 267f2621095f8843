//! Build the application (key, state, listeners) and run it.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::{AgentKey, AppState};

pub struct Application {
    port: u16,
    listeners: Vec<TcpListener>,
    state: AppState,
}

impl Application {
    /// Generate the agent key, open the used-ticket store and bind
    /// 127.0.0.1 and [::1] (never any other address).
    pub async fn build(config: Config) -> Result<Self> {
        let key = tokio::task::spawn_blocking(AgentKey::generate)
            .await
            .context("key generation task")??;
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))
            .await
            .with_context(|| format!("listen on 127.0.0.1:{}", config.port))?;
        let port = v4.local_addr()?.port();
        let mut listeners = vec![v4];
        match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
            Ok(l) => listeners.push(l),
            // Hosts without IPv6 loopback still work through 127.0.0.1.
            Err(e) => tracing::warn!(error = %e, "not listening on [::1]:{port}"),
        }
        let state = AppState::new(config, port, key)?;
        Ok(Self {
            port,
            listeners,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> Result<()> {
        let router = crate::web::router(self.state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for l in self.listeners {
            let mut rx = stop_rx.clone();
            let router = router.clone();
            tasks.push(tokio::spawn(async move {
                axum::serve(l, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await
            }));
        }
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        for t in tasks {
            t.await.context("server task")?.context("server")?;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
