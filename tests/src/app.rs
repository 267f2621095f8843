//! Start the `kleidia` binary as a real process for a test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::{bin_path, free_port, wait_until, ChildGuard};

/// A `kleidia` command with every inherited `KLEIDIA_*` variable removed, so
/// the test alone decides the configuration.
pub fn kleidia_command() -> Command {
    let mut c = Command::new(bin_path("kleidia"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KLEIDIA_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

pub struct AppOptions {
    pub database_url: String,
    pub bao_addr: String,
    pub bao_token: String,
    /// Extra `KLEIDIA_*` variables.
    pub env: Vec<(String, String)>,
}

pub struct KleidiaApp {
    pub base_url: String,
    pub port: u16,
    pub proc: ChildGuard,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl KleidiaApp {
    /// `kleidia serve` on a free port; returns once `/healthz` answers.
    pub async fn spawn(opts: AppOptions) -> Result<Self> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("kleidia.log");
        let log = std::fs::File::create(&log_path)?;
        let base_url = format!("http://127.0.0.1:{port}");
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
        // Run as the runtime role and migrate as the owner when the stack
        // has both (scripts/stack.sh); otherwise one URL is both.
        match crate::runtime_url_for(&opts.database_url) {
            Some(runtime) => cmd
                .env("KLEIDIA_DATABASE_URL", runtime)
                .env("KLEIDIA_DATABASE_OWNER_URL", &opts.database_url),
            None => cmd.env("KLEIDIA_DATABASE_URL", &opts.database_url),
        };
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(log.try_clone()?).stderr(log).spawn()?;
        let mut me = Self {
            base_url: base_url.clone(),
            port,
            proc: ChildGuard::new("kleidia", child),
            log_path,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let up = wait_until(Duration::from_secs(60), || {
            let http = http.clone();
            let url = format!("{base_url}/healthz");
            async move { matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        if !up {
            let log = me.log();
            me.proc.kill();
            bail!("kleidia serve did not come up on {base_url}; log:\n{log}");
        }
        Ok(me)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
