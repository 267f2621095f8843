//! Everything behind the browser: the installation, the agent on the
//! workstation and the YubiKey plugged into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::agent::{AgentOptions, TestAgent};
use crate::card::VirtualYubiKey;
use crate::{free_port, read_log, TestApp};

/// The workstation agent on a port fixed before Kleidia starts (the page
/// finds it at `KLEIDIA_AGENT_URL`), fetching its ticket key from Kleidia.
/// It can be stopped, killed and started again on the same port.
pub struct AgentProc {
    pub port: u16,
    pub kleidia_url: String,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    running: Option<TestAgent>,
}

impl AgentProc {
    pub fn new(dir: &Path, port: u16, kleidia_url: &str) -> Self {
        Self {
            port,
            kleidia_url: kleidia_url.to_string(),
            state_dir: dir.join("agent-state"),
            log: dir.join("agent.log"),
            running: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start the process and wait for `/health`.
    pub async fn start(&mut self) -> Result<()> {
        if self.running.is_some() {
            bail!("the agent already runs");
        }
        let opts = AgentOptions {
            kleidia_url: self.kleidia_url.clone(),
            ticket_key: None,
            allow_virtual_readers: true,
        };
        let agent =
            TestAgent::start(opts, self.port, self.state_dir.clone(), self.log.clone()).await?;
        self.running = Some(agent);
        Ok(())
    }

    /// The running agent, to call as the page would.
    pub fn running(&self) -> Option<&TestAgent> {
        self.running.as_ref()
    }

    /// SIGKILL, as a crash or a closed laptop lid would.
    pub fn kill(&mut self) {
        if let Some(mut a) = self.running.take() {
            a.proc.kill();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut a) = self.running.take() {
            a.proc.stop();
        }
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }
}

/// Everything one browser test needs, started in dependency order and
/// stopped in reverse (fields drop top to bottom).
pub struct Stack {
    pub agent: AgentProc,
    pub key: Option<VirtualYubiKey>,
    pub app: TestApp,
    pub dir: tempfile::TempDir,
    _card: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// Firmware of the test key: metadata (5.3+) and AES management keys (5.7).
pub const FIRMWARE: &str = "5.7.1";

impl Stack {
    /// The whole stack with a factory-fresh key `serial` in reader 0 and an
    /// agent running for it.
    pub async fn start(serial: u32) -> Result<Self> {
        Self::start_with(Some((serial, FIRMWARE))).await
    }

    /// The same with a key of another firmware personality (e.g. `5.4.3`).
    pub async fn start_with_firmware(serial: u32, firmware: &str) -> Result<Self> {
        Self::start_with(Some((serial, firmware))).await
    }

    /// The stack without a YubiKey (and without taking the readers).
    pub async fn start_without_key() -> Result<Self> {
        Self::start_with(None).await
    }

    async fn start_with(key: Option<(u32, &str)>) -> Result<Self> {
        Self::start_full(key, |b| b).await
    }

    /// [`start`](Self::start) with the installation's builder changed by
    /// `configure` (e.g. an OpenBao of its own that can be stopped).
    pub async fn start_configured(
        serial: Option<u32>,
        configure: impl FnOnce(crate::TestAppBuilder) -> crate::TestAppBuilder,
    ) -> Result<Self> {
        Self::start_full(serial.map(|s| (s, FIRMWARE)), configure).await
    }

    async fn start_full(
        key: Option<(u32, &str)>,
        configure: impl FnOnce(crate::TestAppBuilder) -> crate::TestAppBuilder,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let agent_port = free_port();
        let mut app = configure(TestApp::builder().license_service()).env(
            "KLEIDIA_AGENT_URL",
            &format!("http://127.0.0.1:{agent_port}"),
        );
        let (card, key) = match key {
            Some((serial, firmware)) => {
                let card = crate::card::lock().await;
                let key = VirtualYubiKey::plug(dir.path(), serial, firmware, 0)?;
                let roots = dir.path().join("attestation-roots.pem");
                std::fs::write(&roots, key.attestation_root_pem()?)?;
                app = app.env(
                    "KLEIDIA_ATTESTATION_ROOTS_FILE",
                    &roots.display().to_string(),
                );
                (Some(card), Some(key))
            }
            None => (None, None),
        };
        let app = app.try_start().await?;
        let mut agent = AgentProc::new(dir.path(), agent_port, app.base_url());
        agent.start().await?;
        Ok(Self {
            agent,
            key,
            app,
            dir,
            _card: card,
        })
    }

    /// The virtual YubiKey of a stack started with one.
    pub fn key(&self) -> &VirtualYubiKey {
        self.key
            .as_ref()
            .expect("this stack was started without a key")
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// A user created by the admin, with the forced first-login password
    /// change done; returns the password to sign in with.
    pub async fn create_user(&self, username: &str, role: &str, display: &str) -> Result<String> {
        let first = format!("{username}-first-password-1");
        Ok(self
            .app
            .create_user(username, role, display, &first)
            .await
            .password)
    }

    /// `GET /api/devices/{serial}` as the admin.
    pub async fn device(&self, serial: u32) -> Result<Value> {
        Ok(self.app.device(serial).await)
    }

    /// The latest escrowed secrets of `serial`, read from OpenBao with the
    /// root token (as an auditor of OpenBao would).
    pub async fn escrow(&self, serial: u32) -> Result<Value> {
        Ok(self.app.current_escrow(serial).await)
    }

    /// `GET` a public path of Kleidia as bytes.
    pub async fn fetch(&self, path: &str) -> Result<Vec<u8>> {
        Ok(self.app.fetch(path).await)
    }

    /// Panic with every process's log when `cond` is false.
    #[track_caller]
    pub fn check(&self, cond: bool, what: &str) {
        if !cond {
            panic!("{what}\n{}", self.logs());
        }
    }

    /// Logs of every process, for a failing test.
    pub fn logs(&self) -> String {
        format!(
            "--- kleidia ---\n{}\n--- agent ---\n{}\n--- virtual key ---\n{}",
            tail(&self.app.log(), 60),
            tail(&self.agent.log_text(), 60),
            self.key
                .as_ref()
                .map(|k| tail(&k.log(), 20))
                .unwrap_or_default()
        )
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
