//! The login settings as the app and the license service configure them
//! (`openbao.auth`, `openbao.role_id_file`, …; `openbao_auth`, … in the
//! license service's flat keys), turned into an [`Auth`] in one place.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::Auth;
use crate::error::Error;

/// Where Kleidia's pods mount their projected service-account token (audience
/// `openbao`, so a token meant for the Kubernetes API is not accepted).
pub const SERVICE_ACCOUNT_TOKEN_FILE: &str = "/var/run/secrets/openbao/token";

/// `openbao.auth`: how the client logs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A token given directly or in a file (development, bootstrap).
    #[default]
    Token,
    /// AppRole with `role_id_file` and `secret_id_file` (machines).
    AppRole,
    /// JWT auth with a Kubernetes service-account token (`jwt_role`,
    /// `jwt_token_file`).
    Jwt,
}

/// Everything the configured login method may need; which fields matter
/// depends on `method`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub method: AuthMethod,
    pub token: Option<SecretString>,
    /// Wins over `token`; read again at every re-login.
    pub token_file: Option<PathBuf>,
    /// Default `approle`.
    pub approle_mount: Option<String>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    /// Default `jwt`.
    pub jwt_mount: Option<String>,
    pub jwt_role: Option<String>,
    /// Default [`SERVICE_ACCOUNT_TOKEN_FILE`].
    pub jwt_token_file: Option<PathBuf>,
}

impl AuthSettings {
    /// The [`Auth`] these settings describe; `key` prefixes the names of
    /// missing keys in errors (`openbao.` or `openbao_`). The token method
    /// without a token is [`Auth::None`] (unauthenticated calls only).
    pub fn to_auth(&self, key: &str) -> Result<Auth, Error> {
        let missing = |k: &str| {
            Error::Config(format!(
                "{key}auth = \"{}\" needs {key}{k}",
                match self.method {
                    AuthMethod::Token => "token",
                    AuthMethod::AppRole => "approle",
                    AuthMethod::Jwt => "jwt",
                }
            ))
        };
        Ok(match self.method {
            AuthMethod::Token => match (&self.token_file, &self.token) {
                (Some(f), _) => Auth::TokenFile(f.clone()),
                (None, Some(t)) => Auth::Token(t.clone()),
                (None, None) => Auth::None,
            },
            AuthMethod::AppRole => Auth::AppRole {
                mount: self
                    .approle_mount
                    .clone()
                    .unwrap_or_else(|| "approle".into()),
                role_id_file: self
                    .role_id_file
                    .clone()
                    .ok_or_else(|| missing("role_id_file"))?,
                secret_id_file: self
                    .secret_id_file
                    .clone()
                    .ok_or_else(|| missing("secret_id_file"))?,
            },
            AuthMethod::Jwt => Auth::Jwt {
                mount: self.jwt_mount.clone().unwrap_or_else(|| "jwt".into()),
                role: self.jwt_role.clone().ok_or_else(|| missing("jwt_role"))?,
                token_file: self
                    .jwt_token_file
                    .clone()
                    .unwrap_or_else(|| SERVICE_ACCOUNT_TOKEN_FILE.into()),
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_method_takes_its_own_keys() {
        let mut s = AuthSettings::default();
        assert!(matches!(s.to_auth("openbao.").unwrap(), Auth::None));
        s.token = Some(SecretString::from("t".to_string()));
        assert!(matches!(s.to_auth("openbao.").unwrap(), Auth::Token(_)));
        s.token_file = Some("/run/t".into());
        assert!(matches!(s.to_auth("openbao.").unwrap(), Auth::TokenFile(_)));

        s.method = AuthMethod::AppRole;
        let e = s.to_auth("openbao.").unwrap_err().to_string();
        assert!(e.contains("openbao.role_id_file"), "{e}");
        s.role_id_file = Some("/r".into());
        s.secret_id_file = Some("/s".into());
        assert!(
            matches!(s.to_auth("openbao.").unwrap(), Auth::AppRole { mount, .. } if mount == "approle")
        );

        s.method = AuthMethod::Jwt;
        let e = s.to_auth("openbao_").unwrap_err().to_string();
        assert!(e.contains("openbao_jwt_role"), "{e}");
        s.jwt_role = Some("kleidia-app".into());
        assert!(matches!(
            s.to_auth("openbao.").unwrap(),
            Auth::Jwt { token_file, .. } if token_file.as_os_str() == SERVICE_ACCOUNT_TOKEN_FILE
        ));
    }
}
