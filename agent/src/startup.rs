//! Build the application (key, state, listeners) and run it.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::{AgentKey, AppState, KeyState};

pub struct Application {
    port: u16,
    listeners: Vec<TcpListener>,
    state: AppState,
}

impl Application {
    /// Open the used-ticket store, bind 127.0.0.1 and [::1] (never any
    /// other address; see [`bind_loopback`]) and start making the agent key
    /// in the background: the agent answers at once (`/health` says
    /// `starting`), and whatever needs the key waits for it.
    pub async fn build(config: Config) -> Result<Self> {
        let (port, listeners) = bind_loopback(config.port).await?;
        let (key_tx, key_rx) = tokio::sync::watch::channel(KeyState::Generating);
        let state = AppState::new(config, port, key_rx)?;
        // A thread of its own that ends with the key, rather than tokio's
        // blocking pool, whose idle thread would wake up ten seconds later
        // to exit (the agent is meant to be silent when idle: `make bench`).
        let keygen = std::thread::Builder::new().name("agent-key".into());
        keygen
            .spawn(move || {
                let state = match AgentKey::generate() {
                    Ok(k) => {
                        tracing::info!(agent_key = %k.fingerprint, "agent key ready");
                        KeyState::Ready(std::sync::Arc::new(k))
                    }
                    Err(e) => {
                        tracing::error!("the agent key could not be made: {e:#}");
                        KeyState::Failed
                    }
                };
                key_tx.send_replace(state);
            })
            .context("start the thread that makes the agent key")?;
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

/// How many free ports to try for `--port 0` when the one 127.0.0.1 gave
/// is taken on [::1].
const ANY_PORT_ATTEMPTS: usize = 8;

/// Bind 127.0.0.1 and [::1] on `port` (0: any port free on both).
///
/// Either address taken is fatal, whoever holds it: a process on
/// `[::1]:PORT` would otherwise receive the page's requests to
/// `localhost:PORT` (issue 14 §8). A host without an IPv6 loopback
/// (no `::1`, or IPv6 disabled) is not "taken": the agent logs it and
/// serves on 127.0.0.1 alone, which is the address the page uses.
pub async fn bind_loopback(port: u16) -> Result<(u16, Vec<TcpListener>)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| bind_error("127.0.0.1", port, &e))?;
        let bound = v4.local_addr()?.port();
        match TcpListener::bind((Ipv6Addr::LOCALHOST, bound)).await {
            Ok(v6) => return Ok((bound, vec![v4, v6])),
            Err(e) if ipv6_loopback_missing(&e) => {
                tracing::warn!(
                    error = %e,
                    "this host has no IPv6 loopback: not listening on [::1]:{bound}, serving on 127.0.0.1:{bound} only"
                );
                return Ok((bound, vec![v4]));
            }
            // `--port 0`: 127.0.0.1 gave a port that is taken on [::1]; another one.
            Err(e)
                if port == 0 && attempt < ANY_PORT_ATTEMPTS && e.kind() == ErrorKind::AddrInUse => {
            }
            Err(e) => return Err(bind_error("[::1]", bound, &e)),
        }
    }
}

/// No `::1` on this host: the address is not configured (EADDRNOTAVAIL)
/// or IPv6 is off altogether (EAFNOSUPPORT).
fn ipv6_loopback_missing(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

#[cfg(target_os = "macos")]
const EAFNOSUPPORT: i32 = 47;
#[cfg(not(target_os = "macos"))]
const EAFNOSUPPORT: i32 = 97;

fn bind_error(addr: &str, port: u16, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "{addr}:{port} is already in use by another process; refusing to start, \
             because whatever listens there would receive the Kleidia page's requests \
             (stop it, or choose another --port and tell Kleidia)"
        )
    } else {
        anyhow::anyhow!("listen on {addr}:{port}: {e}")
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
