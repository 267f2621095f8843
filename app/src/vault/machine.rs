//! The machine logins `kleidia bootstrap` sets up next to the layout: an
//! AppRole role per service (`kleidia-app`, `kleidia-license`), each with
//! its own policy only, and, given the cluster's service-account public
//! key, a JWT auth role per service for Kubernetes. Optionally writes each
//! service's role_id and a fresh secret_id to files for its
//! `openbao.role_id_file`/`secret_id_file`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kleidia_openbao::{JwtRole, TokenSpec};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::bootstrap::{BootstrapError, Outcome, Report};
use super::layout::{POLICY_APP, POLICY_LICENSE};
use super::Bao;
use crate::config::OpenBaoConfig;

/// What `kleidia bootstrap` is asked to set up for machine logins.
#[derive(Debug, Clone)]
pub struct MachineAuth {
    /// Lifetime of a login's token and of each renewal.
    pub token_ttl: Duration,
    /// Renewals stop extending a token past this age; the service logs in again.
    pub token_max_ttl: Duration,
    /// Write `<dir>/<role>/role_id` and a new `<dir>/<role>/secret_id`.
    pub approle_out: Option<PathBuf>,
    /// JWT auth for Kubernetes, when the cluster's keys are given.
    pub jwt: Option<JwtSetup>,
}

#[derive(Debug, Clone)]
pub struct JwtSetup {
    /// PEM public keys that sign the cluster's service-account tokens.
    pub pubkeys: Vec<String>,
    /// The tokens' `aud` (the projected token's audience).
    pub audience: String,
    pub issuer: Option<String>,
    /// `system:serviceaccount:<ns>:<name>` of the app; `None`: any subject.
    pub app_subject: Option<String>,
    pub license_subject: Option<String>,
}

/// The AppRole (and JWT role) names: the policy's name.
pub const ROLE_APP: &str = POLICY_APP;
pub const ROLE_LICENSE: &str = POLICY_LICENSE;

impl MachineAuth {
    fn spec(&self, policy: &str) -> TokenSpec {
        TokenSpec {
            policies: vec![policy.to_string()],
            ttl: self.token_ttl,
            max_ttl: self.token_max_ttl,
        }
    }

    pub async fn run(
        &self,
        bao: &Bao,
        m: &OpenBaoConfig,
        r: &mut Report,
    ) -> Result<(), BootstrapError> {
        let mount = m.approle_mount.as_str();
        let enabled = bao.enable_auth(mount, "approle").await?;
        r.push(outcome(enabled), format!("auth method approle at {mount}/"));
        for (role, policy) in [(ROLE_APP, POLICY_APP), (ROLE_LICENSE, POLICY_LICENSE)] {
            let spec = self.spec(policy);
            let path = format!("auth/{mount}/role/{role}");
            let current = bao.read(&path).await?;
            let what = format!(
                "AppRole {role} (policy {policy}, token ttl {}s, max {}s)",
                spec.ttl.as_secs(),
                spec.max_ttl.as_secs()
            );
            match current {
                Some(c) if same_role(&c, &spec) => r.push(Outcome::InPlace, what),
                found => {
                    bao.write_approle_role(mount, role, &spec).await?;
                    let o = if found.is_some() {
                        Outcome::Updated
                    } else {
                        Outcome::Created
                    };
                    r.push(o, what);
                }
            }
            if let Some(dir) = &self.approle_out {
                let role_id = bao.approle_role_id(mount, role).await?;
                let secret_id = bao.approle_secret_id(mount, role).await?;
                let dir = dir.join(role);
                write_private(&dir.join("role_id"), &role_id)?;
                write_private(&dir.join("secret_id"), secret_id.expose_secret())?;
                r.push(
                    Outcome::Created,
                    format!("role_id and a new secret_id of {role} in {}", dir.display()),
                );
            }
        }
        if let Some(jwt) = &self.jwt {
            let mount = m.jwt_mount.as_str();
            let enabled = bao.enable_auth(mount, "jwt").await?;
            r.push(outcome(enabled), format!("auth method jwt at {mount}/"));
            bao.write_jwt_config(mount, &jwt.pubkeys, jwt.issuer.as_deref())
                .await?;
            r.push(
                Outcome::Updated,
                format!(
                    "jwt at {mount}/ validates with {} service-account key(s)",
                    jwt.pubkeys.len()
                ),
            );
            for (role, policy, subject) in [
                (m.jwt_role.as_str(), POLICY_APP, &jwt.app_subject),
                (ROLE_LICENSE, POLICY_LICENSE, &jwt.license_subject),
            ] {
                let spec = JwtRole {
                    bound_audiences: vec![jwt.audience.clone()],
                    bound_subject: subject.clone(),
                    user_claim: "sub".into(),
                    token: self.spec(policy),
                };
                bao.write_jwt_role(mount, role, &spec).await?;
                r.push(
                    Outcome::Updated,
                    format!(
                        "jwt role {role} (policy {policy}, audience {}, subject {})",
                        jwt.audience,
                        subject.as_deref().unwrap_or("any")
                    ),
                );
            }
        }
        Ok(())
    }
}

fn outcome(created: bool) -> Outcome {
    if created {
        Outcome::Created
    } else {
        Outcome::InPlace
    }
}

/// Whether the stored role gives tokens exactly `spec`'s policy and TTLs.
fn same_role(found: &Value, spec: &TokenSpec) -> bool {
    let data = found.get("data").unwrap_or(found);
    let secs = |k: &str| data.get(k).and_then(Value::as_u64);
    let policies: Vec<&str> = data
        .get("token_policies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    policies == spec.policies.iter().map(String::as_str).collect::<Vec<_>>()
        && secs("token_ttl") == Some(spec.ttl.as_secs())
        && secs("token_max_ttl") == Some(spec.max_ttl.as_secs())
        && secs("secret_id_ttl") == Some(0)
}

/// Write a credential file readable by its owner only (0600, in a 0700 directory).
fn write_private(path: &Path, content: &str) -> Result<(), BootstrapError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| {
        BootstrapError::Unexpected(format!("cannot write {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(fail)?;
    f.write_all(content.as_bytes()).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)
}
