//! Raw OpenBao calls for tests (independent of the app's own client), and
//! bootstrapping a test-owned server with the real `kleidia bootstrap`.

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::Value;

use crate::app::kleidia_command;
use crate::TestBao;

#[derive(Clone)]
pub struct BaoClient {
    pub addr: String,
    pub token: String,
    http: reqwest::Client,
}

impl BaoClient {
    pub fn new(addr: &str, token: &str) -> Self {
        Self {
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self::new(&self.addr, token)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(m, format!("{}/v1/{}", self.addr, path))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (s, v) = self.call("GET", path, None).await?;
        if !s.is_success() {
            bail!("GET {path}: {s} {v}");
        }
        Ok(v)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let (s, v) = self.call("POST", path, Some(body)).await?;
        if !s.is_success() {
            bail!("POST {path}: {s} {v}");
        }
        Ok(v)
    }

    /// A child token carrying exactly these policies (no default policy).
    pub async fn token_with_policies(&self, policies: &[&str]) -> Result<String> {
        let v = self
            .post(
                "auth/token/create",
                &serde_json::json!({"policies": policies, "no_default_policy": true, "ttl": "10m"}),
            )
            .await?;
        v.pointer("/auth/client_token")
            .and_then(Value::as_str)
            .map(String::from)
            .context("no client_token")
    }
}

/// Run `kleidia bootstrap` against the server; returns (exit success, stdout, stderr).
pub fn run_bootstrap(addr: &str, token: &str, public_url: &str) -> Result<(bool, String, String)> {
    let out = kleidia_command()
        .arg("bootstrap")
        .env("KLEIDIA_OPENBAO_ADDR", addr)
        .env("KLEIDIA_OPENBAO_TOKEN", token)
        .env("KLEIDIA_SERVER_PUBLIC_URL", public_url)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A test-owned OpenBao with Kleidia's layout (`kleidia bootstrap`), and a
/// client with its root token.
pub async fn bootstrapped_bao() -> Result<(TestBao, BaoClient)> {
    let bao = TestBao::spawn().await?;
    let (ok, out, err) = run_bootstrap(&bao.addr, &bao.token, "http://127.0.0.1:8080")?;
    if !ok {
        bail!("kleidia bootstrap failed:\n{out}\n{err}");
    }
    let root = BaoClient::new(&bao.addr, &bao.token);
    Ok((bao, root))
}
