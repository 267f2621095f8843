//! [`HaStack`]: the high-availability stack of `scripts/ha.sh` (docs/ha.md)
//! owned by one test: three `kleidia serve` replicas behind HAProxy, a
//! three-node OpenBao Raft cluster behind HAProxy (only the active node is
//! in rotation), the license service, on a fresh database of the test
//! stack's PostgreSQL. The test kills and restarts its pieces through the
//! script's own subcommands, exactly as an operator would with `make ha`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use crate::app::kleidia_command;
use crate::bao::BaoClient;
use crate::{bin_path, read_log, workspace_root, TestDb};

pub struct HaStack {
    /// The public URL: HAProxy's Kleidia frontend.
    pub url: String,
    /// HAProxy's OpenBao frontend (always the active node).
    pub bao_addr: String,
    pub db: TestDb,
    dir: tempfile::TempDir,
    port: u16,
}

impl HaStack {
    /// `scripts/ha.sh up` on ports `port`..`port+20` and a fresh database.
    pub async fn up(port: u16) -> Result<Self> {
        let db = TestDb::new().await?;
        let dir = tempfile::tempdir()?;
        let me = Self {
            url: format!("http://127.0.0.1:{port}"),
            bao_addr: format!("http://127.0.0.1:{}", port + 10),
            db,
            dir,
            port,
        };
        me.script(&["up"])?;
        Ok(me)
    }

    /// The stack's state folder (configuration, logs, test-only keys).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(workspace_root().join("scripts/ha.sh"));
        let bin = bin_path("kleidia");
        c.arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .env("HA_PORT", self.port.to_string())
            .env("HA_DB", &self.db.name)
            .env("HA_BIN", bin.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("KLEIDIA_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// `scripts/ha.sh ARGS[0] DIR ARGS[1..]`; its output, or an error with it.
    pub fn script(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("run scripts/ha.sh {args:?}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("scripts/ha.sh {args:?} failed:\n{text}");
        }
        Ok(text)
    }

    /// SIGKILL replica `n` (1-3): a crashed node, requests in flight and all.
    /// The signal goes straight to the recorded PID (no script start-up
    /// delay between the test's decision and the crash); the script then
    /// forgets the process.
    pub fn kill_app(&self, n: u8) -> Result<String> {
        let pidfile = self.dir().join(format!("app{n}.pid"));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("read {}", pidfile.display()))?
            .trim()
            .parse()
            .context("replica PID")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("SIGKILL the replica")?;
        self.script(&["app-kill", &n.to_string()])
    }

    /// Start replica `n` again; returns once HAProxy sends it traffic.
    pub fn start_app(&self, n: u8) -> Result<String> {
        self.script(&["app-start", &n.to_string()])
    }

    /// The active OpenBao node (1-3).
    pub fn active_bao(&self) -> Result<u8> {
        let out = self.script(&["bao-active"])?;
        out.trim()
            .parse()
            .with_context(|| format!("no active OpenBao node: {out}"))
    }

    /// SIGTERM OpenBao node `n`.
    pub fn stop_bao(&self, n: u8) -> Result<String> {
        self.script(&["bao-stop", &n.to_string()])
    }

    /// Start node `n` again and unseal it; returns once it is a peer again.
    pub fn start_bao(&self, n: u8) -> Result<String> {
        self.script(&["bao-start", &n.to_string()])
    }

    pub fn restart_license(&self) -> Result<String> {
        self.script(&["license-restart"])
    }

    pub fn status(&self) -> String {
        self.script(&["status"]).unwrap_or_else(|e| e.to_string())
    }

    /// OpenBao's root token (test only; kept in the state folder).
    pub fn root_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir().join("bao-token"))?
            .trim()
            .to_string())
    }

    /// A root client of the cluster, through HAProxy.
    pub fn root_bao(&self) -> Result<BaoClient> {
        Ok(BaoClient::new(&self.bao_addr, &self.root_token()?))
    }

    /// The software YubiKeys' attestation root that the replicas trust.
    pub fn attestation_root(&self) -> PathBuf {
        self.dir().join("attestation-root.pem")
    }

    /// `kleidia --config <the replicas' config> ARGS…`, with `stdin` if any.
    pub fn kleidia(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        use std::io::Write;
        let mut c = kleidia_command();
        c.arg("--config")
            .arg(self.dir().join("kleidia.toml"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(s.as_bytes())?;
        }
        drop(child.stdin.take());
        Ok(child.wait_with_output()?)
    }

    /// A user with `password` (no change needed at first sign-in).
    pub fn create_user(&self, username: &str, role: &str, password: &str) -> Result<()> {
        let out = self.kleidia(
            &[
                "user",
                "create",
                "--username",
                username,
                "--role",
                role,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )?;
        if !out.status.success() {
            bail!(
                "user create {username}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `kleidia audit verify` as the installation runs it (the replicas'
    /// database role and OpenBao AppRole): (passed, output).
    pub fn audit_verify(&self) -> Result<(bool, String)> {
        let out = self.kleidia(&["audit", "verify"], None)?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// The log of one process: `app1`…`app3`, `bao1`…`bao3`, `license`, `haproxy`.
    pub fn log(&self, name: &str) -> String {
        read_log(&self.dir().join("logs").join(format!("{name}.log")))
    }

    /// The tail of every process's log (for a failing test).
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["app1", "app2", "app3", "bao1", "bao2", "bao3", "license"] {
            let log = self.log(name);
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {name} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for HaStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}\n{}", self.status(), self.logs_tail(40));
        }
        let _ = self.command(&["down"]).output();
    }
}
