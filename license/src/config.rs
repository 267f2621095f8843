//! Configuration of `kleidia-license serve`: defaults ← optional TOML file
//! (`--config`) ← `KLEIDIA_LICENSE_*` environment ← command-line flags.
//!
//! Keys are flat (`listen`, `openbao_addr`, …; env `KLEIDIA_LICENSE_LISTEN`,
//! `KLEIDIA_LICENSE_OPENBAO_ADDR`, …). Unknown keys are an error naming the
//! key. Secrets are `SecretString`s (redacted in `Debug`), each with a
//! `…_file` twin that reads it from a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Serialized};
use kleidia_openbao::{AuthMethod, AuthSettings, SERVICE_ACCOUNT_TOKEN_FILE};
use kleidia_protocol::config::{self as loader, resolve_secret_file, Settings};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use kleidia_protocol::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// OpenBao address.
    pub openbao_addr: String,
    /// How the service logs in to OpenBao: `token` (`openbao_token` or
    /// `openbao_token_file`), `approle` (`openbao_role_id_file`,
    /// `openbao_secret_id_file`) or `jwt` (a Kubernetes service-account
    /// token: `openbao_jwt_role`, `openbao_jwt_token_file`). The token is
    /// renewed in the background and the login repeated when needed.
    pub openbao_auth: AuthMethod,
    /// Token with the `kleidia-license` policy (a root token only in dev).
    pub openbao_token: Option<SecretString>,
    /// Read the token from this file instead (wins over `openbao_token`).
    pub openbao_token_file: Option<PathBuf>,
    pub openbao_approle_mount: String,
    pub openbao_role_id_file: Option<PathBuf>,
    pub openbao_secret_id_file: Option<PathBuf>,
    pub openbao_jwt_mount: String,
    pub openbao_jwt_role: String,
    pub openbao_jwt_token_file: PathBuf,
    /// PEM bundle of the CA(s) of OpenBao's TLS certificate.
    pub openbao_ca_file: Option<PathBuf>,
    /// Also trust the system's trust store.
    pub openbao_system_roots: bool,
    /// KV v2 mount holding the service's data under `kleidia/`.
    pub openbao_mount: String,
    /// Per-request timeout towards OpenBao.
    pub openbao_timeout_secs: u64,
    /// A VALID license within this many days of its end is EXPIRING.
    pub expiring_days: u32,
    /// When set, every endpoint but `/healthz` requires
    /// `Authorization: Bearer <api_token>` (the app's copy of the token).
    pub api_token: Option<SecretString>,
    /// Read the API token from this file instead (wins over `api_token`).
    pub api_token_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// TEST ONLY: start the service's clock at this time (RFC 3339 or
    /// `@<unix seconds>`). It may
    /// only move the clock forward (an earlier time than the system clock is
    /// refused), so it can end a trial or license early but never extend one.
    pub test_now: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            openbao_addr: "http://127.0.0.1:8200".into(),
            openbao_auth: AuthMethod::Token,
            openbao_token: None,
            openbao_token_file: None,
            openbao_approle_mount: "approle".into(),
            openbao_role_id_file: None,
            openbao_secret_id_file: None,
            openbao_jwt_mount: "jwt".into(),
            openbao_jwt_role: "kleidia-license".into(),
            openbao_jwt_token_file: SERVICE_ACCOUNT_TOKEN_FILE.into(),
            openbao_ca_file: None,
            openbao_system_roots: false,
            openbao_mount: "license".into(),
            openbao_timeout_secs: 5,
            expiring_days: 30,
            api_token: None,
            api_token_file: None,
            log_format: LogFormat::Text,
            shutdown_grace_secs: 10,
            test_now: None,
        }
    }
}

impl Config {
    fn openbao_auth_settings(&self) -> AuthSettings {
        AuthSettings {
            method: self.openbao_auth,
            token: self.openbao_token.clone(),
            token_file: self.openbao_token_file.clone(),
            approle_mount: Some(self.openbao_approle_mount.clone()),
            role_id_file: self.openbao_role_id_file.clone(),
            secret_id_file: self.openbao_secret_id_file.clone(),
            jwt_mount: Some(self.openbao_jwt_mount.clone()),
            jwt_role: Some(self.openbao_jwt_role.clone()),
            jwt_token_file: Some(self.openbao_jwt_token_file.clone()),
        }
    }

