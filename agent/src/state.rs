//! Process state shared by the handlers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kleidia_protocol::agent::OperationParams;
use kleidia_protocol::ticket::{
    agent_key_fingerprint, params_hash, EncryptedSecret, TicketClaims, TicketError,
    TicketExpectation, TicketKeyResponse, TicketVerifyingKey, TICKET_KEY_PATH,
};
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::card::ReaderPolicy;
use crate::config::Config;
use crate::error::ApiError;
use crate::replay::{RecordError, ReplayStore};
use kleidia_protocol::agent::codes;

/// Size of the agent's ephemeral RSA key.
pub const AGENT_KEY_BITS: usize = 3072;

/// The agent's RSA key: generated at start, kept in memory only, never written.
pub struct AgentKey {
    private: RsaPrivateKey,
    pub public_pem: String,
    pub fingerprint: String,
}

impl AgentKey {
    pub fn generate() -> Result<Self> {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, AGENT_KEY_BITS)
            .context("generate the agent's RSA key")?;
        let public = RsaPublicKey::from(&private);
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .context("encode the agent's public key")?;
        let fingerprint = agent_key_fingerprint(&public).context("fingerprint the agent key")?;
        Ok(Self {
            private,
            public_pem,
            fingerprint,
        })
    }
}

/// The agent key while the agent starts: it listens at once and makes the
/// key in the background (an RSA-3072 prime search takes seconds on a busy
/// core); whatever needs the key waits for it.
#[derive(Clone)]
pub enum KeyState {
    Generating,
    Ready(Arc<AgentKey>),
    Failed,
}

#[derive(Default)]
pub struct Counters {
    pub decryptions: AtomicU64,
    pub tickets_accepted: AtomicU64,
    pub tickets_refused: AtomicU64,
}

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub port: u16,
    pub started_at: i64,
    key: tokio::sync::watch::Receiver<KeyState>,
    pub counters: Counters,
    ticket_key: OnceCell<TicketVerifyingKey>,
    replay: ReplayStore,
    busy: Mutex<HashSet<u32>>,
    /// Held for every PC/SC session (see `web::blocking`).
    pub card_lock: Arc<tokio::sync::Mutex<()>>,
    /// Reads of what a card says (`/piv/info`, `/piv/check-defaults`,
    /// `/discover`) queue here before `card_lock`, so that at most one read
    /// at a time waits for the card: an operation is never behind more than
    /// the read running and one queued (see `web::reading`).
    pub read_gate: Arc<tokio::sync::Mutex<()>>,
    http: reqwest::Client,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Marks a YubiKey busy until dropped.
pub struct BusyGuard {
    state: AppState,
    serial: u32,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.state.busy_set().remove(&self.serial);
    }
}

/// A ticket that checked out and has been recorded as used.
pub struct Authorized {
    pub claims: TicketClaims,
    /// The agent key the ticket was checked against.
    pub key: Arc<AgentKey>,
    /// Released when the card operation ends.
    pub guard: Option<BusyGuard>,
}

