//! The `kleidia` binary as a real process: `kleidia serve` for a test, and
//! its command-line subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{clean_command, read_log, ChildGuard};

/// A `kleidia` command with every inherited `KLEIDIA_*` variable removed, so
/// the test alone decides the configuration.
pub fn kleidia_command() -> Command {
    clean_command("kleidia")
}

/// `kleidia ARGS…` against the database at `db_url`.
pub fn kleidia_cli(db_url: &str, args: &[&str]) -> Output {
    kleidia_command()
        .args(args)
        .env("KLEIDIA_DATABASE_URL", db_url)
        .output()
        .unwrap_or_else(|e| panic!("run kleidia {args:?}: {e}"))
}

/// `kleidia user create` with the password on stdin; returns stdout.
pub fn cli_create_user(db_url: &str, username: &str, role: &str, password: &str) -> Result<String> {
    let mut child = kleidia_command()
        .args([
            "user",
            "create",
            "--username",
            username,
            "--role",
            role,
            "--password-stdin",
        ])
        .env("KLEIDIA_DATABASE_URL", db_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct AppOptions {
    /// The port to listen on (the public URL is `http://127.0.0.1:{port}`).
    pub port: u16,
    /// The URL the server runs with.
    pub database_url: String,
    /// The schema owner's URL it migrates with, when that is another role.
    pub owner_url: Option<String>,
    pub bao_addr: String,
    pub bao_token: String,
    /// Extra `KLEIDIA_*` variables.
    pub env: Vec<(String, String)>,
    /// Serve HTTPS (`server.tls_*` among `env`) with a certificate from this
    /// CA (PEM): the public URL is https and the health check trusts it.
    pub https_ca: Option<Vec<u8>>,
}

/// `kleidia serve`, killed when dropped.
pub struct KleidiaApp {
    pub base_url: String,
    pub port: u16,
    pub proc: ChildGuard,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl KleidiaApp {
    /// `kleidia serve` on `opts.port`; returns once `/healthz` answers.
    /// (Not port 0: the public URL, which is the JWT issuer and the origin
    /// forms must come from, has to be known before the process starts.)
    pub async fn spawn(opts: AppOptions) -> Result<Self> {
        let port = opts.port;
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("kleidia.log");
        let scheme = if opts.https_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = kleidia_command();
        cmd.arg("serve")
            .env("KLEIDIA_SERVER_BIND", format!("127.0.0.1:{port}"))
            .env("KLEIDIA_SERVER_PUBLIC_URL", &base_url)
            .env("KLEIDIA_SERVER_SHUTDOWN_GRACE_SECS", "5")
            .env("KLEIDIA_OPENBAO_ADDR", &opts.bao_addr)
            .env("KLEIDIA_OPENBAO_TOKEN", &opts.bao_token)
            .env("KLEIDIA_OPENBAO_TIMEOUT_SECS", "2")
            .env("KLEIDIA_LOG_LEVEL", "debug")
            // No license service unless the test starts one: a closed port, so
            // a `make demo` running on this machine never answers for it.
            .env("KLEIDIA_LICENSE_URL", "http://127.0.0.1:9");
        cmd.env("KLEIDIA_DATABASE_URL", &opts.database_url);
        if let Some(owner) = &opts.owner_url {
            cmd.env("KLEIDIA_DATABASE_OWNER_URL", owner);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut http = reqwest::Client::builder();
        if let Some(ca) = &opts.https_ca {
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
                .tls_built_in_root_certs(false);
        }
        let http = http.build()?;
        let mut proc = ChildGuard::spawn_logged("kleidia serve", &mut cmd, &log_path)?;
        let healthz = format!("{base_url}/healthz");
        if let Err(e) = proc
            .wait_healthy_with(&http, &healthz, Duration::from_secs(60), &log_path)
            .await
        {
            proc.kill();
            return Err(e);
        }
        Ok(Self {
            base_url,
            port,
            proc,
            log_path,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }
}