    /// The shared OpenBao client's settings: address, login, TLS, timeout.
    pub fn openbao_client_config(&self) -> Result<kleidia_openbao::Config, ConfigError> {
        let invalid = |e: String| ConfigError::Invalid(e);
        let addr = url::Url::parse(&self.openbao_addr)
            .map_err(|e| invalid(format!("openbao_addr {:?}: {e}", self.openbao_addr)))?;
        let auth = self
            .openbao_auth_settings()
            .to_auth("openbao_")
            .map_err(|e| invalid(e.to_string()))?;
        let mut c = kleidia_openbao::Config::new(addr, auth);
        c.tls = kleidia_openbao::Tls {
            ca_file: self.openbao_ca_file.clone(),
            system_roots: self.openbao_system_roots,
        };
        c.timeout = std::time::Duration::from_secs(self.openbao_timeout_secs.max(1));
        Ok(c)
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openbao_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Settings for Config {
    /// `KLEIDIA_LICENSE_*` variables that are not configuration keys: the
    /// config file path (`--config`), build-time key selection (build.rs), and
    /// the app's `license.url` (`KLEIDIA_LICENSE_URL`), so one environment can
    /// serve both processes. `api_token` is deliberately shared with the app.
    const NOT_KEYS: &'static [&'static str] = &["config", "pubkey", "pubkey_file", "url"];

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        resolve_secret_file(
            &mut self.openbao_token,
            self.openbao_token_file.as_deref(),
            "openbao_token_file",
        )?;
        resolve_secret_file(
            &mut self.api_token,
            self.api_token_file.as_deref(),
            "api_token_file",
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(self.openbao_addr.starts_with("http://") || self.openbao_addr.starts_with("https://"))
        {
            return invalid(format!(
                "openbao_addr {:?} is not an http(s) URL",
                self.openbao_addr
            ));
        }
        if self.openbao_auth == AuthMethod::Token
            && self
                .openbao_token
                .as_ref()
                .is_none_or(|t| t.expose_secret().trim().is_empty())
        {
            return invalid(
                "openbao_token is not set (KLEIDIA_LICENSE_OPENBAO_TOKEN or KLEIDIA_LICENSE_OPENBAO_TOKEN_FILE), nor another openbao_auth".into(),
            );
        }
        self.openbao_auth_settings()
            .to_auth("openbao_")
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.openbao_mount.is_empty() || self.openbao_mount.contains(['/', '.', ' ']) {
            return invalid(format!(
                "openbao_mount {:?} is not a mount name",
                self.openbao_mount
            ));
        }
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().len() < 16)
        {
            return invalid("api_token must be at least 16 characters".into());
        }
        if self.expiring_days > 365 {
            return invalid("expiring_days must be at most 365".into());
        }
        self.test_start()?;
        Ok(())
    }
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("KLEIDIA_LICENSE_"), overrides)
    }

    fn load_from(
        file: Option<&Path>,
        env: Env,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        loader::load_with_flags(file, env, Serialized::defaults(overrides))
    }

    /// The parsed `test_now` (RFC 3339 or `@<unix seconds>`), if set.
    pub fn test_start(&self) -> Result<Option<OffsetDateTime>, ConfigError> {
        let Some(s) = &self.test_now else {
            return Ok(None);
        };
        let bad = || {
            ConfigError::Invalid(format!(
                "test_now {s:?} is neither RFC 3339 nor @<unix seconds>"
            ))
        };
        if let Some(secs) = s.strip_prefix('@') {
            let n: i64 = secs.parse().map_err(|_| bad())?;
            return OffsetDateTime::from_unix_timestamp(n)
                .map(Some)
                .map_err(|_| bad());
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_none() -> Env {
        Env::prefixed("KLEIDIA_LICENSE_TEST_NOTHING_AT_ALL_")
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("license.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_with_a_token_give_the_documented_listen_address() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "openbao_token = \"t\"\n");
        let c = Config::load_from(Some(&p), env_none(), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(c.openbao_mount, "license");
        assert_eq!(c.expiring_days, 30);
        assert!(c.api_token.is_none());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            "openbao_token = \"t\"\nlisten_addr = \"127.0.0.1:1\"\n",
        );
        let err = Config::load_from(Some(&p), env_none(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn a_missing_token_is_an_error_naming_the_variables() {
        let err = Config::load_from(None, env_none(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("KLEIDIA_LICENSE_OPENBAO_TOKEN"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "bao-secret-value\n").unwrap();
        let api = dir.path().join("api");
        std::fs::write(&api, "api-secret-value-0123456789").unwrap();
        let p = file(
            &dir,
            &format!(
                "openbao_token_file = {:?}\napi_token_file = {:?}\n",
                tok.display().to_string(),
                api.display().to_string()
            ),
        );
        let c = Config::load_from(Some(&p), env_none(), &Overrides::default()).unwrap();
        assert_eq!(
            c.openbao_token.as_ref().unwrap().expose_secret(),
            "bao-secret-value"
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("bao-secret-value"), "{shown}");
        assert!(!shown.contains("api-secret-value"), "{shown}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn the_config_path_build_key_and_app_url_variables_are_not_config_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "openbao_token = \"t\"\n");
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_LICENSE_CONFIG", p.display().to_string());
            jail.set_env("KLEIDIA_LICENSE_PUBKEY_FILE", "/nowhere.pub");
            jail.set_env("KLEIDIA_LICENSE_URL", "http://127.0.0.1:8090");
            jail.set_env("KLEIDIA_LICENSE_EXPIRING_DAYS", "7");
            let c = Config::load(Some(&p), &Overrides::default()).unwrap();
            assert_eq!(c.expiring_days, 7);
            jail.set_env("KLEIDIA_LICENSE_EXPIRING_DAZE", "7");
            let err = Config::load(Some(&p), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("expiring_daze"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn command_line_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            "openbao_token = \"t\"\nlisten = \"127.0.0.1:1000\"\nlog_format = \"text\"\n",
        );
        let o = Overrides {
            listen: Some("127.0.0.1:2000".into()),
            log_format: Some(LogFormat::Json),
            ..Default::default()
        };
        let c = Config::load_from(Some(&p), env_none(), &o).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:2000");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn a_short_api_token_and_a_bad_test_clock_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "openbao_token = \"t\"\napi_token = \"short\"\n");
        assert!(Config::load_from(Some(&p), env_none(), &Overrides::default()).is_err());
        let p = file(&dir, "openbao_token = \"t\"\ntest_now = \"yesterday\"\n");
        let err = Config::load_from(Some(&p), env_none(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("test_now"), "{err}");
    }
}
