//! One error type for every OpenBao call, precise enough for callers to branch
//! on the cause: sealed and down (→ 503), permission denied, check-and-set
//! conflicts, missing paths, and everything else with OpenBao's own message.

use rustify::errors::ClientError as RestError;
use vaultrs::error::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenBao is sealed")]
    Sealed,
    /// Unreachable (connection refused, timeout, TLS failure) or a 5xx answer.
    #[error("OpenBao at {addr} is unavailable: {message}")]
    Down {
        addr: String,
        /// The HTTP status when OpenBao answered at all.
        status: Option<u16>,
        message: String,
        /// The TLS handshake failed because the server's certificate did not
        /// verify against the configured roots (`ca_file`, system roots):
        /// a wrong CA file, or someone else at OpenBao's address.
        untrusted_certificate: bool,
    },
    #[error("OpenBao refused {path}: permission denied")]
    PermissionDenied { path: String },
    /// A KV v2 write whose `cas` no longer matched the current version.
    #[error("OpenBao check-and-set conflict on {path}: the secret changed since it was read")]
    CasConflict { path: String },
    /// 404 where absence is not an answer (a write to a missing mount, …).
    /// Reads of absent secrets return `Ok(None)` instead.
    #[error("OpenBao has nothing at {path}: {message}")]
    NotFound { path: String, message: String },
    #[error("OpenBao {path} failed with {status}: {message}")]
    Other {
        path: String,
        status: u16,
        message: String,
    },
    /// The login itself was refused or its inputs (role_id, secret_id, JWT
    /// files) could not be read. Never carries a secret.
    #[error("OpenBao login with {method} failed: {message}")]
    Login {
        method: &'static str,
        message: String,
    },
    #[error("OpenBao client configuration: {0}")]
    Config(String),
    #[error("OpenBao returned an unexpected answer for {path}: {message}")]
    Unexpected { path: String, message: String },
}

impl Error {
    /// True when the cause is OpenBao itself being down or sealed (→ 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Sealed | Error::Down { .. })
    }

    /// True when OpenBao was not talked to because its TLS certificate
    /// failed verification against the trusted roots.
    pub fn is_untrusted_certificate(&self) -> bool {
        matches!(
            self,
            Error::Down {
                untrusted_certificate: true,
                ..
            }
        )
    }

    /// The HTTP status OpenBao answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Sealed => Some(503),
            Error::Down { status, .. } => *status,
            Error::PermissionDenied { .. } => Some(403),
            Error::CasConflict { .. } => Some(400),
            Error::NotFound { .. } => Some(404),
            Error::Other { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn unexpected(path: &str, message: impl std::fmt::Display) -> Self {
        Error::Unexpected {
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    /// Classify an HTTP error answer from OpenBao.
    pub(crate) fn from_status(addr: &str, path: &str, status: u16, message: String) -> Self {
        match status {
            403 => Error::PermissionDenied { path: path.into() },
            400 if message.contains("check-and-set") => Error::CasConflict { path: path.into() },
            404 => Error::NotFound {
                path: path.into(),
                message,
            },
            503 if message.contains("sealed") => Error::Sealed,
            500..=599 => Error::Down {
                addr: addr.into(),
                status: Some(status),
                message: if message.is_empty() {
                    format!("status {status}")
                } else {
                    message
                },
                untrusted_certificate: false,
            },
            _ => Error::Other {
                path: path.into(),
                status,
                message,
            },
        }
    }

    /// Map a vaultrs error for a call on `path`.
    pub(crate) fn from_client(addr: &str, path: &str, e: ClientError) -> Self {
        match e {
            ClientError::APIError { code, errors } => {
                Error::from_status(addr, path, code, errors.join("; "))
            }
            ClientError::RestClientError { source } => Error::from_rest(addr, path, source),
            other => Error::unexpected(path, other),
        }
    }

    /// Map an error of vaultrs' request layer (rustify).
    pub(crate) fn from_rest(addr: &str, path: &str, e: RestError) -> Self {
        match e {
            RestError::ServerResponseError { code, content } => {
                Error::from_status(addr, path, code, error_message(content.as_deref()))
            }
            RestError::RequestError { source, .. } | RestError::ResponseError { source } => {
                let message = format!("{source:#}");
                // rustls: "invalid peer certificate: UnknownIssuer", …
                let untrusted_certificate = message.contains("invalid peer certificate");
                Error::Down {
                    addr: addr.into(),
                    status: None,
                    message: if untrusted_certificate {
                        format!(
                            "TLS certificate verification failed, its certificate is not \
                             trusted (openbao.ca_file must hold the CA that issued it): {message}"
                        )
                    } else {
                        message
                    },
                    untrusted_certificate,
                }
            }
            other => Error::unexpected(path, other),
        }
    }
}

/// OpenBao's `{"errors": [...]}` joined, or nothing.
pub(crate) fn error_message(body: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    body.and_then(|b| serde_json::from_str::<Errors>(b).ok())
        .map(|e| e.errors.join("; "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, msg: &str) -> Error {
        Error::from_status("http://bao", "p", code, msg.into())
    }

    #[test]
    fn status_codes_map_to_the_causes_callers_branch_on() {
        assert!(matches!(
            status(403, "permission denied"),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            status(
                400,
                "check-and-set parameter did not match the current version"
            ),
            Error::CasConflict { .. }
        ));
        assert!(matches!(
            status(400, "bad"),
            Error::Other { status: 400, .. }
        ));
        assert!(matches!(status(503, "Vault is sealed"), Error::Sealed));
        assert!(matches!(status(503, "standby"), Error::Down { .. }));
        assert!(matches!(status(500, "internal"), Error::Down { .. }));
        assert!(matches!(status(404, ""), Error::NotFound { .. }));
        assert!(status(503, "sealed").is_unavailable());
        assert!(!status(403, "").is_unavailable());
    }

    #[test]
    fn error_bodies_are_read_as_openbao_writes_them() {
        assert_eq!(error_message(Some(r#"{"errors":["a","b"]}"#)), "a; b");
        assert_eq!(error_message(Some("not json")), "");
        assert_eq!(error_message(None), "");
    }
}
