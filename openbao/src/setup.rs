//! Setting OpenBao up for Kleidia with a privileged (bootstrap) token: auth
//! methods and their roles, policies, secrets mounts. Every function is safe
//! to call again; `enable_*` report whether they changed anything.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use vaultrs::api::auth::approle::requests::{GenerateNewSecretIDRequest, SetAppRoleRequest};
use vaultrs::api::auth::oidc::requests::{SetConfigurationRequest, SetRoleRequest};
use vaultrs::api::sys::requests::{EnableEngineDataConfig, EnableEngineRequest};

use crate::client::OpenBao;
use crate::error::Error;

/// What a machine's token may do and for how long. Tokens always keep the
/// `default` policy: it is what lets a token renew and look itself up.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub policies: Vec<String>,
    /// Lifetime of a token at login and after each renewal.
    pub ttl: Duration,
    /// Renewals stop extending a token past this age; the client then logs in again.
    pub max_ttl: Duration,
}

/// A JWT-auth role for a Kubernetes service account.
#[derive(Debug, Clone)]
pub struct JwtRole {
    /// Must contain the token's `aud`.
    pub bound_audiences: Vec<String>,
    /// `system:serviceaccount:<namespace>:<name>`; `None` accepts any subject
    /// (with the right audience and signature).
    pub bound_subject: Option<String>,
    /// The claim that names the caller in OpenBao (`sub`).
    pub user_claim: String,
    pub token: TokenSpec,
}

/// A secrets engine as mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// `kv`, `pki`, …
    pub kind: String,
    /// The `version` option (`"2"` for KV v2), if any.
    pub version: Option<String>,
    /// Seconds; 0 = the system default.
    pub max_lease_ttl: u64,
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

impl OpenBao {
    /// Enabled auth methods: mount path (without the trailing `/`) → type.
    pub async fn auth_methods(&self) -> Result<HashMap<String, String>, Error> {
        let list = self
            .call(
                "sys/auth",
                |s| async move { vaultrs::sys::auth::list(&s).await },
            )
            .await?;
        Ok(list
            .into_iter()
            .map(|(path, m)| (path.trim_end_matches('/').to_string(), m.mount_type))
            .collect())
    }

    /// Enable auth method `kind` at `path` unless it is there. Returns true
    /// when it was enabled now; an error when another type holds the path.
    pub async fn enable_auth(&self, path: &str, kind: &str) -> Result<bool, Error> {
        let path = path.trim_matches('/');
        match self.auth_methods().await?.get(path) {
            Some(found) if found == kind => return Ok(false),
            Some(found) => {
                return Err(Error::Config(format!(
                    "auth path {path}/ holds a {found} method, not {kind}; refusing to touch it"
                )))
            }
            None => {}
        }
        let api_path = format!("sys/auth/{path}");
        self.call(&api_path, |s| async move {
            vaultrs::sys::auth::enable(&s, path, kind, None).await
        })
        .await?;
        Ok(true)
    }

    /// Create or update AppRole `name`: tokens with `token`'s policies and
    /// TTLs; secret_ids that do not expire and can be used for every login,
    /// so a machine can log in again after its token reached max TTL.
    pub async fn write_approle_role(
        &self,
        mount: &str,
        name: &str,
        token: &TokenSpec,
    ) -> Result<(), Error> {
        let path = format!("auth/{mount}/role/{name}");
        self.call(&path, |s| async move {
            let mut b = SetAppRoleRequest::builder();
            b.bind_secret_id(true)
                .secret_id_num_uses(0u64)
                .secret_id_ttl("0")
                .token_policies(token.policies.clone())
                .token_ttl(secs(token.ttl))
                .token_max_ttl(secs(token.max_ttl))
                .token_no_default_policy(false)
                .token_type("service");
            vaultrs::auth::approle::role::set(&s, mount, name, Some(&mut b)).await
        })
        .await
    }

    /// The role_id of AppRole `name` (an identifier, not a secret).
    pub async fn approle_role_id(&self, mount: &str, name: &str) -> Result<String, Error> {
        let path = format!("auth/{mount}/role/{name}/role-id");
        let r = self
            .call(&path, |s| async move {
                vaultrs::auth::approle::role::read_id(&s, mount, name).await
            })
            .await?;
        Ok(r.role_id)
    }

    /// A new secret_id for AppRole `name`.
    pub async fn approle_secret_id(&self, mount: &str, name: &str) -> Result<SecretString, Error> {
        let path = format!("auth/{mount}/role/{name}/secret-id");
        let r = self
            .call(&path, |s| async move {
                let mut b = GenerateNewSecretIDRequest::builder();
                vaultrs::auth::approle::role::secret::generate(&s, mount, name, Some(&mut b)).await
            })
            .await?;
        Ok(SecretString::from(r.secret_id))
    }

