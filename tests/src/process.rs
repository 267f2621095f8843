//! Real processes for the tests: where the workspace binaries are, free
//! ports, a child that dies with its owner, and waiting for one to answer.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// A command for a workspace binary with every inherited `KLEIDIA_*`
/// variable removed, so the test alone decides the configuration.
pub fn clean_command(binary: &str) -> Command {
    let mut c = Command::new(bin_path(binary));
    for (k, _) in std::env::vars() {
        if k.starts_with("KLEIDIA_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
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

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

    /// Start `cmd` with stdout and stderr appended to `log`.
    pub fn spawn_logged(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Self::new(name, child))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// How the process ended, if it has (`None` while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then wait up to 10 s, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
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

    /// Send `signal` (e.g. SIGHUP) to the running process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.name));
    }

    /// Kill at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Poll `url` until it answers 2xx. Fails with the process's `log` when
    /// the process exits first or `timeout` passes.
    pub async fn wait_healthy(&mut self, url: &str, timeout: Duration, log: &Path) -> Result<()> {
        self.wait_healthy_with(&reqwest::Client::new(), url, timeout, log)
            .await
    }

    /// The same with `http` (e.g. one that trusts a test CA).
    pub async fn wait_healthy_with(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        timeout: Duration,
        log: &Path,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                bail!("{} exited with {st}; log:\n{}", self.name, read_log(log));
            }
            if let Ok(r) = http.get(url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer on {url}; log:\n{}",
                    self.name,
                    read_log(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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

/// A log file's text so far (empty when it cannot be read).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
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
