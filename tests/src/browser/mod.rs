//! Harness for the browser tests: Debian's headless Chromium driven through
//! `chromedriver` (WebDriver, the `fantoccini` crate), and the whole stack a
//! person's browser talks to, as real processes ([`Stack`]): a [`TestApp`]
//! with its own OpenBao and the license service, the workstation agent and
//! a software YubiKey in the first vpcd reader.
//!
//! [`TestApp`]: crate::TestApp

mod stack;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::{free_port, wait_until, workspace_root, ChildGuard};

pub use crate::openssl;
pub use stack::{AgentProc, Stack, FIRMWARE};

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

/// Kleidia's pages: enrollment and the device page's actions.
impl Chrome {
    /// `(data-step, class)` of every step of a progress list, in order.
    pub async fn steps(&self, list: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for li in self
            .client
            .find_all(Locator::Css(&format!("{list} > li")))
            .await
            .unwrap()
        {
            out.push((
                li.attr("data-step").await.unwrap().unwrap_or_default(),
                li.attr("class").await.unwrap().unwrap_or_default(),
            ));
        }
        out
    }

    /// Wait until the result box `#id` shows `.ok` or `.error`; its class and text.
    async fn outcome(&self, id: &str) -> (String, String) {
        let el = self
            .wait_for(&format!("#{id}.ok, #{id}.error"))
            .await
            .unwrap();
        (
            el.attr("class").await.unwrap().unwrap_or_default(),
            el.text().await.unwrap(),
        )
    }

    /// Wait for the enrollment to end; the result box's class and text.
    pub async fn enrollment_outcome(&self) -> (String, String) {
        self.outcome("enroll-result").await
    }

    /// Wait for the outcome of a device page action; its class and text.
    pub async fn action_result(&self) -> (String, String) {
        self.outcome("action-result").await
    }

    /// Fill the enrollment form and click "Enroll".
    pub async fn start_enrollment(&self, serial: u32, pin: &str) {
        // The page fills in the serial of the key the agent sees; wait for it
        // so it does not land in the middle of what the test types.
        self.wait_for(&format!(
            "#enroll-form [name=serial][value=\"{serial}\"], #enroll-detected li"
        ))
        .await
        .unwrap();
        let form = "#enroll-form";
        self.fill(form, "serial", &serial.to_string())
            .await
            .unwrap();
        self.fill(form, "pin", pin).await.unwrap();
        self.fill(form, "pin_confirm", pin).await.unwrap();
        self.click("#enroll-form button[type=submit]")
            .await
            .unwrap();
    }

    /// Sign in at `base` and open the enrollment page with the agent found.
    pub async fn open_enrollment(&self, base: &str, username: &str, password: &str) {
        self.login(base, username, password).await.unwrap();
        self.goto(&format!("{base}/enroll")).await.unwrap();
        self.wait_agent_state("running").await.unwrap();
    }
}