impl AppState {
    /// `key` tells when the agent key is ready (see [`KeyState`]).
    pub fn new(
        config: Config,
        port: u16,
        key: tokio::sync::watch::Receiver<KeyState>,
    ) -> Result<Self> {
        let started_at = now();
        let replay = ReplayStore::open(&config.state_dir, started_at)?;
        let ticket_key = match config.ticket_key {
            Some(k) => OnceCell::new_with(Some(k)),
            None => OnceCell::new(),
        };
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.kleidia_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).context("Kleidia CA file")? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().context("build HTTP client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                port,
                started_at,
                key,
                counters: Counters::default(),
                ticket_key,
                replay,
                busy: Mutex::new(HashSet::new()),
                card_lock: Arc::new(tokio::sync::Mutex::new(())),
                read_gate: Arc::new(tokio::sync::Mutex::new(())),
                http,
            }),
        })
    }

    pub fn reader_policy(&self) -> ReaderPolicy {
        ReaderPolicy {
            allow_virtual_readers: self.config.allow_virtual_readers,
        }
    }

    /// `starting` while the agent key is being made, then `ok` (or
    /// `failed`); never waits.
    pub fn key_status(&self) -> &'static str {
        match &*self.key.borrow() {
            KeyState::Generating => "starting",
            KeyState::Ready(_) => "ok",
            KeyState::Failed => "failed",
        }
    }

    /// The agent key, waiting while it is being made; 503 if making it failed.
    pub async fn key(&self) -> Result<Arc<AgentKey>, ApiError> {
        let mut rx = self.key.clone();
        let state = rx
            .wait_for(|k| !matches!(k, KeyState::Generating))
            .await
            .map(|k| k.clone());
        match state {
            Ok(KeyState::Ready(k)) => Ok(k),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::INTERNAL,
                "the agent could not make its key; restart the agent",
            )),
        }
    }

    pub fn ticket_key_loaded(&self) -> bool {
        self.ticket_key.initialized()
    }

    fn busy_set(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim a YubiKey for one operation; 409 while another one runs on it.
    pub fn claim(&self, serial: u32) -> Result<BusyGuard, ApiError> {
        if !self.busy_set().insert(serial) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::DEVICE_BUSY,
                format!("another operation is running on YubiKey {serial}; try again when it has finished"),
            ));
        }
        Ok(BusyGuard {
            state: self.clone(),
            serial,
        })
    }

    /// The ticket verification key: configured, or fetched once from the
    /// Kleidia server and pinned for the life of the process.
    async fn ticket_key(&self) -> Result<TicketVerifyingKey, ApiError> {
        self.ticket_key
            .get_or_try_init(|| async {
                let mut url = self.config.kleidia_url.clone();
                url.set_path(TICKET_KEY_PATH);
                url.set_query(None);
                let fetched = async {
                    let resp = self
                        .http
                        .get(url.clone())
                        .send()
                        .await?
                        .error_for_status()?;
                    resp.json::<TicketKeyResponse>().await
                }
                .await;
                let unavailable = |msg: String| {
                    tracing::warn!(%url, "ticket key unavailable: {msg}");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::TICKET_KEY_UNAVAILABLE,
                        "the agent could not get the ticket key from the Kleidia server; try again",
                    )
                };
                let body = fetched.map_err(|e| unavailable(e.to_string()))?;
                let key = TicketVerifyingKey::from_response(&body)
                    .map_err(|e| unavailable(e.to_string()))?;
                tracing::info!(key_id = %key.key_id(), "ticket key fetched and pinned");
                Ok(key)
            })
            .await
            .copied()
    }

    /// Check a ticket for `params`, claim the YubiKey and record the ticket as
    /// used. Nothing touches the card or decrypts before this succeeds.
    pub async fn authorize<P: OperationParams>(
        &self,
        ticket: &str,
        params: &P,
    ) -> Result<Authorized, ApiError> {
        let result = self.authorize_inner(ticket, params).await;
        match &result {
            Ok(a) => {
                self.counters
                    .tickets_accepted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    operation = P::OPERATION.as_str(),
                    serial = params.serial(),
                    ticket_id = %a.claims.id,
                    "ticket accepted"
                );
            }
            Err(e) => {
                self.counters
                    .tickets_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    operation = P::OPERATION.as_str(),
                    serial = params.serial(),
                    code = e.code,
                    "request refused"
                );
            }
        }
        result
    }

    async fn authorize_inner<P: OperationParams>(
        &self,
        ticket: &str,
        params: &P,
    ) -> Result<Authorized, ApiError> {
        let agent_key = self.key().await?;
        let key = self.ticket_key().await?;
        let claims = key.verify(ticket)?;
        // Before the other checks, so that a replay is reported as one even
        // after a restart (when the agent key no longer matches either).
        if self.replay.is_used(&claims.id) {
            return Err(TicketError::Replayed.into());
        }
        let hash = params_hash(params).map_err(|e| ApiError::internal("hash params", e))?;
        let now = now();
        claims.check(&TicketExpectation {
            operation: P::OPERATION,
            serial: params.serial(),
            agent_key_fingerprint: &agent_key.fingerprint,
            params_hash: &hash,
            now,
        })?;
        let guard = self.claim(params.serial())?;
        match self
            .replay
            .check_and_record(claims.id, claims.expires_at, now)
        {
            Ok(()) => {}
            Err(RecordError::Replayed) => return Err(TicketError::Replayed.into()),
            Err(RecordError::Io(e)) => return Err(ApiError::internal("record used ticket", e)),
        }
        Ok(Authorized {
            claims,
            key: agent_key,
            guard: Some(guard),
        })
    }

    /// Decrypt one secret with the agent key. Only called after `authorize`.
    pub fn decrypt(
        &self,
        proof: &Authorized,
        secret: &EncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        self.counters.decryptions.fetch_add(1, Ordering::Relaxed);
        secret.decrypt(&proof.key.private).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::DECRYPT_FAILED,
                "a secret could not be decrypted with this agent's key (was it encrypted to an earlier agent key?)",
            )
        })
    }

    pub fn decryptions(&self) -> u64 {
        self.counters.decryptions.load(Ordering::Relaxed)
    }
}
