//! Harness for the workstation agent: start `kleidia-agent` on a free port
//! with a test ticket key, sign tickets and encrypt secrets the way the
//! Kleidia server does (through `kleidia_protocol`), and call it as the
//! Kleidia page in the browser would (with the Kleidia `Origin`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use kleidia_protocol::agent::{
    AgentErrorBody, CheckDefaults, Discover, GenerateCsrParams, Health, KeyAlgorithm,
    OperationParams, PinPolicy, PivInfo, PivSlot, PubKey, SetPinParams, SignedRequest, SystemInfo,
    TouchPolicy, WellKnown,
};
use kleidia_protocol::ticket::{
    params_hash, parse_agent_public_key, EncryptedSecret, TicketClaims, TicketSigningKey,
};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ORIGIN};
use rsa::RsaPublicKey;
use serde::Serialize;

use crate::card::{default_mgm_hex, pin_retries, VirtualYubiKey, DEFAULT_PIN};
use crate::{bin_path, free_port, read_log, unix_now, ChildGuard};

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

    /// The agent's command line for `opts`, `port` and `state_dir`.
    pub fn command(opts: &AgentOptions, port: u16, state_dir: &Path) -> Command {
        Self::command_of(&bin_path("kleidia-agent"), "debug", opts, port, state_dir)
    }

    /// [`command`](Self::command) for the agent binary `bin`, logging at
    /// `log` (the bench measures the release build at the default `info`).
    pub fn command_of(
        bin: &Path,
        log: &str,
        opts: &AgentOptions,
        port: u16,
        state_dir: &Path,
    ) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--kleidia-url")
            .arg(&opts.kleidia_url)
            .arg("--port")
            .arg(port.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--allow-virtual-readers")
            .arg(opts.allow_virtual_readers.to_string())
            .arg("--log")
            .arg(log)
            .env_remove("KLEIDIA_AGENT_CONFIG")
            .env_remove("KLEIDIA_AGENT_TICKET_KEY");
        if let Some(seed) = opts.ticket_key {
            let vk = TicketSigningKey::from_bytes(&seed).verifying_key();
            cmd.arg("--ticket-key").arg(vk.to_base64());
        }
        cmd
    }

    /// Start the agent binary on `port`; fails with its log if it does not come up.
    pub async fn start(
        opts: AgentOptions,
        port: u16,
        state_dir: PathBuf,
        log: PathBuf,
    ) -> Result<Self> {
        Self::start_with_env(opts, port, state_dir, log, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables (e.g.
    /// `PCSCLITE_CSOCK_NAME` for a private pcscd, see [`crate::readers`]).
    pub async fn start_with_env(
        opts: AgentOptions,
        port: u16,
        state_dir: PathBuf,
        log: PathBuf,
        env: &[(&str, String)],
    ) -> Result<Self> {
        let mut cmd = Self::command(&opts, port, &state_dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = ChildGuard::spawn_logged("kleidia-agent", &mut cmd, &log)?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_healthy(&format!("{base}/health"), Duration::from_secs(60), &log)
            .await?;
        Self::started(opts, port, state_dir, log, proc, base).await
    }

    /// [`start_with_env`](Self::start_with_env), and what `/health` said
    /// the first time it answered (the agent listens before its key is
    /// made: `starting`), and how long after the start that was. Polls as
    /// fast as it can. `bin`: the agent binary, logging at `info` (default:
    /// the workspace's, at `debug` as every test agent).
    pub async fn start_watching_health(
        bin: Option<&Path>,
        opts: AgentOptions,
        port: u16,
        state_dir: PathBuf,
        log: PathBuf,
        env: &[(&str, String)],
    ) -> Result<(Self, Health, Duration)> {
        let mut cmd = match bin {
            Some(b) => Self::command_of(b, "info", &opts, port, &state_dir),
            None => Self::command(&opts, port, &state_dir),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let t0 = std::time::Instant::now();
        let proc = ChildGuard::spawn_logged("kleidia-agent", &mut cmd, &log)?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (first, after) = loop {
            if let Ok(r) = http.get(format!("{base}/health")).send().await {
                let after = t0.elapsed();
                break (r.error_for_status()?.json::<Health>().await?, after);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the agent did not answer:\n{}", read_log(&log));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        Ok((
            Self::started(opts, port, state_dir, log, proc, base).await?,
            first,
            after,
        ))
    }

    /// The agent answers: read its key (waits until it is made).
    async fn started(
        opts: AgentOptions,
        port: u16,
        state_dir: PathBuf,
        log: PathBuf,
        proc: ChildGuard,
        base: String,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
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
        Ok(self.health().await.decryptions)
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }
}

/// The agent's read-only endpoints, typed (each asserts success).
impl TestAgent {
    /// `GET /.well-known/kleidia-agent`
    pub async fn well_known(&self) -> WellKnown {
        ok_json(self.get("/.well-known/kleidia-agent").await.unwrap()).await
    }

    /// `GET /pubkey`
    pub async fn pubkey(&self) -> PubKey {
        ok_json(self.get("/pubkey").await.unwrap()).await
    }

    /// `GET /health`
    pub async fn health(&self) -> Health {
        ok_json(self.get("/health").await.unwrap()).await
    }

    /// `GET /system/info`
    pub async fn system_info(&self) -> SystemInfo {
        ok_json(self.get("/system/info").await.unwrap()).await
    }

    /// `GET /discover`
    pub async fn discover(&self) -> Discover {
        ok_json(self.get("/discover").await.unwrap()).await
    }

    /// `GET /piv/info?serial=…`
    pub async fn piv_info(&self, serial: u32) -> PivInfo {
        ok_json(
            self.get(&format!("/piv/info?serial={serial}"))
                .await
                .unwrap(),
        )
        .await
    }

    /// `GET /piv/check-defaults?serial=…`
    pub async fn check_defaults(&self, serial: u32) -> CheckDefaults {
        ok_json(
            self.get(&format!("/piv/check-defaults?serial={serial}"))
                .await
                .unwrap(),
        )
        .await
    }
}

/// Status and JSON error body of a failed response.
pub async fn error_of(resp: reqwest::Response) -> (u16, AgentErrorBody) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not an agent error body ({e}): {status} {text}"));
    (status, body)
}

/// Assert a response is the given error and return its body.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> AgentErrorBody {
    let (s, body) = error_of(resp).await;
    assert_eq!((s, body.error.as_str()), (status, code), "{}", body.message);
    body
}

/// The JSON body of a successful response.
pub async fn ok_json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A software YubiKey in reader 0 and an agent with the test ticket key.
pub struct AgentWithKey {
    pub agent: TestAgent,
    pub key: VirtualYubiKey,
    pub dir: tempfile::TempDir,
}

impl AgentWithKey {
    /// A factory-fresh YubiKey 5.7.1.
    pub async fn new(serial: u32) -> Self {
        Self::with_firmware(serial, "5.7.1").await
    }

    pub async fn with_firmware(serial: u32, firmware: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = VirtualYubiKey::plug(dir.path(), serial, firmware, 0).unwrap();
        let agent = TestAgent::spawn().await.unwrap();
        Self { agent, key, dir }
    }

    pub fn serial(&self) -> u32 {
        self.key.serial
    }

    /// A PIN change from `current` to `new`, encrypted to the agent.
    pub fn set_pin_params(&self, current: &[u8], new: &[u8]) -> SetPinParams {
        SetPinParams {
            serial: self.serial(),
            current_pin: self.agent.encrypt(current),
            new_pin: self.agent.encrypt(new),
            settle: false,
        }
    }

    /// A key generation in `slot` (PIN once, no touch) for `CN=alice`, with
    /// the factory management key and PIN.
    pub fn csr_params(&self, slot: PivSlot, algorithm: KeyAlgorithm) -> GenerateCsrParams {
        GenerateCsrParams {
            serial: self.serial(),
            slot,
            algorithm,
            pin_policy: PinPolicy::Once,
            touch_policy: TouchPolicy::Never,
            subject: "CN=alice,O=Kleidia Test".into(),
            management_key: self.agent.encrypt(default_mgm_hex().as_bytes()),
            pin: Some(self.agent.encrypt(DEFAULT_PIN)),
        }
    }

    /// Nothing was decrypted, no PIN try was used, the PIN is the factory one.
    pub async fn assert_untouched(&self) {
        assert_eq!(self.agent.decryptions().await.unwrap(), 0);
        assert_eq!(pin_retries(self.serial()), 3);
        let cd = self.agent.check_defaults(self.serial()).await;
        assert_eq!(cd.defaults.pin, Some(true), "the PIN was not changed");
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
