//! Harness for the workstation agent: start `kleidia-agent` on a free port
//! with a test ticket key, sign tickets and encrypt secrets the way the
//! Kleidia server does (through `kleidia_protocol`), and call it as the
//! Kleidia page in the browser would (with the Kleidia `Origin`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kleidia_protocol::agent::{OperationParams, PubKey, SignedRequest};
use kleidia_protocol::ticket::{
    params_hash, parse_agent_public_key, EncryptedSecret, TicketClaims, TicketSigningKey,
};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ORIGIN};
use rsa::RsaPublicKey;
use serde::Serialize;

use crate::{bin_path, free_port, wait_until, ChildGuard};

/// The Kleidia URL the test agents are configured with (nothing listens there
/// unless a test starts something).
pub const TEST_KLEIDIA_URL: &str = "http://127.0.0.1:18080";

/// How to start an agent.
#[derive(Clone)]
pub struct AgentOptions {
    pub kleidia_url: String,
    /// `Some` = `--ticket-key`; `None` = the agent fetches it from the Kleidia URL.
    pub ticket_key: Option<[u8; 32]>,
    pub allow_virtual_readers: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            kleidia_url: TEST_KLEIDIA_URL.into(),
            ticket_key: Some([42; 32]),
            allow_virtual_readers: true,
        }
    }
}

pub struct TestAgent {
    pub port: u16,
    pub base: String,
    /// The Origin the agent accepts.
    pub origin: String,
    /// Signs tickets the agent accepts (the seed of `opts.ticket_key`).
    pub signer: TicketSigningKey,
    pub public_key: RsaPublicKey,
    pub fingerprint: String,
    pub http: reqwest::Client,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub opts: AgentOptions,
    pub proc: ChildGuard,
    _dir: Option<tempfile::TempDir>,
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl TestAgent {
    pub async fn spawn() -> Result<Self> {
        Self::spawn_with(AgentOptions::default()).await
    }

    pub async fn spawn_with(opts: AgentOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let state_dir = dir.path().join("state");
        let log = dir.path().join("agent.log");
        let mut me = Self::start(opts, free_port(), state_dir, log).await?;
        me._dir = Some(dir);
        Ok(me)
    }

    /// Start the agent binary; fails with its log if it does not come up.
    pub fn command(opts: &AgentOptions, port: u16, state_dir: &Path) -> Command {
        let mut cmd = Command::new(bin_path("kleidia-agent"));
        cmd.arg("--kleidia-url")
            .arg(&opts.kleidia_url)
            .arg("--port")
            .arg(port.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--allow-virtual-readers")
            .arg(opts.allow_virtual_readers.to_string())
            .arg("--log")
            .arg("debug")
            .env_remove("KLEIDIA_AGENT_CONFIG")
            .env_remove("KLEIDIA_AGENT_TICKET_KEY");
        if let Some(seed) = opts.ticket_key {
            let vk = TicketSigningKey::from_bytes(&seed).verifying_key();
            cmd.arg("--ticket-key").arg(vk.to_base64());
        }
        cmd
    }

    async fn start(
        opts: AgentOptions,
        port: u16,
        state_dir: PathBuf,
        log: PathBuf,
    ) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Self::command(&opts, port, &state_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start kleidia-agent")?;
        let mut proc = ChildGuard::new("kleidia-agent", child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let url = format!("{base}/health");
        let up = wait_until(Duration::from_secs(60), || {
            let http = http.clone();
            let url = url.clone();
            async move { matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        if !up {
            let exited = proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten();
            bail!(
                "kleidia-agent did not answer on {base} (exit: {exited:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let origin = reqwest::Url::parse(&opts.kleidia_url)?
            .origin()
            .ascii_serialization();
        let pk: PubKey = http
            .get(format!("{base}/pubkey"))
            .header(ORIGIN, &origin)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let (public_key, fingerprint) = parse_agent_public_key(&pk.public_key_pem)?;
        let signer = TicketSigningKey::from_bytes(&opts.ticket_key.unwrap_or([42; 32]));
        Ok(Self {
            port,
            base,
            origin,
            signer,
            public_key,
            fingerprint,
            http,
            state_dir,
            log,
            opts,
            proc,
            _dir: None,
        })
    }

    /// Stop the process and start a new one on the same port and state dir
    /// (a new RSA key, the same used-ticket file).
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        let dir = self._dir.take();
        let mut next = Self::start(
            self.opts.clone(),
            self.port,
            self.state_dir.clone(),
            self.log.clone(),
        )
        .await?;
        next._dir = dir;
        *self = next;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn origin_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.origin) {
            h.insert(ORIGIN, v);
        }
        h
    }

    /// GET as the Kleidia page.
    pub async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .get(self.url(path))
            .headers(self.origin_headers())
            .send()
            .await?)
    }

    /// POST JSON as the Kleidia page.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.url(path))
            .headers(self.origin_headers())
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await?)
    }

    /// Claims as the server would issue them for `params`, valid for 60 s.
    pub fn claims_for<P: OperationParams>(&self, params: &P) -> TicketClaims {
        let now = unix_now();
        TicketClaims {
            id: uuid::Uuid::new_v4(),
            operation: P::OPERATION,
            serial: params.serial(),
            agent_key_fingerprint: self.fingerprint.clone(),
            params_hash: params_hash(params).unwrap_or_default(),
            issued_at: now,
            expires_at: now + 60,
        }
    }

    pub fn ticket_for<P: OperationParams>(&self, params: &P) -> String {
        self.signer.sign(&self.claims_for(params))
    }

    pub fn signed<P: OperationParams + Clone>(&self, params: &P) -> SignedRequest<P> {
        SignedRequest {
            ticket: self.ticket_for(params),
            params: params.clone(),
        }
    }

    /// A secret encrypted to this agent's key, as the server sends it.
    pub fn encrypt(&self, secret: &[u8]) -> EncryptedSecret {
        EncryptedSecret::encrypt(&self.public_key, secret, &mut rand::thread_rng())
            .unwrap_or_else(|e| panic!("encrypt: {e}"))
    }

    /// POST the operation with a valid ticket.
    pub async fn run<P: OperationParams + Clone>(
        &self,
        path: &str,
        params: &P,
    ) -> Result<reqwest::Response> {
        self.post(path, &self.signed(params)).await
    }

    pub async fn decryptions(&self) -> Result<u64> {
        let h: kleidia_protocol::agent::Health = self.get("/health").await?.json().await?;
        Ok(h.decryptions)
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // A failing test shows what the agent logged.
        if std::thread::panicking() {
            eprintln!(
                "--- kleidia-agent log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
