//! The OpenID provider the OIDC tests sign in against: `oidc-provider`
//! (OpenID-certified, npm) run by Node from `tests/oidc/provider.mjs` on an
//! ephemeral loopback port, with test users and groups, and its admin API
//! (disable or remove a user, rotate the signing key, break the next
//! id_token). `scripts/install-deps.sh` installs its packages (`npm ci`).
//!
//! [`sign_in`] walks a plain HTTP client through the whole authorization
//! code flow (app → provider login form → callback), the way a browser does.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::Browser;
use crate::process::{read_log, workspace_root, ChildGuard};
use crate::test_app::TestAppBuilder;

pub const CLIENT_ID: &str = "kleidia-test";
pub const CLIENT_SECRET: &str = "kleidia-test-client-secret-of-some-length";

/// One test user at the provider.
#[derive(Clone, Debug)]
pub struct IdpUser {
    pub username: String,
    pub password: String,
    pub groups: Vec<String>,
}

impl IdpUser {
    pub fn new(username: &str, groups: &[&str]) -> Self {
        Self {
            username: username.into(),
            password: format!("{username}-idp-password"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn json(&self) -> Value {
        json!({"username": self.username, "password": self.password,
               "name": format!("{} (IdP)", self.username),
               "email": format!("{}@idp.example", self.username), "groups": self.groups})
    }
}

pub struct OidcProvider {
    proc: ChildGuard,
    pub issuer: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Start the provider in `dir` with `users`. The app's redirect URI is
    /// set with [`Self::allow_app`] once the app runs (its port is known then).
    pub async fn start(dir: &Path, users: &[IdpUser]) -> Result<Self> {
        let script = workspace_root().join("tests/oidc/provider.mjs");
        if !workspace_root()
            .join("tests/oidc/node_modules/oidc-provider")
            .is_dir()
        {
            bail!("tests/oidc/node_modules is missing: run scripts/install-deps.sh (npm ci in tests/oidc)");
        }
        let cfg = dir.join("oidc-provider.json");
        std::fs::write(
            &cfg,
            serde_json::to_vec(&json!({
                "port": 0,
                "client": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                           "redirect_uris": ["http://127.0.0.1:9/auth/oidc/callback"]},
                "users": users.iter().map(IdpUser::json).collect::<Vec<_>>(),
            }))?,
        )?;
        let log = dir.join("oidc-provider.log");
        let mut cmd = Command::new("node");
        cmd.arg(&script).arg(&cfg);
        let mut proc = ChildGuard::spawn_logged("oidc-provider", &mut cmd, &log)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let issuer = loop {
            let text = read_log(&log);
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("READY ")) {
                break line.trim().to_string();
            }
            if proc.exited().is_some() || std::time::Instant::now() > deadline {
                bail!("the OpenID provider did not start:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Self {
            proc,
            issuer,
            log,
            http: reqwest::Client::new(),
        })
    }

    /// The settings that point an app at this provider, mapping
    /// `kleidia-admins` → admin, `kleidia-helpdesk` → helpdesk,
    /// `kleidia-users` → user.
    pub fn configure(&self, b: TestAppBuilder) -> TestAppBuilder {
        b.env("KLEIDIA_OIDC_ISSUER", &self.issuer)
            .env("KLEIDIA_OIDC_CLIENT_ID", CLIENT_ID)
            .env("KLEIDIA_OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("KLEIDIA_OIDC_DISPLAY_NAME", "Test IdP")
            .env(
                "KLEIDIA_OIDC_ROLE_MAP",
                "{kleidia-admins=\"admin\", kleidia-helpdesk=\"helpdesk\", kleidia-users=\"user\"}",
            )
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The provider is gone (an outage).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    async fn admin(&self, call: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/admin/{call}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("provider admin call");
        assert!(
            r.status().is_success(),
            "provider admin {call}: {}",
            r.status()
        );
        r.json().await.unwrap_or(Value::Null)
    }

    /// Register `{app_base_url}/auth/oidc/callback` as the client's redirect URI.
    pub async fn allow_app(&self, app_base_url: &str) {
        let uri = format!("{}/auth/oidc/callback", app_base_url.trim_end_matches('/'));
        self.admin("redirect-uris", json!({"redirect_uris": [uri]}))
            .await;
    }

    pub async fn add_user(&self, u: &IdpUser) {
        self.admin("users", u.json()).await;
    }

    pub async fn disable(&self, username: &str) {
        self.admin("disable", json!({"username": username})).await;
    }

    pub async fn remove(&self, username: &str) {
        self.admin("remove", json!({"username": username})).await;
    }

    /// A new signing key; returns its `kid`.
    pub async fn rotate_key(&self) -> String {
        let v = self.admin("rotate", json!({})).await;
        v["kid"].as_str().unwrap_or_default().to_string()
    }

    /// The next token response's id_token gets a broken signature.
    pub async fn tamper_next_token(&self) {
        self.admin("next-token", json!({"tamper": true})).await;
    }

    /// The next id_token is issued two hours in the past (expired).
    pub async fn expire_next_token(&self) {
        self.admin("next-token", json!({"expired": true})).await;
    }
}

/// Where a flow stands after the person signed in at the provider: the
/// callback URL the provider sent the browser to (not followed yet).
pub struct AtCallback {
    pub url: String,
}

impl AtCallback {
    pub fn param(&self, name: &str) -> Option<String> {
        reqwest::Url::parse(&self.url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The same callback with `name` set to `value`.
    pub fn with_param(&self, name: &str, value: &str) -> String {
        let mut u = reqwest::Url::parse(&self.url).expect("callback URL");
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == name {
                    value.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    }
}

/// `GET /auth/oidc/start` in `browser`: the provider's authorization URL.
pub async fn start(browser: &Browser) -> Result<String> {
    let r = browser.get("/auth/oidc/start").await;
    if r.status() != StatusCode::SEE_OTHER {
        bail!(
            "start: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    location(&r)
}

fn location(r: &reqwest::Response) -> Result<String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location")?;
    Ok(r.url().join(loc)?.to_string())
}

/// Follow the provider from `auth_url` through its login form as
/// `username`/`password` up to the redirect back to the app.
pub async fn at_provider(
    browser: &Browser,
    auth_url: &str,
    username: &str,
    password: &str,
) -> Result<AtCallback> {
    let mut url = auth_url.to_string();
    let mut logged_in = false;
    for _ in 0..10 {
        let r = browser.http.get(&url).send().await?;
        if r.status().is_redirection() {
            let next = location(&r)?;
            if next.contains("/auth/oidc/callback") {
                return Ok(AtCallback { url: next });
            }
            url = next;
            continue;
        }
        let page_url = r.url().clone();
        let body = r.text().await?;
        if logged_in || !body.contains("id=\"login\"") {
            bail!("the provider did not send the browser back: {body}");
        }
        let action = body
            .split("action=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .context("login form action")?;
        let r = browser
            .http
            .post(page_url.join(action)?)
            .form(&[("login", username), ("password", password)])
            .send()
            .await?;
        if !r.status().is_redirection() {
            bail!(
                "provider sign-in refused: {}",
                r.text().await.unwrap_or_default()
            );
        }
        logged_in = true;
        url = location(&r)?;
    }
    bail!("too many redirects at the provider")
}

/// `GET` the callback URL in `browser`: status and page text.
pub async fn callback(browser: &Browser, url: &str) -> (StatusCode, String) {
    let r = browser.http.get(url).send().await.expect("callback");
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

/// The whole flow in `browser`: start, provider login, callback.
pub async fn sign_in(browser: &Browser, username: &str, password: &str) -> (StatusCode, String) {
    let auth = start(browser).await.expect("start OIDC sign-in");
    let at = at_provider(browser, &auth, username, password)
        .await
        .expect("sign in at the provider");
    callback(browser, &at.url).await
}
