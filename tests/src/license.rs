//! The license service (`kleidia-license serve`) as a real process with a
//! client for its API, license files issued with the vendor tool, and a
//! test OpenBao holding only what the service needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::bao::BaoClient;
use crate::{clean_command, free_port, read_log, unix_now, workspace_root, ChildGuard, TestBao};

pub const DAY: i64 = 86_400;

/// The policy `kleidia bootstrap` writes for the license service.
const LICENSE_POLICY: &str = r#"
path "license/data/kleidia/*" { capabilities = ["create", "read", "update"] }
path "license/metadata/kleidia/*" { capabilities = ["read", "list"] }
"#;

/// A `kleidia-license` command with no inherited `KLEIDIA_*` variable.
pub fn license_command() -> Command {
    clean_command("kleidia-license")
}

/// The committed TEST vendor key.
pub fn test_vendor_key() -> PathBuf {
    workspace_root().join("license/keys/test-vendor.key")
}

/// What `kleidia-license issue` is asked to sign.
#[derive(Clone, Debug)]
pub struct LicenseSpec {
    pub license_id: String,
    pub installation_id: String,
    pub issued: i64,
    pub not_after: i64,
    pub max_users: u32,
    pub max_devices: u32,
    pub features: Vec<String>,
    /// The vendor key that signs it.
    pub key: PathBuf,
}

impl LicenseSpec {
    /// A license for Example Corp: 12 users, 40 devices, `audit-export`,
    /// issued 60 days ago, signed with the TEST vendor key.
    pub fn new(license_id: &str, installation_id: &str, not_after: i64) -> Self {
        Self {
            license_id: license_id.into(),
            installation_id: installation_id.into(),
            issued: unix_now() - 60 * DAY,
            not_after,
            max_users: 12,
            max_devices: 40,
            features: vec!["audit-export".into()],
            key: test_vendor_key(),
        }
    }

    pub fn signed_with(mut self, key: &Path) -> Self {
        self.key = key.to_path_buf();
        self
    }

    /// `kleidia-license issue` into `dir`; the path of the file.
    pub fn issue(&self, dir: &Path) -> PathBuf {
        let out = dir.join(format!("{}.json", self.license_id));
        let mut cmd = license_command();
        cmd.arg("issue")
            .arg("--key")
            .arg(&self.key)
            .args(["--installation-id", &self.installation_id])
            .args(["--customer", "Example Corp"])
            .args(["--license-id", &self.license_id])
            .arg(format!("--issued=@{}", self.issued))
            .arg(format!("--not-after=@{}", self.not_after))
            .args(["--max-devices", &self.max_devices.to_string()])
            .args(["--max-users", &self.max_users.to_string()]);
        for f in &self.features {
            cmd.args(["--feature", f]);
        }
        let o = cmd.arg("--out").arg(&out).output().expect("run issue");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    }
}

/// Flip the lowest bit of one base64 character in the middle of the payload:
/// exactly one bit of the signed bytes changes.
pub fn flip_one_payload_bit(doc: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v: Value = serde_json::from_slice(doc).unwrap();
    let mut p = v["payload"].as_str().unwrap().as_bytes().to_vec();
    let i = p.len() / 2;
    let idx = ALPHABET.iter().position(|&c| c == p[i]).unwrap();
    p[i] = ALPHABET[idx ^ 1];
    v["payload"] = Value::String(String::from_utf8(p).unwrap());
    v.to_string().into_bytes()
}

/// A test OpenBao with the `license` KV v2 mount and the license service's
/// policy, as `kleidia bootstrap` leaves them, and nothing else.
pub struct LicenseBao {
    pub bao: TestBao,
    pub root: BaoClient,
    /// Carries only the `kleidia-license` policy.
    pub service_token: String,
}

