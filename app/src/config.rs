//! Configuration: defaults, then an optional TOML file (`--config`), then
//! `KLEIDIA_*` environment variables (`KLEIDIA_SECTION_KEY`, e.g.
//! `KLEIDIA_DATABASE_URL`, `KLEIDIA_OPENBAO_TOKEN_FILE`), loaded by
//! [`kleidia_protocol::config`]: every section rejects unknown keys, secrets
//! are `SecretString`s that never print, each with a `…_file` twin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::Env;
use kleidia_openbao::{AuthMethod, AuthSettings, SERVICE_ACCOUNT_TOKEN_FILE};
use kleidia_protocol::config::{self as loader, resolve_secret_file, Settings};
use secrecy::SecretString;
use serde::Deserialize;

pub use kleidia_protocol::config::ConfigError;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub openbao: OpenBaoConfig,
    pub license: LicenseConfig,
    pub log: LogConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub throttle: ThrottleConfig,
    pub attestation: AttestationConfig,
    pub agent: AgentConfig,
    pub audit: AuditConfig,
    pub oidc: OidcConfig,
    // s4-fleet: expiry notices.
    pub notices: NoticesConfig,
    // s5-faults: closing operations whose ticket expired with no result.
    pub operations: OperationsConfig,
}

// --- s4-fleet: expiry notices (`fleet::notices`) ---

/// How the notice mails reach the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: only for a relay on the same host or in tests.
    None,
}

/// The daily notices about certificates near expiry and keys still on
/// factory credentials (`fleet::notices`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoticesConfig {
    /// Run the job on its own every `interval_secs` (the first run at start).
    /// Off: only `kleidia notices run` and the admin's "Send now" send.
    pub enabled: bool,
    /// Seconds between runs; also the window in which a recipient is told
    /// about one thing once (86400: once a day).
    pub interval_secs: u64,
    /// Certificates expiring within this many days are announced.
    pub warning_days: u32,
    /// SMTP server; unset: no mail (the webhook alone).
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    pub smtp_username: Option<String>,
    /// SMTP password (secret).
    pub smtp_password: Option<SecretString>,
    /// Read the SMTP password from this file instead (wins over `smtp_password`).
    pub smtp_password_file: Option<PathBuf>,
    /// The mails' From address, e.g. `Kleidia <kleidia@example.com>`.
    pub from: String,
    /// A URL that gets each run's notices as one JSON POST (secret: such
    /// URLs often carry a token).
    pub webhook_url: Option<SecretString>,
    /// Read the webhook URL from this file instead (wins over `webhook_url`).
    pub webhook_url_file: Option<PathBuf>,
    /// Seconds an SMTP conversation or the webhook may take.
    pub timeout_secs: u64,
}

impl Default for NoticesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: 86_400,
            warning_days: 30,
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            smtp_password_file: None,
            from: "Kleidia <kleidia@localhost>".into(),
            webhook_url: None,
            webhook_url_file: None,
            timeout_secs: 30,
        }
    }
}

impl NoticesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.interval_secs == 0 || self.timeout_secs == 0 {
            return invalid("notices.interval_secs and notices.timeout_secs must be at least 1");
        }
        if !(1..=3650).contains(&self.warning_days) {
            return invalid("notices.warning_days must be between 1 and 3650");
        }
        if self.enabled && self.smtp_host.is_none() && self.webhook_url.is_none() {
            return invalid("notices.enabled needs notices.smtp_host or notices.webhook_url");
        }
        if self.smtp_username.is_some() != self.smtp_password.is_some() {
            return invalid("notices.smtp_username and notices.smtp_password go together");
        }
        if self.smtp_password.is_some() && self.smtp_tls == SmtpTls::None {
            return invalid("notices.smtp_password is never sent without TLS (notices.smtp_tls)");
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return invalid("notices.from must be an address like Kleidia <kleidia@example.com>");
        }
        if let Some(u) = &self.webhook_url {
            use secrecy::ExposeSecret;
            match url::Url::parse(u.expose_secret()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return invalid("notices.webhook_url must be an http or https URL"),
            }
        }
        Ok(())
    }
}

// --- end s4-fleet ---

// --- s5-faults: operations whose ticket expired (`fleet::operations::expiry`) ---

/// The tickets of operations, and closing the operations whose ticket
/// expired with no result.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationsConfig {
    /// How long a ticket is valid (10–120 s; the agent refuses more than 120).
    pub ticket_lifetime_secs: u64,
    /// How long after its ticket expired a non-secret operation with no
    /// result is closed as `expired`: room for a card command started just
    /// before the expiry (a touch waits up to 15 s), its report, and an
    /// agent whose clock is late (0–3600 s).
    pub result_grace_secs: u64,
    /// How often the server looks for such operations (at least 1 s).
    pub sweep_interval_secs: u64,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            ticket_lifetime_secs: 90,
            result_grace_secs: 60,
            sweep_interval_secs: 30,
        }
    }
}