    /// Configure JWT auth at `mount` to validate tokens offline against these
    /// PEM public keys (the cluster's service-account signing keys).
    pub async fn write_jwt_config(
        &self,
        mount: &str,
        validation_pubkeys: &[String],
        bound_issuer: Option<&str>,
    ) -> Result<(), Error> {
        let path = format!("auth/{mount}/config");
        self.call(&path, |s| async move {
            let mut b = SetConfigurationRequest::builder();
            b.jwt_validation_pubkeys(validation_pubkeys.to_vec());
            if let Some(iss) = bound_issuer {
                b.bound_issuer(iss);
            }
            vaultrs::auth::oidc::config::set(&s, mount, Some(&mut b)).await
        })
        .await
    }

    /// Create or update JWT role `name` (`role_type=jwt`).
    pub async fn write_jwt_role(
        &self,
        mount: &str,
        name: &str,
        role: &JwtRole,
    ) -> Result<(), Error> {
        let path = format!("auth/{mount}/role/{name}");
        self.call(&path, |s| async move {
            let mut b = SetRoleRequest::builder();
            b.role_type("jwt")
                .bound_audiences(role.bound_audiences.clone())
                .token_policies(role.token.policies.clone())
                .token_ttl(secs(role.token.ttl))
                .token_max_ttl(secs(role.token.max_ttl))
                .token_no_default_policy(false)
                .token_type("service");
            if let Some(sub) = &role.bound_subject {
                b.bound_subject(sub.as_str());
            }
            vaultrs::auth::oidc::role::set(
                &s,
                mount,
                name,
                &role.user_claim,
                Vec::new(),
                Some(&mut b),
            )
            .await
        })
        .await
    }

    /// An ACL policy's text, or `None`.
    pub async fn read_policy(&self, name: &str) -> Result<Option<String>, Error> {
        let path = format!("sys/policy/{name}");
        let r = self
            .call(&path, |s| async move {
                vaultrs::sys::policy::read(&s, name).await
            })
            .await;
        match r {
            Ok(p) => Ok(Some(p.rules)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write_policy(&self, name: &str, text: &str) -> Result<(), Error> {
        let path = format!("sys/policy/{name}");
        self.call(&path, |s| async move {
            vaultrs::sys::policy::set(&s, name, text).await
        })
        .await
    }

    /// The secrets engine mounted at `path`, or `None`.
    pub async fn secrets_mount(&self, path: &str) -> Result<Option<MountInfo>, Error> {
        let path = path.trim_matches('/');
        let api_path = format!("sys/mounts/{path}");
        let r = self
            .call(&api_path, |s| async move {
                vaultrs::sys::mount::get_configuration_of_a_secret_engine(&s, path).await
            })
            .await;
        let m = match r {
            Ok(m) => m,
            // Older servers answer 400 for a missing mount instead of 404.
            Err(Error::NotFound { .. } | Error::Other { status: 400, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(MountInfo {
            kind: m.mount_type,
            version: m.options.and_then(|o| o.get("version").cloned()),
            max_lease_ttl: m.config.max_lease_ttl,
        }))
    }

    /// Mount secrets engine `kind` at `path` (`version`: `"2"` for KV v2).
    pub async fn enable_secrets(
        &self,
        path: &str,
        kind: &str,
        version: Option<&str>,
        max_lease_ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let path = path.trim_matches('/');
        let api_path = format!("sys/mounts/{path}");
        self.call(&api_path, |s| async move {
            let mut b = EnableEngineRequest::builder();
            if let Some(v) = version {
                b.options(HashMap::from([("version".to_string(), v.to_string())]));
            }
            if let Some(t) = max_lease_ttl {
                b.config(EnableEngineDataConfig {
                    max_lease_ttl: Some(secs(t)),
                    ..Default::default()
                });
            }
            vaultrs::sys::mount::enable(&s, path, kind, Some(&mut b)).await
        })
        .await
    }

    /// Change a mount's max lease TTL (`sys/mounts/<path>/tune`; not in vaultrs).
    pub async fn tune_max_lease_ttl(
        &self,
        path: &str,
        max_lease_ttl: Duration,
    ) -> Result<(), Error> {
        let path = path.trim_matches('/');
        self.write(
            &format!("sys/mounts/{path}/tune"),
            &json!({ "max_lease_ttl": secs(max_lease_ttl) }),
        )
        .await
        .map(|_: Value| ())
    }

    /// What OpenBao knows about the current token (policies, TTL). Never the token itself.
    pub async fn token_info(&self) -> Result<TokenInfo, Error> {
        let r = self
            .call("auth/token/lookup-self", |s| async move {
                crate::raw::lookup_self(&s).await
            })
            .await?;
        Ok(TokenInfo {
            accessor: r.accessor,
            policies: r.policies,
            ttl: Duration::from_secs(r.ttl),
            renewable: r.renewable,
            display_name: r.display_name,
        })
    }

    /// Revoke the current token (on shutdown, or the bootstrap token once
    /// bootstrap is done).
    pub async fn revoke_self(&self) -> Result<(), Error> {
        self.call("auth/token/revoke-self", |s| async move {
            vaultrs::token::revoke_self(&s).await
        })
        .await
    }
}

/// The current token as OpenBao describes it (no secret in here).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Identifies the token in audit logs and for revocation; not a credential.
    pub accessor: String,
    pub policies: Vec<String>,
    /// Remaining; zero for a token that does not expire.
    pub ttl: Duration,
    pub renewable: bool,
    pub display_name: String,
}
