//! Harness for the browser tests: Debian's headless Chromium driven through
//! `chromedriver` (WebDriver, the `fantoccini` crate), and the whole stack a
//! person's browser talks to, as real processes: a bootstrapped OpenBao, a
//! database, the license service, `kleidia serve`, the workstation agent and
//! a software YubiKey in the first vpcd reader.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::agent::{AgentOptions, TestAgent};
use crate::app::{AppOptions, KleidiaApp};
use crate::bao::BaoClient;
use crate::card::VirtualYubiKey;
use crate::client::{cli_create_user, Api, Browser, ADMIN_PASSWORD};
use crate::{bin_path, free_port, wait_until, workspace_root, ChildGuard, TestBao, TestDb};

/// How long a page may take to show what a test waits for (an enrollment
/// generates keys in a debug build on a 2-core machine).
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the screenshots of the main pages go, for review.
pub fn screenshot_dir() -> PathBuf {
    workspace_root().join("target/screenshots")
}

/// `chromedriver` and one headless Chromium session on a fresh profile.
pub struct Chrome {
    pub client: Client,
    /// chromedriver's own log.
    pub log: PathBuf,
    driver: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Chrome {
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let out = std::fs::File::create(&log)?;
        // Its own process group: Chromium's processes go with it on drop.
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start /usr/bin/chromedriver (Debian package chromium-driver)")?;
        let driver = ChildGuard::new("chromedriver", child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let up = wait_until(Duration::from_secs(30), || {
            let r = http.get(format!("{base}/status")).send();
            async move {
                match r.await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        if !up {
            bail!(
                "chromedriver did not come up:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let profile = dir.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            // A confirm() stays open until the test accepts it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1280,1000",
                ],
            },
        });
        let Value::Object(caps) = caps else {
            bail!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&base)
            .await
            .with_context(|| {
                format!(
                    "new Chromium session:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })?;
        Ok(Self {
            client,
            driver,
            log,
            _dir: dir,
        })
    }

    /// End the session and stop chromedriver (and the browser with it).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    /// The first element matching `css`, once it exists.
    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        match self
            .client
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => Ok(e),
            Err(e) => bail!("wait for {css}: {e}; page:\n{}", self.page_text().await),
        }
    }

    /// Wait until `css` matches an element, giving up after `timeout`.
    pub async fn wait_for_within(&self, css: &str, timeout: Duration) -> Result<Element> {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("wait for {css}"))
    }

    pub async fn find(&self, css: &str) -> Result<Element> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("find {css}"))
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// Type into the field called `name` inside the form matching `form`.
    pub async fn fill(&self, form: &str, name: &str, value: &str) -> Result<()> {
        let f = self.find(&format!("{form} [name=\"{name}\"]")).await?;
        f.clear().await?;
        f.send_keys(value).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Accept the `window.confirm` the last click opened.
    pub async fn accept_confirm(&self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = self.client.get_alert_text().await {
                self.client.accept_alert().await?;
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("no confirmation dialog appeared");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's visible text.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Save a PNG of the window under `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Sign in through the login page; returns once a signed-in page shows.
    pub async fn login(&self, base: &str, username: &str, password: &str) -> Result<()> {
        self.goto(&format!("{base}/login")).await?;
        self.fill("form[action=\"/login\"]", "username", username)
            .await?;
        self.fill("form[action=\"/login\"]", "password", password)
            .await?;
        self.click("form[action=\"/login\"] button[type=submit]")
            .await?;
        self.wait_for("form[action=\"/logout\"]").await?;
        Ok(())
    }

    /// Sign out with the header button.
    pub async fn logout(&self) -> Result<()> {
        self.click("form[action=\"/logout\"] button").await?;
        self.wait_for("form[action=\"/login\"]").await?;
        Ok(())
    }

    /// Wait until `#agent-status` shows `state` (running, restarted, …).
    pub async fn wait_agent_state(&self, state: &str) -> Result<()> {
        let css = format!("#agent-status[data-state=\"{state}\"]");
        if self
            .wait_for_within(&css, Duration::from_secs(60))
            .await
            .is_err()
        {
            let now = self
                .find("#agent-status")
                .await?
                .attr("data-state")
                .await?
                .unwrap_or_default();
            bail!(
                "agent status is {now:?}, not {state:?}; page:\n{}",
                self.page_text().await
            );
        }
        Ok(())
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let pid = self.driver.pid();
        if pid != 0 {
            let group = nix::unistd::Pid::from_raw(-(pid as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        }
        self.driver.kill();
    }
}

/// The workstation agent on a port fixed before Kleidia starts (the page
/// finds it at `KLEIDIA_AGENT_URL`), fetching its ticket key from Kleidia.
pub struct AgentProc {
    pub port: u16,
    pub kleidia_url: String,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    proc: Option<ChildGuard>,
}

impl AgentProc {
    pub fn new(dir: &Path, port: u16, kleidia_url: &str) -> Self {
        Self {
            port,
            kleidia_url: kleidia_url.to_string(),
            state_dir: dir.join("agent-state"),
            log: dir.join("agent.log"),
            proc: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start the process and wait for `/health`.
    pub async fn start(&mut self) -> Result<()> {
        if self.proc.is_some() {
            bail!("the agent already runs");
        }
        let opts = AgentOptions {
            kleidia_url: self.kleidia_url.clone(),
            ticket_key: None,
            allow_virtual_readers: true,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = TestAgent::command(&opts, self.port, &self.state_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start kleidia-agent")?;
        self.proc = Some(ChildGuard::new("kleidia-agent", child));
        let http = reqwest::Client::new();
        let url = format!("{}/health", self.url());
        let up = wait_until(Duration::from_secs(60), || {
            let r = http.get(&url).send();
            async move { matches!(r.await, Ok(r) if r.status().is_success()) }
        })
        .await;
        if !up {
            bail!("kleidia-agent did not come up:\n{}", self.log_text());
        }
        Ok(())
    }

    /// SIGKILL, as a crash or a closed laptop lid would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `kleidia-license serve` on a free port with a `kleidia-license` token.
pub struct LicenseService {
    pub base: String,
    pub log: PathBuf,
    _proc: ChildGuard,
}

impl LicenseService {
    pub async fn spawn(dir: &Path, bao_addr: &str, token: &str) -> Result<Self> {
        let port = free_port();
        let log = dir.join("license.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin_path("kleidia-license"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KLEIDIA_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .env("KLEIDIA_LICENSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("KLEIDIA_LICENSE_OPENBAO_ADDR", bao_addr)
            .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", token)
            .env("KLEIDIA_LICENSE_SHUTDOWN_GRACE_SECS", "2")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start kleidia-license")?;
        let me = Self {
            base: format!("http://127.0.0.1:{port}"),
            log,
            _proc: ChildGuard::new("kleidia-license", child),
        };
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", me.base);
        let up = wait_until(Duration::from_secs(30), || {
            let r = http.get(&url).send();
            async move { matches!(r.await, Ok(r) if r.status().is_success()) }
        })
        .await;
        if !up {
            bail!(
                "kleidia-license did not come up:\n{}",
                std::fs::read_to_string(&me.log).unwrap_or_default()
            );
        }
        Ok(me)
    }
}

/// Everything one browser test needs, started in dependency order and
/// stopped in reverse (fields drop top to bottom).
pub struct Stack {
    pub agent: AgentProc,
    pub key: Option<VirtualYubiKey>,
    pub app: KleidiaApp,
    pub license: LicenseService,
    pub root_bao: BaoClient,
    pub bao: TestBao,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    _card: Option<std::sync::MutexGuard<'static, ()>>,
}

/// Firmware of the test key: metadata (5.3+) and AES management keys (5.7).
pub const FIRMWARE: &str = "5.7.1";

impl Stack {
    /// The whole stack with a factory-fresh key `serial` in reader 0 and an
    /// agent running for it.
    pub async fn start(serial: u32) -> Result<Self> {
        Self::start_with(Some(serial)).await
    }

    /// The stack without a YubiKey (and without taking the readers).
    pub async fn start_without_key() -> Result<Self> {
        Self::start_with(None).await
    }

    async fn start_with(serial: Option<u32>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (card, key, roots) = match serial {
            Some(serial) => {
                let card = crate::card::lock();
                let key = VirtualYubiKey::plug(dir.path(), serial, FIRMWARE, 0)?;
                let roots = dir.path().join("attestation-roots.pem");
                std::fs::write(&roots, key.attestation_root_pem()?)?;
                (Some(card), Some(key), Some(roots))
            }
            None => (None, None, None),
        };

        let (bao, root_bao) = crate::bao::bootstrapped_bao().await?;
        let app_token = root_bao.token_with_policies(&["kleidia-app"]).await?;
        let license_token = root_bao.token_with_policies(&["kleidia-license"]).await?;
        let license = LicenseService::spawn(dir.path(), &bao.addr, &license_token).await?;

        let db = TestDb::new().await?;
        let agent_port = free_port();
        let mut env = vec![
            (
                "KLEIDIA_AGENT_URL".to_string(),
                format!("http://127.0.0.1:{agent_port}"),
            ),
            ("KLEIDIA_LICENSE_URL".to_string(), license.base.clone()),
        ];
        if let Some(roots) = roots {
            env.push((
                "KLEIDIA_ATTESTATION_ROOTS_FILE".into(),
                roots.display().to_string(),
            ));
        }
        let app = KleidiaApp::spawn(AppOptions {
            database_url: db.url.clone(),
            bao_addr: bao.addr.clone(),
            bao_token: app_token,
            env,
        })
        .await?;
        cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD)?;

        let mut agent = AgentProc::new(dir.path(), agent_port, &app.base_url);
        agent.start().await?;
        Ok(Self {
            agent,
            key,
            app,
            license,
            root_bao,
            bao,
            db,
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

    pub async fn admin_api(&self) -> Result<Api> {
        let mut a = Api::new(&self.app.base_url);
        a.login("admin", ADMIN_PASSWORD).await?;
        Ok(a)
    }

    /// A user created by the admin through the API, with the forced
    /// first-login password change done; returns the password to sign in with.
    pub async fn create_user(&self, username: &str, role: &str, display: &str) -> Result<String> {
        let first = format!("{username}-first-password-1");
        let admin = self.admin_api().await?;
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": username, "role": role, "display_name": display,
                        "email": format!("{username}@corp.example"), "password": first}),
            )
            .await;
        if s != StatusCode::CREATED {
            bail!("create user {username}: {s} {v}");
        }
        let password = format!("{username}-own-password-2");
        let b = Browser::new(&self.app.base_url);
        let r = b.login(username, &first).await;
        if r.headers().get("location").and_then(|l| l.to_str().ok()) != Some("/account/password") {
            bail!("first login of {username} did not ask for a new password");
        }
        let r = b
            .post_form(
                "/account/password",
                &[
                    ("current", &first),
                    ("new", &password),
                    ("confirm", &password),
                ],
            )
            .await;
        if r.status() != StatusCode::SEE_OTHER {
            bail!("password change of {username}: {}", r.status());
        }
        Ok(password)
    }

    /// `GET /api/devices/{serial}` as the admin.
    pub async fn device(&self, serial: u32) -> Result<Value> {
        let (s, v) = self
            .admin_api()
            .await?
            .get(&format!("/api/devices/{serial}"))
            .await;
        if s != StatusCode::OK {
            bail!("GET /api/devices/{serial}: {s} {v}");
        }
        Ok(v)
    }

    /// The latest escrowed secrets of `serial`, read from OpenBao with the
    /// root token (as an auditor of OpenBao would).
    pub async fn escrow(&self, serial: u32) -> Result<Value> {
        Ok(self
            .root_bao
            .get(&format!("yubikeys/data/{serial}/secrets"))
            .await?["data"]["data"]
            .clone())
    }

    /// `GET` a public path of Kleidia as bytes.
    pub async fn fetch(&self, path: &str) -> Result<Vec<u8>> {
        let r = reqwest::get(self.url(path)).await?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
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

pub use crate::openssl;
