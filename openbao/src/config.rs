//! How to reach OpenBao and how to log in.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Everything [`crate::OpenBao::new`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://openbao.example:8200` (or `http://` for a dev server).
    pub addr: url::Url,
    pub auth: Auth,
    pub tls: Tls,
    /// Per request, connect included.
    pub timeout: Duration,
}

impl Config {
    pub fn new(addr: url::Url, auth: Auth) -> Self {
        Self {
            addr,
            auth,
            tls: Tls::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How the client obtains its token. Files are read again at every login, so
/// a rotated secret_id or service-account token is picked up without a restart.
#[derive(Clone)]
pub enum Auth {
    /// No token: only unauthenticated endpoints (health, public PKI files).
    None,
    /// A fixed token (a bootstrap/root token given on the command line).
    /// Renewed when renewable; there is nothing to log in with again.
    Token(SecretString),
    /// A token read from a file (development). Renewed when renewable; the
    /// file is read again when OpenBao no longer accepts the token.
    TokenFile(PathBuf),
    /// AppRole: machines outside Kubernetes.
    AppRole {
        /// Auth mount, usually `approle`.
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
    /// OpenBao's JWT auth method with a Kubernetes service-account token,
    /// validated offline against `jwt_validation_pubkeys`.
    Jwt {
        /// Auth mount, usually `jwt`.
        mount: String,
        role: String,
        /// The projected service-account token, e.g.
        /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
        token_file: PathBuf,
    },
}

impl Auth {
    /// The method's name as configured (`openbao.auth`); safe to log.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::TokenFile(_) => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Jwt { .. } => "jwt",
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token([REDACTED])"),
            Auth::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Auth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id_file", role_id_file)
                .field("secret_id_file", secret_id_file)
                .finish(),
            Auth::Jwt {
                mount,
                role,
                token_file,
            } => f
                .debug_struct("Jwt")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// Which certificates an `https://` OpenBao may present.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM bundle of CA certificates. When set, only these (and the system
    /// roots if `system_roots`) are trusted; when unset, the public roots
    /// built into the binary are (Mozilla's list, as before).
    pub ca_file: Option<PathBuf>,
    /// Also trust the platform's trust store (`/etc/ssl/certs`, or
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    pub system_roots: bool,
}