impl LicenseBao {
    pub async fn start() -> Self {
        let bao = TestBao::spawn().await.unwrap();
        let root = BaoClient::new(&bao.addr, &bao.token);
        root.post(
            "sys/mounts/license",
            &json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await
        .unwrap();
        root.post(
            "sys/policies/acl/kleidia-license",
            &json!({ "policy": LICENSE_POLICY }),
        )
        .await
        .unwrap();
        let service_token = root
            .token_with_policies(&["kleidia-license"])
            .await
            .unwrap();
        Self {
            bao,
            root,
            service_token,
        }
    }

    /// Current KV version of `license/kleidia/<name>` (0 when absent).
    pub async fn version(&self, name: &str) -> u64 {
        self.root
            .kv_version("license", &format!("kleidia/{name}"))
            .await
    }

    /// Options for a service on this OpenBao with its limited token.
    pub fn service(&self) -> LicenseOptions {
        LicenseOptions::new(&self.bao.addr, &self.service_token)
    }
}

/// How to start the license service.
#[derive(Clone, Debug)]
pub struct LicenseOptions {
    /// Fixed so that a restarted service is found where the app expects it.
    pub port: u16,
    pub bao_addr: String,
    pub bao_token: String,
    /// `KLEIDIA_LICENSE_API_TOKEN`; the client sends it when set.
    pub api_token: Option<String>,
    /// Extra variables (`KLEIDIA_LICENSE_TEST_NOW`, …).
    pub env: Vec<(String, String)>,
}

impl LicenseOptions {
    pub fn new(bao_addr: &str, bao_token: &str) -> Self {
        Self {
            port: free_port(),
            bao_addr: bao_addr.into(),
            bao_token: bao_token.into(),
            api_token: None,
            env: vec![],
        }
    }

    pub fn api_token(mut self, token: &str) -> Self {
        self.api_token = Some(token.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Start and wait until `/readyz` answers.
    pub async fn spawn(&self) -> LicenseService {
        LicenseService::start(self).unwrap().ready().await.unwrap()
    }
}

/// `kleidia-license serve`, killed when dropped.
pub struct LicenseService {
    pub base: String,
    pub proc: ChildGuard,
    log: PathBuf,
    api_token: Option<String>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl LicenseService {
    /// Start `serve` without waiting for it.
    pub fn start(opts: &LicenseOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("license.log");
        let mut cmd = license_command();
        cmd.arg("serve")
            .env("KLEIDIA_LICENSE_LISTEN", format!("127.0.0.1:{}", opts.port))
            .env("KLEIDIA_LICENSE_OPENBAO_ADDR", &opts.bao_addr)
            .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", &opts.bao_token)
            .env("KLEIDIA_LICENSE_SHUTDOWN_GRACE_SECS", "2")
            .env("RUST_LOG", "debug");
        if let Some(t) = &opts.api_token {
            cmd.env("KLEIDIA_LICENSE_API_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        Ok(Self {
            base: format!("http://127.0.0.1:{}", opts.port),
            proc: ChildGuard::spawn_logged("kleidia-license", &mut cmd, &log)?,
            log,
            api_token: opts.api_token.clone(),
            http: reqwest::Client::new(),
            _dir: dir,
        })
    }

    /// Wait for `/readyz`; fails early with the log if the process exits.
    pub async fn ready(mut self) -> Result<Self> {
        let url = self.url("/readyz");
        self.proc
            .wait_healthy(&url, Duration::from_secs(30), &self.log)
            .await?;
        Ok(self)
    }

    /// SIGTERM and wait; asserts a clean exit (graceful shutdown).
    pub fn stop(mut self) {
        let st = self.proc.stop().unwrap();
        assert!(st.success(), "exit {st}; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with the API token; asserts 200.
    async fn get(&self, path: &str) -> Value {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = &self.api_token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}; log:\n{}", self.log());
        r.json().await.unwrap()
    }

    /// `GET /license/status`
    pub async fn status(&self) -> Value {
        self.get("/license/status").await
    }

    /// `GET /license/history`
    pub async fn history(&self) -> Value {
        self.get("/license/history").await
    }

    /// `GET /installation-id`
    pub async fn installation_id(&self) -> String {
        self.get("/installation-id").await["installation_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `POST /license` on behalf of `alice` (`X-Kleidia-Actor`).
    pub async fn upload(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/license"))
            .header("x-kleidia-actor", "alice")
            .body(body);
        if let Some(t) = &self.api_token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}
