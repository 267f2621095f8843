//! Many vpcd readers for one test: a private pcscd.
//!
//! The system pcscd has one vpcd entry (two readers, shared by every card
//! test on the machine under `pcsc.lock`). A test that needs more software
//! YubiKeys at once (the load test) starts its own pcscd with several vpcd
//! entries, each on its own pair of TCP ports, and points the agent at it
//! with `PCSCLITE_CSOCK_NAME`. pcscd keeps its pid file and socket under the
//! fixed `/run/pcscd`, so it runs in a mount namespace of its own where a
//! temporary directory is bound over `/run/pcscd`: the system pcscd and its
//! readers `Virtual PCD 00 00`/`00 01` are not touched. Needs root (`unshare
//! --mount`), as the stack's pcscd does.
//!
//! The vpcd driver serves one entry per pcscd (a second entry's readers
//! show up, but its ports never take a card), so a private pcscd has one
//! entry: two readers. A test that needs more starts more of them, with an
//! agent each (a workstation agent talks to one pcscd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{read_log, ChildGuard};

/// Readers per private pcscd (one vpcd entry).
pub const MAX_READERS: usize = 2;

/// One reader of a private pcscd.
#[derive(Clone, Debug)]
pub struct Reader {
    /// As pcscd names it: `Virtual PCD {port of the entry} 00 0{slot}`.
    pub name: String,
    /// The vpcd TCP port a software YubiKey connects to.
    pub port: u16,
}

/// A pcscd of the test's own, with `readers` vpcd readers.
pub struct PrivatePcscd {
    pub socket: PathBuf,
    pub readers: Vec<Reader>,
    pub log: PathBuf,
    proc: ChildGuard,
    _dir: tempfile::TempDir,
}

impl PrivatePcscd {
    /// Start pcscd with `readers` readers (2: one vpcd entry) on the vpcd
    /// ports from `first_port` up (`readers` ports in all).
    pub fn start(first_port: u16, readers: usize) -> Result<Self> {
        if readers == 0 || !readers.is_multiple_of(2) || readers > MAX_READERS {
            bail!(
                "{readers} readers: vpcd entries give two each, pcscd takes at most {MAX_READERS}"
            );
        }
        let dir = tempfile::tempdir()?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run)?;
        let mut conf = String::new();
        let mut list = Vec::new();
        for entry in 0..readers / 2 {
            let port = first_port + 2 * entry as u16;
            conf.push_str(&format!(
                "FRIENDLYNAME \"Virtual PCD {port}\"\nDEVICENAME   /dev/null:{port}\n\
                 LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID    {port}\n\n"
            ));
            for slot in 0..2u16 {
                list.push(Reader {
                    name: format!("Virtual PCD {port} 00 {slot:02}"),
                    port: port + slot,
                });
            }
        }
        let conf_file = dir.path().join("reader.conf");
        std::fs::write(&conf_file, conf)?;
        let log = dir.path().join("pcscd.log");
        let script = format!(
            "mount --bind '{}' /run/pcscd && exec pcscd --foreground --config '{}'",
            run.display(),
            conf_file.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let proc = ChildGuard::spawn_logged("private-pcscd", &mut cmd, &log)?;
        let socket = run.join("pcscd.comm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the private pcscd did not start:\n{}", read_log(&log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            socket,
            readers: list,
            log,
            proc,
            _dir: dir,
        })
    }

    /// The environment a PC/SC client (the agent, ykman) needs to use this pcscd.
    pub fn env(&self) -> (&'static str, String) {
        ("PCSCLITE_CSOCK_NAME", self.socket.display().to_string())
    }

    /// `ykman --reader READER ARGS…` through this pcscd; stdout on success.
    pub fn ykman(&self, reader: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ykman")
            .env("PCSCLITE_CSOCK_NAME", &self.socket)
            .arg("--reader")
            .arg(reader)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("run ykman")?;
        if !out.status.success() {
            bail!(
                "ykman --reader {reader:?} {:?}: {}",
                args.iter().take(3).collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl PrivatePcscd {
    /// The escrowed PIN, PUK and management key open the card in `reader`
    /// (each changed to itself with ykman: a wrong PIN or PUK would fail and
    /// cost a try, a wrong management key fails to authenticate).
    pub fn escrow_opens(&self, reader: &str, escrow: &serde_json::Value) -> Result<()> {
        let pin = escrow["pin"].as_str().context("no PIN escrowed")?;
        let puk = escrow["puk"].as_str().context("no PUK escrowed")?;
        let key = escrow["management_key"]
            .as_str()
            .context("no management key escrowed")?;
        let algorithm = match escrow["management_key_algorithm"].as_str() {
            Some("3des") => "TDES",
            Some("aes128") => "AES128",
            Some("aes192") => "AES192",
            Some("aes256") => "AES256",
            other => bail!("escrowed management key algorithm {other:?}"),
        };
        self.ykman(
            reader,
            &["piv", "access", "change-pin", "-P", pin, "-n", pin],
        )
        .context("the escrowed PIN")?;
        self.ykman(
            reader,
            &["piv", "access", "change-puk", "-p", puk, "-n", puk],
        )
        .context("the escrowed PUK")?;
        self.ykman(
            reader,
            &[
                "piv",
                "access",
                "change-management-key",
                "-f",
                "-a",
                algorithm,
                "-m",
                key,
                "-n",
                key,
            ],
        )
        .context("the escrowed management key")?;
        Ok(())
    }
}
