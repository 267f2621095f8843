//! Configuration: defaults, then an optional TOML file, then `KLEIDIA_AGENT_*`
//! environment variables, then flags (clap merges the last two).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use kleidia_protocol::ticket::TicketVerifyingKey;
use reqwest::Url;
use serde::Deserialize;

/// Kleidia workstation agent: lets the Kleidia web page drive the YubiKeys
/// plugged into this computer. Listens on 127.0.0.1 and [::1] only.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// TOML config file (keys as the long flags, with `_` for `-`).
    #[arg(long, env = "KLEIDIA_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// URL of the Kleidia server. Its origin is the only one allowed to call the
    /// agent; the ticket key is fetched from it unless --ticket-key is given.
    #[arg(long, env = "KLEIDIA_AGENT_KLEIDIA_URL")]
    pub kleidia_url: Option<String>,
    /// TCP port on 127.0.0.1 and [::1] (0 = any free port, printed at start).
    #[arg(long, env = "KLEIDIA_AGENT_PORT")]
    pub port: Option<u16>,
    /// Ticket verification key: standard base64 of the raw 32-byte Ed25519
    /// public key (the `public_key` of GET {kleidia_url}/api/agent/ticket-key).
    #[arg(long, env = "KLEIDIA_AGENT_TICKET_KEY")]
    pub ticket_key: Option<String>,
    /// Extra CA certificate(s), PEM, trusted for the HTTPS Kleidia URL (an
    /// internal CA); the public web PKI roots are trusted as well.
    #[arg(long, env = "KLEIDIA_AGENT_KLEIDIA_CA_FILE", value_name = "FILE")]
    pub kleidia_ca_file: Option<PathBuf>,
    /// Also use vsmartcard `Virtual PCD` readers (software YubiKeys; tests and demo only).
    #[arg(long, env = "KLEIDIA_AGENT_ALLOW_VIRTUAL_READERS")]
    pub allow_virtual_readers: Option<bool>,
    /// Where used ticket ids are kept (default: $XDG_STATE_HOME/kleidia-agent).
    #[arg(long, env = "KLEIDIA_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `kleidia_agent=debug`.
    #[arg(long, env = "KLEIDIA_AGENT_LOG")]
    pub log: Option<String>,
}

/// The config file. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub kleidia_url: Option<String>,
    pub kleidia_ca_file: Option<PathBuf>,
    pub port: Option<u16>,
    pub ticket_key: Option<String>,
    pub allow_virtual_readers: Option<bool>,
    pub state_dir: Option<PathBuf>,
    pub log: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kleidia_url: Url,
    /// `scheme://host[:port]` of `kleidia_url`, compared byte for byte with `Origin`.
    pub allowed_origin: String,
    pub port: u16,
    pub ticket_key: Option<TicketVerifyingKey>,
    /// PEM of extra CA certificates for fetching the ticket key over HTTPS.
    pub kleidia_ca_pem: Option<Vec<u8>>,
    pub allow_virtual_readers: bool,
    pub state_dir: PathBuf,
    pub log: String,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let kleidia_url = cli
            .kleidia_url
            .or(file.kleidia_url)
            .context("the Kleidia URL is required: --kleidia-url, KLEIDIA_AGENT_KLEIDIA_URL or kleidia_url in the config file")?;
        let state_dir = match cli.state_dir.or(file.state_dir) {
            Some(d) => d,
            None => default_state_dir()?,
        };
        let ca_file = cli.kleidia_ca_file.or(file.kleidia_ca_file);
        let mut config = Self::new(
            &kleidia_url,
            cli.port
                .or(file.port)
                .unwrap_or(kleidia_protocol::AGENT_DEFAULT_PORT),
            cli.ticket_key.or(file.ticket_key).as_deref(),
            cli.allow_virtual_readers
                .or(file.allow_virtual_readers)
                .unwrap_or(false),
            state_dir,
            cli.log.or(file.log).unwrap_or_else(|| "info".into()),
        )?;
        if let Some(path) = ca_file {
            let pem = std::fs::read(&path)
                .with_context(|| format!("read the Kleidia CA file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .unwrap_or_default();
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            config.kleidia_ca_pem = Some(pem);
        }
        Ok(config)
    }

    pub fn new(
        kleidia_url: &str,
        port: u16,
        ticket_key: Option<&str>,
        allow_virtual_readers: bool,
        state_dir: PathBuf,
        log: String,
    ) -> Result<Self> {
        let url = Url::parse(kleidia_url)
            .with_context(|| format!("invalid Kleidia URL {kleidia_url:?}"))?;
        match url.scheme() {
            "https" => {}
            // Plain HTTP would let anyone on the path swap the ticket key, or
            // impersonate the allowed origin; only the one-machine demo uses it.
            "http" if is_loopback_url(&url) => {}
            "http" => bail!("the Kleidia URL must be https:// (plain http:// only for 127.0.0.1, [::1] or localhost)"),
            other => bail!("the Kleidia URL has unsupported scheme {other}"),
        }
        if url.host_str().is_none() {
            bail!("the Kleidia URL has no host");
        }
        let allowed_origin = url.origin().ascii_serialization();
        let ticket_key = ticket_key
            .map(|k| {
                TicketVerifyingKey::from_base64(k).context(
                    "invalid ticket key (expected base64 of a raw 32-byte Ed25519 public key)",
                )
            })
            .transpose()?;
        Ok(Self {
            kleidia_url: url,
            allowed_origin,
            port,
            ticket_key,
            kleidia_ca_pem: None,
            allow_virtual_readers,
            state_dir,
            log,
        })
    }
}

pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `$XDG_STATE_HOME/kleidia-agent` or `~/.local/state/kleidia-agent` on
/// Linux and other Unix; `~/Library/Application Support/kleidia-agent` on
/// macOS; `%LOCALAPPDATA%\Kleidia\agent` on Windows.
fn default_state_dir() -> Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        if let Some(d) = var("LOCALAPPDATA") {
            return Ok(d.join("Kleidia").join("agent"));
        }
    } else if cfg!(target_os = "macos") {
        if let Some(h) = var("HOME") {
            return Ok(h.join("Library/Application Support/kleidia-agent"));
        }
    } else {
        if let Some(d) = var("XDG_STATE_HOME") {
            return Ok(d.join("kleidia-agent"));
        }
        if let Some(h) = var("HOME") {
            return Ok(h.join(".local/state/kleidia-agent"));
        }
    }
    bail!("no default state directory here: pass --state-dir")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> Result<Config> {
        Config::new(url, 0, None, false, PathBuf::from("/tmp/x"), "info".into())
    }

    #[test]
    fn the_allowed_origin_is_the_scheme_host_and_port_of_the_kleidia_url() {
        assert_eq!(
            cfg("https://kleidia.example.com/app/")
                .unwrap()
                .allowed_origin,
            "https://kleidia.example.com"
        );
        assert_eq!(
            cfg("https://kleidia.example.com:8443")
                .unwrap()
                .allowed_origin,
            "https://kleidia.example.com:8443"
        );
        assert_eq!(
            cfg("http://127.0.0.1:8080").unwrap().allowed_origin,
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn plain_http_is_refused_for_a_non_loopback_kleidia_url() {
        assert!(cfg("http://kleidia.example.com").is_err());
        assert!(cfg("http://localhost:8080").is_ok());
        assert!(cfg("http://[::1]:8080").is_ok());
        assert!(cfg("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_an_error() {
        assert!(
            toml::from_str::<FileConfig>("kleidia_url = \"https://x\"\nbind = \"0.0.0.0\"")
                .is_err()
        );
        let f: FileConfig = toml::from_str("kleidia_url = \"https://x\"\nport = 1234").unwrap();
        assert_eq!(f.port, Some(1234));
    }

    #[test]
    fn a_ca_file_without_a_pem_certificate_is_refused_at_start() {
        let f = std::env::temp_dir().join(format!("kleidia-agent-ca-{}.pem", std::process::id()));
        std::fs::write(&f, "not a certificate").unwrap();
        let cli = Cli::try_parse_from([
            "kleidia-agent",
            "--kleidia-url",
            "https://kleidia.example.com",
            "--state-dir",
            "/tmp/kleidia-agent-test",
            "--kleidia-ca-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        let e = Config::from_cli(cli).unwrap_err();
        assert!(format!("{e:#}").contains("no PEM certificate"), "{e:#}");
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn a_malformed_ticket_key_is_refused_at_start() {
        assert!(Config::new(
            "https://x",
            0,
            Some("bm90IGEga2V5"),
            false,
            PathBuf::new(),
            String::new()
        )
        .is_err());
    }
}
