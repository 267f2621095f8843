//! A real SMTP server for the notice tests (Python's aiosmtpd, from the venv
//! `scripts/install-deps.sh` makes), storing every mail it accepts in a
//! Maildir the test reads; and a webhook receiver that keeps every POST body.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{free_port, wait_until, ChildGuard};

/// The aiosmtpd venv (`SMTP_VENV`, else `$KLEIDIA_CACHE/smtp-venv`, else
/// `~/.cache/kleidia/smtp-venv`), as `scripts/install-deps.sh` names it.
fn smtp_python() -> PathBuf {
    if let Ok(v) = std::env::var("SMTP_VENV") {
        return Path::new(&v).join("bin/python");
    }
    let cache = std::env::var("KLEIDIA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                        .join(".cache")
                })
                .join("kleidia")
        });
    cache.join("smtp-venv/bin/python")
}

/// One mail as the server stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope recipient(s) (aiosmtpd's `X-RcptTo`).
    pub rcpt_to: String,
    pub subject: String,
    /// Headers and body as received.
    pub raw: String,
}

pub struct SmtpServer {
    pub port: u16,
    maildir: PathBuf,
    _proc: ChildGuard,
}

impl SmtpServer {
    /// Start aiosmtpd on a free port, storing mail under `dir/maildir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let python = smtp_python();
        if !python.exists() {
            bail!(
                "{} is missing: run scripts/install-deps.sh (it installs aiosmtpd)",
                python.display()
            );
        }
        let port = free_port();
        let maildir = dir.join("maildir");
        let proc = ChildGuard::spawn_logged(
            "aiosmtpd",
            Command::new(python).args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
                maildir.to_str().context("maildir path")?,
            ]),
            &dir.join("aiosmtpd.log"),
        )?;
        let up = wait_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        if !up {
            bail!(
                "aiosmtpd did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("aiosmtpd.log")).unwrap_or_default()
            );
        }
        Ok(Self {
            port,
            maildir,
            _proc: proc,
        })
    }

    /// Every mail received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let raw = std::fs::read_to_string(e.path()).unwrap_or_default();
                let header = |name: &str| {
                    raw.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| {
                            l.split_once(':')
                                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                out.push(Mail {
                    rcpt_to: header("X-RcptTo"),
                    subject: header("Subject"),
                    raw: raw.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.rcpt_to.cmp(&b.rcpt_to));
        out
    }
}

/// An HTTP server on a free port that answers every request 204 and keeps
/// the bodies.
pub struct WebhookReceiver {
    pub port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Headers, then Content-Length bytes of body.
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.split_once(':')
                                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len])
                                    .to_string();
                                kept.lock().unwrap().push(body);
                                let _ = s
                                    .write_all(
                                        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                    )
                                    .await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self { port, bodies, task })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
