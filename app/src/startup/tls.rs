//! HTTPS on Kleidia's own listener (`server.tls_cert_file` and
//! `server.tls_key_file`), for sites without a load balancer in front: rustls
//! with the workspace's one crypto provider (ring). SIGHUP reloads the two
//! files; new connections get the new pair, and a pair that does not load
//! (unreadable, not PEM, a key that is not the certificate's) is logged and
//! the old one keeps serving.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::Listener;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and key files, and the rustls configuration last
/// loaded from them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl TlsFiles {
    /// Load both files (at start: a bad pair stops the server).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            config: server_config(cert, key)?,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// `listener` speaking TLS with these files, reloaded on SIGHUP.
    pub fn listen(self, listener: TcpListener) -> anyhow::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (config_tx, config_rx) = watch::channel(self.config.clone());
        let (conn_tx, conn_rx) = mpsc::channel(64);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        let (cert, key) = (self.cert, self.key);
        let reload = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match server_config(&cert, &key) {
                    Ok(c) => {
                        let _ = config_tx.send(c);
                        tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate and key reloaded");
                    }
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "SIGHUP: TLS certificate and key NOT reloaded; the previous pair keeps serving"
                    ),
                }
            }
        });
        let accept = tokio::spawn(accept_loop(listener, config_rx, conn_tx));
        Ok(TlsListener {
            conns: conn_rx,
            local,
            tasks: [reload, accept],
        })
    }
}

/// The server configuration for a PEM certificate chain (leaf first) and
/// its PEM private key.
fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls_cert_file {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "server.tls_cert_file {} holds no certificate",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls_key_file {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "server.tls_key_file {} does not go with server.tls_cert_file {}",
                key.display(),
                cert.display()
            )
        })?;
    // axum serves HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and hands each to its own handshake task, so a
/// slow client never holds up the others; finished handshakes go to `conns`.
async fn accept_loop(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    conns: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, as axum does.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(config.borrow().clone());
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Connections that finished their TLS handshake, for `axum::serve`.
pub struct TlsListener {
    conns: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.conns.recv().await {
            Some(c) => c,
            // The accept loop never ends on its own.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