impl OperationsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !(10..=120).contains(&self.ticket_lifetime_secs) {
            return invalid("operations.ticket_lifetime_secs must be between 10 and 120");
        }
        if self.result_grace_secs > 3600 {
            return invalid("operations.result_grace_secs must be at most 3600");
        }
        if self.sweep_interval_secs == 0 {
            return invalid("operations.sweep_interval_secs must be at least 1");
        }
        Ok(())
    }
}

// --- end s5-faults ---

/// Anchoring the audit chain head in OpenBao (see `crate::audit::anchor`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The server anchors the chain head at least this often (when it moved).
    pub anchor_interval_secs: u64,
    /// ... and as soon as this many events were appended since the last anchor.
    pub anchor_every_events: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            anchor_interval_secs: 60,
            anchor_every_events: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the page finds the workstation agent (the CSP allows it in
    /// `connect-src`). Loopback only: the agent never listens elsewhere.
    pub url: url::Url,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            url: default_url("http://127.0.0.1:56123"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AttestationConfig {
    /// PEM bundle of trusted PIV attestation roots (and intermediates), used
    /// instead of Yubico's, which are built in (app/trust/yubico/) and trusted
    /// when this is unset. The demo and the tests set it to the software
    /// YubiKey's test root.
    pub roots_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// The URL people and agents use to reach Kleidia (scheme, host, port).
    /// It is the CORS origin the agent trusts and the base of CRL/issuer URLs.
    pub public_url: url::Url,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Behind a load balancer, the header carrying the client's address
    /// (`x-forwarded-for`: its last entry, the one the balancer added; or
    /// e.g. `x-real-ip`). Unset: the TCP peer address. Only set it when every
    /// request comes through that proxy, or clients can pick their address
    /// (and dodge the per-client sign-in throttle).
    pub client_ip_header: Option<String>,
    /// `Host` names the server answers besides `public_url`'s (`name` for
    /// any port, or `name:port`). Every other Host is refused (421), which
    /// defeats DNS rebinding. `/healthz` and `/readyz` answer any Host
    /// (probes address the pod), and `/metrics` needs `metrics_token`.
    pub allowed_hosts: Vec<String>,
    /// Bearer token for `GET /metrics` (secret). Unset: `/metrics` is 404.
    pub metrics_token: Option<SecretString>,
    /// Read the metrics token from this file instead (wins over `metrics_token`).
    pub metrics_token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (leaf first), for sites
    /// without a load balancer terminating TLS. Needs `tls_key_file` and an
    /// https `public_url`. SIGHUP reloads both files.
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: default_url("http://127.0.0.1:8080"),
            shutdown_grace_secs: 20,
            max_body_bytes: 256 * 1024,
            client_ip_header: None,
            allowed_hosts: Vec::new(),
            metrics_token: None,
            metrics_token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL the server runs with (may hold a password, so it is a
    /// secret). With `owner_url` set this is the runtime role: it gets only
    /// the grants it needs and cannot alter the audit log's triggers.
    pub url: SecretString,
    /// Read the URL from this file instead (wins over `url`).
    pub url_file: Option<PathBuf>,
    /// URL of the role that owns the schema: migrations run with it and grant
    /// the runtime role of `url`. Unset: `url` is both (development only).
    pub owner_url: Option<SecretString>,
    /// Read the owner URL from this file instead (wins over `owner_url`).
    pub owner_url_file: Option<PathBuf>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// How long `serve`/`migrate` keep retrying to reach PostgreSQL at start.
    pub connect_retry_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://kleidia:kleidia@127.0.0.1:5432/kleidia"),
            url_file: None,
            owner_url: None,
            owner_url_file: None,
            max_connections: 20,
            acquire_timeout_secs: 5,
            connect_retry_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenBaoConfig {
    pub addr: url::Url,
    /// How the app logs in: `token` (a token or token file; development and
    /// bootstrap), `approle` (`role_id_file`, `secret_id_file`) or `jwt`
    /// (a Kubernetes service-account token, `jwt_role`, `jwt_token_file`).
    /// The token is renewed in the background and the login repeated when
    /// OpenBao no longer accepts it.
    pub auth: AuthMethod,
    /// Token with the `kleidia-app` policy (a root token only in dev mode).
    pub token: Option<SecretString>,
    /// Read the token from this file instead (wins over `token`); read again
    /// when OpenBao stops accepting the token.
    pub token_file: Option<PathBuf>,
    /// AppRole auth mount (`auth = "approle"`).
    pub approle_mount: String,
    /// File holding the AppRole role_id (written by `kleidia bootstrap --approle-out`).
    pub role_id_file: Option<PathBuf>,
    /// File holding the AppRole secret_id; read again at every login.
    pub secret_id_file: Option<PathBuf>,
    /// JWT auth mount (`auth = "jwt"`).
    pub jwt_mount: String,
    /// JWT auth role (created by `kleidia bootstrap --jwt-pubkey …`).
    pub jwt_role: String,
    /// The projected service-account token; read again at every login.
    pub jwt_token_file: PathBuf,
    /// PEM bundle of the CA(s) that issued OpenBao's TLS certificate. When
    /// set, only these (plus the system roots with `system_roots`) are trusted.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's trust store.
    pub system_roots: bool,
    /// KV v2 mount for escrowed YubiKey secrets.
    pub kv_mount: String,
    /// KV v2 mount for Kleidia's own secrets (under `kleidia/`).
    pub app_mount: String,
    /// KV v2 mount of the license service (the app cannot read it).
    pub license_mount: String,
    /// PKI mount of the root CA.
    pub pki_root_mount: String,
    /// PKI mount of the intermediate CA that signs YubiKey certificates.
    pub pki_mount: String,
    /// Transit mount holding the audit anchor's HMAC key (`kleidia-audit`).
    pub transit_mount: String,
    /// Per-request timeout towards OpenBao.
    pub timeout_secs: u64,
}

impl Default for OpenBaoConfig {
    fn default() -> Self {
        Self {
            addr: default_url("http://127.0.0.1:8200"),
            auth: AuthMethod::Token,
            token: None,
            token_file: None,
            approle_mount: "approle".into(),
            role_id_file: None,
            secret_id_file: None,
            jwt_mount: "jwt".into(),
            jwt_role: "kleidia-app".into(),
            jwt_token_file: SERVICE_ACCOUNT_TOKEN_FILE.into(),
            ca_file: None,
            system_roots: false,
            kv_mount: "yubikeys".into(),
            app_mount: "secret".into(),
            license_mount: "license".into(),
            pki_root_mount: "pki".into(),
            pki_mount: "pki_int".into(),
            transit_mount: "transit".into(),
            timeout_secs: 5,
        }
    }
}

impl OpenBaoConfig {
    /// The login method as configured.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            method: self.auth,
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            approle_mount: Some(self.approle_mount.clone()),
            role_id_file: self.role_id_file.clone(),
            secret_id_file: self.secret_id_file.clone(),
            jwt_mount: Some(self.jwt_mount.clone()),
            jwt_role: Some(self.jwt_role.clone()),
            jwt_token_file: Some(self.jwt_token_file.clone()),
        }
    }

    /// The shared client's settings: address, login, TLS, timeout.
    /// `validate` has checked that the login method has what it needs.
    pub fn client_config(&self) -> kleidia_openbao::Config {
        let auth = self
            .auth_settings()
            .to_auth("openbao.")
            .unwrap_or(kleidia_openbao::Auth::None);
        let mut c = kleidia_openbao::Config::new(self.addr.clone(), auth);
        c.tls = kleidia_openbao::Tls {
            ca_file: self.ca_file.clone(),
            system_roots: self.system_roots,
        };
        c.timeout = Duration::from_secs(self.timeout_secs.max(1));
        c
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicenseConfig {
    /// Base URL of the license service.
    pub url: url::Url,
    /// Bearer token the license service expects (its own `api_token`;
    /// `KLEIDIA_LICENSE_API_TOKEN` is deliberately the same variable).
    pub api_token: Option<SecretString>,
    /// Read the token from this file instead (wins over `api_token`).
    pub api_token_file: Option<PathBuf>,
    /// How long a license status is reused before the service is asked
    /// again (also how long the TRIAL fallback lasts once the service is
    /// unreachable). 0 asks on every check.
    pub cache_secs: u64,
    /// Per-request timeout towards the license service.
    pub timeout_secs: u64,
}

impl Default for LicenseConfig {
    fn default() -> Self {
        Self {
            url: default_url("http://127.0.0.1:8090"),
            api_token: None,
            api_token_file: None,
            cache_secs: 30,
            timeout_secs: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `kleidia=debug,tower_http=info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Whether the session cookie carries `Secure` (and the `__Host-` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    /// Secure when `server.public_url` is https. Over plain http (the
    /// one-machine demo on http://127.0.0.1:8080) a browser would drop a
    /// Secure cookie, so it cannot be set there.
    #[default]
    Auto,
    /// Always Secure: TLS is terminated in front of Kleidia even though the
    /// public URL says http (unusual).
    Always,
    /// Never Secure (tests and local development only).
    Never,
}

/// The longest `session.cache_secs` accepted (`auth::session_cache`).
pub const MAX_SESSION_CACHE_SECS: u64 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A browser session ends after this long without a request.
    pub idle_timeout_secs: u64,
    /// A browser session ends this long after sign-in, used or not.
    pub absolute_timeout_secs: u64,
    pub cookie_secure: CookieSecure,
    /// How long a replica may answer from its in-process session cache
    /// (`auth::session_cache`) before asking PostgreSQL again: logout,
    /// disabling, a password reset or a role change made elsewhere (another
    /// replica, the CLI) takes effect within this bound. 0 = no cache.
    pub cache_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 12 * 3600,
            cookie_secure: CookieSecure::Auto,
            cache_secs: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of a JWT from POST /api/auth/login (and of its session row).
    pub jwt_ttl_secs: u64,
    /// The `aud` claim issued and required.
    pub jwt_audience: String,
    /// Argon2id computations allowed at once (each takes 19 MiB and a core).
    pub hash_concurrency: usize,
    /// Sign-ins that may wait for one beyond those; more at once get 503
    /// with `Retry-After` before anything is checked or counted.
    pub hash_queue: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_ttl_secs: 15 * 60,
            jwt_audience: "kleidia-api".into(),
            hash_concurrency: 2,
            // The same as `auth::password::DEFAULT_HASH_QUEUE`.
            hash_queue: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed sign-ins of one username from one client address before that
    /// pair is locked for a while (others at the address are not).
    pub account_free_failures: u32,
    /// Distinct usernames failing from one client address (password
    /// spraying) before the address is slowed down.
    pub client_free_failures: u32,
    /// First lock duration; it doubles with every further failure.
    pub base_delay_secs: u64,
    /// The lock never lasts longer than this.
    pub max_delay_secs: u64,
    /// Counters start again after this long without a failure.
    pub reset_after_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            client_free_failures: 20,
            base_delay_secs: 30,
            max_delay_secs: 15 * 60,
            reset_after_secs: 60 * 60,
        }
    }
}

/// OIDC sign-in (issue 18 §1, see `auth::oidc`). Off while `issuer` is unset;
/// local accounts (the break-glass admin) sign in with their password either way.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; its discovery document is
    /// `{issuer}/.well-known/openid-configuration`. Unset: OIDC is off.
    pub issuer: Option<url::Url>,
    /// The client id Kleidia is registered under at the provider. The
    /// redirect URI to register is `{server.public_url}/auth/oidc/callback`.
    pub client_id: String,
    /// The client secret (confidential client, `client_secret_basic`).
    pub client_secret: Option<SecretString>,
    /// Read the client secret from this file instead (wins over `client_secret`).
    pub client_secret_file: Option<PathBuf>,
    /// The name on the sign-in button ("Sign in with …").
    pub display_name: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The id_token claim that names the person's groups (a list of strings).
    pub groups_claim: String,
    /// The id_token claim that becomes the Kleidia username of an account
    /// created at the first sign-in (the account is tied to `sub`, not to it).
    pub username_claim: String,
    /// Group → role (`admin`, `helpdesk`, `auditor`, `user`). Someone in
    /// several mapped groups gets the first of admin, helpdesk, auditor,
    /// user; someone in none is refused. Applied at every sign-in and recheck.
    pub role_map: std::collections::BTreeMap<String, crate::domain::Role>,
    /// An OIDC session is re-checked with the provider (refresh-token grant)
    /// at most this long after sign-in or its last check: a person disabled
    /// or removed at the provider loses the session then.
    pub recheck_secs: u64,
    /// Per-request timeout towards the provider.
    pub timeout_secs: u64,
    /// An id_token signed with a key the cached JWKS lacks makes Kleidia
    /// fetch the provider's keys again (key rotation), at most this often.
    pub jwks_refresh_min_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: "kleidia".into(),
            client_secret: None,
            client_secret_file: None,
            display_name: "single sign-on".into(),
            scopes: vec!["email".into(), "profile".into(), "groups".into()],
            groups_claim: "groups".into(),
            username_claim: "preferred_username".into(),
            role_map: Default::default(),
            recheck_secs: 300,
            timeout_secs: 5,
            jwks_refresh_min_secs: 30,
        }
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        self.issuer.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let Some(issuer) = &self.issuer else {
            return Ok(());
        };
        http_url("oidc.issuer", issuer)?;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.client_id.is_empty() || self.client_secret.is_none() {
            return invalid("oidc.issuer is set: oidc.client_id and oidc.client_secret (or oidc.client_secret_file) are needed");
        }
        if self.role_map.is_empty() {
            return invalid(
                "oidc.issuer is set: oidc.role_map must map at least one group to a role",
            );
        }
        if self.recheck_secs == 0 || self.timeout_secs == 0 {
            return invalid("oidc.recheck_secs and oidc.timeout_secs must be at least 1");
        }
        Ok(())
    }
}

#[allow(clippy::expect_used)] // literal defaults; `defaults_are_valid` exercises them
fn default_url(s: &str) -> url::Url {
    url::Url::parse(s).expect("literal default URL is valid")
}

impl Settings for Config {
    /// `KLEIDIA_CONFIG` is the config file's path (`--config`).
    const NOT_KEYS: &'static [&'static str] = &["config"];
    /// `KLEIDIA_DATABASE_URL` → `database.url`.
    const SECTIONS: bool = true;

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        let srv = &mut self.server;
        resolve_secret_file(
            &mut srv.metrics_token,
            srv.metrics_token_file.as_deref(),
            "server.metrics_token_file",
        )?;
        let (db, bao, lic) = (&mut self.database, &mut self.openbao, &mut self.license);
        resolve_secret_file(&mut db.url, db.url_file.as_deref(), "database.url_file")?;
        resolve_secret_file(
            &mut db.owner_url,
            db.owner_url_file.as_deref(),
            "database.owner_url_file",
        )?;
        resolve_secret_file(
            &mut bao.token,
            bao.token_file.as_deref(),
            "openbao.token_file",
        )?;
        resolve_secret_file(
            &mut lic.api_token,
            lic.api_token_file.as_deref(),
            "license.api_token_file",
        )?;
        let oidc = &mut self.oidc;
        resolve_secret_file(
            &mut oidc.client_secret,
            oidc.client_secret_file.as_deref(),
            "oidc.client_secret_file",
        )?;
        // s4-fleet: expiry notices.
        let n = &mut self.notices;
        resolve_secret_file(
            &mut n.smtp_password,
            n.smtp_password_file.as_deref(),
            "notices.smtp_password_file",
        )?;
        resolve_secret_file(
            &mut n.webhook_url,
            n.webhook_url_file.as_deref(),
            "notices.webhook_url_file",
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        http_url("server.public_url", &self.server.public_url)?;
        match (&self.server.tls_cert_file, &self.server.tls_key_file) {
            (None, None) => {}
            (Some(_), Some(_)) if self.server.public_url.scheme() == "https" => {}
            (Some(_), Some(_)) => {
                return invalid(
                    "server.tls_cert_file is set: server.public_url must be https (the session cookie is Secure only then)",
                )
            }
            _ => return invalid("server.tls_cert_file and server.tls_key_file go together"),
        }
        match self.agent.url.host_str() {
            Some("127.0.0.1" | "localhost" | "[::1]") if self.agent.url.scheme() == "http" => {}
            _ => return invalid(
                "agent.url must be http://127.0.0.1:PORT, http://localhost:PORT or http://[::1]:PORT",
            ),
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1");
        }
        if self.session.idle_timeout_secs == 0 || self.session.absolute_timeout_secs == 0 {
            return invalid(
                "session.idle_timeout_secs and session.absolute_timeout_secs must be at least 1",
            );
        }
        if self.session.cache_secs > MAX_SESSION_CACHE_SECS {
            return invalid("session.cache_secs must be at most 10");
        }
        if self.auth.jwt_ttl_secs == 0 || self.auth.jwt_audience.is_empty() {
            return invalid("auth.jwt_ttl_secs must be at least 1 and auth.jwt_audience not empty");
        }
        http_url("license.url", &self.license.url)?;
        http_url("openbao.addr", &self.openbao.addr)?;
        self.openbao
            .auth_settings()
            .to_auth("openbao.")
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.audit.anchor_interval_secs == 0 || self.audit.anchor_every_events == 0 {
            return invalid(
                "audit.anchor_interval_secs and audit.anchor_every_events must be at least 1",
            );
        }
        if self.auth.hash_concurrency == 0 {
            return invalid("auth.hash_concurrency must be at least 1");
        }
        self.oidc.validate()?;
        // s4-fleet: expiry notices.
        self.notices.validate()?;
        // s5-faults: operations whose ticket expired.
        self.operations.validate()?;
        Ok(())
    }
}

/// `name[:port]` or `[v6]:port` → (name, port); `None` when malformed.
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let h = h.trim();
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let name = &h[..inside.len() + 2];
        match after.strip_prefix(':') {
            Some(p) => (name, Some(p)),
            None if after.is_empty() => (name, None),
            None => return None,
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

fn http_url(key: &str, url: &url::Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        s => Err(ConfigError::Invalid(format!(
            "{key} must be http or https, not {s}"
        ))),
    }
}

impl Config {
    /// Load: defaults ← TOML file (if given) ← `KLEIDIA_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("KLEIDIA_"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        loader::load(file, env)
    }

    /// Whether a request's `Host` header names this server: `public_url`'s
    /// host and port (the scheme's default port when the Host has none), or
    /// one of `server.allowed_hosts`. Case-insensitive.
    pub fn host_allowed(&self, host: &str) -> bool {
        let public = &self.server.public_url;
        let default_port = public.port_or_known_default().unwrap_or(80);
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let scheme_default = match public.scheme() {
            "https" => 443,
            _ => 80,
        };
        let port = port.unwrap_or(scheme_default);
        let public_host = public.host_str().unwrap_or_default();
        if name.eq_ignore_ascii_case(public_host) && port == default_port {
            return true;
        }
        self.server
            .allowed_hosts
            .iter()
            .any(|a| match split_host(a) {
                Some((n, None)) => n.eq_ignore_ascii_case(name),
                Some((n, Some(p))) => n.eq_ignore_ascii_case(name) && p == port,
                None => false,
            })
    }

    /// Whether the session cookie is `Secure` (and then `__Host-` prefixed).
    pub fn cookie_secure(&self) -> bool {
        match self.session.cookie_secure {
            CookieSecure::Auto => self.server.public_url.scheme() == "https",
            CookieSecure::Always => true,
            CookieSecure::Never => false,
        }
    }

    /// The session cookie's name: `__Host-` prefixed whenever it is Secure,
    /// so a sibling subdomain can neither set nor shadow it.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.cookie_secure() {
            "__Host-kleidia_session"
        } else {
            "kleidia_session"
        }
    }

    /// The `iss` claim of Kleidia's JWTs: the public origin.
    pub fn jwt_issuer(&self) -> String {
        self.server.public_url.origin().ascii_serialization()
    }

    pub fn openbao_timeout(&self) -> Duration {
        Duration::from_secs(self.openbao.timeout_secs.max(1))
    }

    pub fn license_timeout(&self) -> Duration {
        Duration::from_secs(self.license.timeout_secs.max(1))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env_none() -> Env {
        Env::prefixed("KLEIDIA_TEST_NOTHING_AT_ALL_")
    }

    #[test]
    fn only_the_public_host_and_the_configured_names_are_this_server() {
        let mut cfg = Config::default();
        cfg.server.public_url = url::Url::parse("https://Kleidia.example.com").unwrap();
        cfg.server.allowed_hosts = vec!["kleidia.internal".into(), "10.0.0.5:8443".into()];
        for ok in [
            "kleidia.example.com",
            "KLEIDIA.example.com:443",
            "kleidia.internal:8080",
            "kleidia.internal",
            "10.0.0.5:8443",
        ] {
            assert!(cfg.host_allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "kleidia.example.com:8443",
            "kleidia.example.com.evil.example",
            "10.0.0.5",
            "10.0.0.5:8080",
            "kleidia.example.com:notaport",
            "kleidia.example.com/x",
            "user@kleidia.example.com",
        ] {
            assert!(!cfg.host_allowed(bad), "{bad}");
        }
        cfg.server.public_url = url::Url::parse("http://[::1]:8080").unwrap();
        assert!(cfg.host_allowed("[::1]:8080"));
        assert!(!cfg.host_allowed("[::1]:8081"));
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = Config::load_from(None, env_none()).unwrap();
        assert_eq!(cfg.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.server.public_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(cfg.openbao.addr.as_str(), "http://127.0.0.1:8200/");
    }

    #[test]
    fn file_values_override_defaults_and_secret_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "s.very-secret\n").unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(
            &p,
            format!(
                "[server]\nbind = \"0.0.0.0:9999\"\n[openbao]\ntoken_file = \"{}\"\n[log]\nformat = \"json\"\n",
                tok.display()
            ),
        )
        .unwrap();
        let cfg = Config::load_from(Some(&p), env_none()).unwrap();
        assert_eq!(cfg.server.bind.port(), 9999);
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(
            cfg.openbao.token.as_ref().unwrap().expose_secret(),
            "s.very-secret"
        );
        // Printing the configuration never shows the secret.
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(!printed.contains("kleidia:kleidia@"), "{printed}");
    }

    #[test]
    fn the_session_cookie_is_secure_and_host_prefixed_exactly_when_the_public_url_is_https() {
        let mut cfg = Config::load_from(None, env_none()).unwrap();
        assert!(!cfg.cookie_secure());
        assert_eq!(cfg.session_cookie_name(), "kleidia_session");
        cfg.server.public_url = url::Url::parse("https://kleidia.example").unwrap();
        assert!(cfg.cookie_secure());
        assert_eq!(cfg.session_cookie_name(), "__Host-kleidia_session");
        cfg.session.cookie_secure = CookieSecure::Never;
        assert!(!cfg.cookie_secure());
        assert_eq!(cfg.jwt_issuer(), "https://kleidia.example");
    }

    #[test]
    fn tls_needs_both_files_and_an_https_public_url() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        let load = |server: &str| {
            std::fs::write(&p, format!("[server]\n{server}")).unwrap();
            Config::load_from(Some(&p), env_none())
        };
        let both =
            "tls_cert_file = \"/etc/kleidia/tls.crt\"\ntls_key_file = \"/etc/kleidia/tls.key\"\n";
        let cfg = load(&format!("{both}public_url = \"https://kleidia.example\"\n")).unwrap();
        assert_eq!(
            cfg.server.tls_key_file.as_deref(),
            Some(Path::new("/etc/kleidia/tls.key"))
        );
        assert!(cfg.cookie_secure());
        let err = load(both).unwrap_err().to_string();
        assert!(err.contains("public_url must be https"), "{err}");
        let err = load(
            "tls_cert_file = \"/etc/kleidia/tls.crt\"\npublic_url = \"https://kleidia.example\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn session_and_throttle_keys_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(
            &p,
            "[session]\nidle_timeout_secs = 60\ncookie_secure = \"always\"\n[auth]\njwt_ttl_secs = 30\n[throttle]\naccount_free_failures = 2\n",
        )
        .unwrap();
        let cfg = Config::load_from(Some(&p), env_none()).unwrap();
        assert_eq!(cfg.session.idle_timeout_secs, 60);
        assert_eq!(cfg.session.cookie_secure, CookieSecure::Always);
        assert_eq!(cfg.auth.jwt_ttl_secs, 30);
        assert_eq!(cfg.throttle.account_free_failures, 2);
        assert_eq!(cfg.throttle.client_free_failures, 20);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn license_keys_come_from_the_environment_and_the_token_file_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("license-token");
        std::fs::write(&tok, "license-api-token-from-file\n").unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(
            &p,
            "[license]\nurl = \"http://127.0.0.1:9090\"\ncache_secs = 0\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_LICENSE_API_TOKEN_FILE", tok.display());
            jail.set_env("KLEIDIA_LICENSE_TIMEOUT_SECS", "7");
            let cfg = Config::load(Some(&p)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.license.url.as_str(), "http://127.0.0.1:9090/");
            assert_eq!(cfg.license.cache_secs, 0);
            assert_eq!(cfg.license.timeout_secs, 7);
            assert_eq!(
                cfg.license.api_token.as_ref().unwrap().expose_secret(),
                "license-api-token-from-file"
            );
            assert!(!format!("{cfg:?}").contains("license-api-token"));
            Ok(())
        });
        let defaults = Config::load_from(None, env_none()).unwrap();
        assert_eq!(defaults.license.cache_secs, 30);
        assert!(defaults.license.api_token.is_none());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn the_owner_url_and_the_audit_anchor_keys_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let owner = dir.path().join("owner-url");
        std::fs::write(&owner, "postgres://kleidia:owner-secret@db/kleidia\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_DATABASE_OWNER_URL_FILE", owner.display());
            jail.set_env("KLEIDIA_AUDIT_ANCHOR_EVERY_EVENTS", "5");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.database.owner_url.as_ref().unwrap().expose_secret(),
                "postgres://kleidia:owner-secret@db/kleidia"
            );
            assert!(!format!("{cfg:?}").contains("owner-secret"));
            assert_eq!(cfg.audit.anchor_every_events, 5);
            assert_eq!(cfg.audit.anchor_interval_secs, 60);
            assert_eq!(cfg.openbao.transit_mount, "transit");
            jail.set_env("KLEIDIA_AUDIT_ANCHOR_INTERVAL_SECS", "0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("audit.anchor_interval_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn oidc_settings_come_from_the_environment_with_the_role_map_as_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("oidc-secret");
        std::fs::write(&secret, "oidc-client-secret-from-file\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_OIDC_ISSUER", "https://idp.example/realms/corp");
            jail.set_env("KLEIDIA_OIDC_CLIENT_SECRET_FILE", secret.display());
            jail.set_env(
                "KLEIDIA_OIDC_ROLE_MAP",
                "{kleidia-admins=\"admin\", it-helpdesk=\"helpdesk\"}",
            );
            jail.set_env("KLEIDIA_OIDC_RECHECK_SECS", "60");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert!(cfg.oidc.enabled());
            assert_eq!(
                cfg.oidc.role_map.get("kleidia-admins"),
                Some(&crate::domain::Role::Admin)
            );
            assert_eq!(
                cfg.oidc.role_map.get("it-helpdesk"),
                Some(&crate::domain::Role::Helpdesk)
            );
            assert_eq!(cfg.oidc.recheck_secs, 60);
            assert_eq!(
                cfg.oidc.client_secret.as_ref().unwrap().expose_secret(),
                "oidc-client-secret-from-file"
            );
            assert!(!format!("{cfg:?}").contains("oidc-client-secret"));
            // An unknown role, or OIDC without a role map, is a start-up error.
            jail.set_env("KLEIDIA_OIDC_ROLE_MAP", "{staff=\"superuser\"}");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("superuser"), "{err}");
            jail.set_env("KLEIDIA_OIDC_ROLE_MAP", "{}");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("oidc.role_map"), "{err}");
            Ok(())
        });
        assert!(!Config::load_from(None, env_none()).unwrap().oidc.enabled());
    }

    #[test]
    fn a_non_http_public_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[server]\npublic_url = \"ftp://x\"\n").unwrap();
        let err = Config::load_from(Some(&p), env_none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("public_url"), "{err}");
    }

    // s4-fleet: expiry notices.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn notice_settings_come_from_the_environment_secrets_stay_hidden_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("smtp-pw");
        std::fs::write(&pw, "smtp-secret-pw\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_NOTICES_ENABLED", "true");
            jail.set_env("KLEIDIA_NOTICES_SMTP_HOST", "mail.corp.example");
            jail.set_env("KLEIDIA_NOTICES_SMTP_USERNAME", "kleidia");
            jail.set_env("KLEIDIA_NOTICES_SMTP_PASSWORD_FILE", pw.display());
            jail.set_env("KLEIDIA_NOTICES_WEBHOOK_URL", "https://hooks.example/T0K3N");
            jail.set_env("KLEIDIA_NOTICES_WARNING_DAYS", "14");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            let n = &cfg.notices;
            assert!(n.enabled);
            assert_eq!(
                (n.smtp_port, n.smtp_tls, n.warning_days),
                (587, SmtpTls::Starttls, 14)
            );
            assert_eq!(
                n.smtp_password.as_ref().unwrap().expose_secret(),
                "smtp-secret-pw"
            );
            let shown = format!("{cfg:?}");
            assert!(!shown.contains("smtp-secret-pw") && !shown.contains("T0K3N"));
            for (key, value, why) in [
                ("KLEIDIA_NOTICES_SMTP_TLS", "none", "never sent without TLS"),
                ("KLEIDIA_NOTICES_WARNING_DAYS", "0", "warning_days"),
                ("KLEIDIA_NOTICES_FROM", "not an address", "notices.from"),
                ("KLEIDIA_NOTICES_WEBHOOK_URL", "ftp://x", "webhook_url"),
                ("KLEIDIA_NOTICES_INTERVAL_SECS", "0", "interval_secs"),
            ] {
                jail.set_env(key, value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(why), "{key}={value}: {err}");
                jail.clear_env();
                jail.set_env("KLEIDIA_NOTICES_SMTP_HOST", "mail.corp.example");
                jail.set_env("KLEIDIA_NOTICES_SMTP_USERNAME", "kleidia");
                jail.set_env("KLEIDIA_NOTICES_SMTP_PASSWORD_FILE", pw.display());
            }
            jail.clear_env();
            jail.set_env("KLEIDIA_NOTICES_ENABLED", "true");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("needs notices.smtp_host"), "{err}");
            Ok(())
        });
    }

    // s5-faults: operations whose ticket expired.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn operation_ticket_and_sweep_settings_are_read_and_bounded() {
        let d = Config::load_from(None, env_none()).unwrap().operations;
        assert_eq!(
            (
                d.ticket_lifetime_secs,
                d.result_grace_secs,
                d.sweep_interval_secs
            ),
            (90, 60, 30)
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("KLEIDIA_OPERATIONS_TICKET_LIFETIME_SECS", "20");
            jail.set_env("KLEIDIA_OPERATIONS_RESULT_GRACE_SECS", "0");
            jail.set_env("KLEIDIA_OPERATIONS_SWEEP_INTERVAL_SECS", "2");
            let o = Config::load(None).map_err(|e| e.to_string())?.operations;
            assert_eq!(
                (
                    o.ticket_lifetime_secs,
                    o.result_grace_secs,
                    o.sweep_interval_secs
                ),
                (20, 0, 2)
            );
            for (key, value, why) in [
                (
                    "KLEIDIA_OPERATIONS_TICKET_LIFETIME_SECS",
                    "121",
                    "ticket_lifetime_secs",
                ),
                (
                    "KLEIDIA_OPERATIONS_TICKET_LIFETIME_SECS",
                    "9",
                    "ticket_lifetime_secs",
                ),
                (
                    "KLEIDIA_OPERATIONS_RESULT_GRACE_SECS",
                    "3601",
                    "result_grace_secs",
                ),
                (
                    "KLEIDIA_OPERATIONS_SWEEP_INTERVAL_SECS",
                    "0",
                    "sweep_interval_secs",
                ),
            ] {
                jail.clear_env();
                jail.set_env(key, value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(why), "{key}={value}: {err}");
            }
            Ok(())
        });
    }
}
