//! `kleidia bootstrap`: bring an OpenBao server to the layout Kleidia needs
//! (DESIGN §4, the roles and policies in `vault::layout`), idempotently.
//! Every step reads what is there first and only writes what differs, so a
//! second run reports everything "in place".

use serde_json::{json, Value};

use super::layout::{app_policy, license_policy, piv_roles, AUDIT_KEY, POLICY_APP, POLICY_LICENSE};
// Where the fleet's signing code has always found them.
pub use super::layout::{piv_sign_request, ROLE_PIV_EC, ROLE_PIV_RSA};
use super::{Bao, BaoError};
use crate::config::OpenBaoConfig;

/// Versions OpenBao keeps of each escrow secret on the `yubikeys` mount, set
/// explicitly so pruning is Kleidia's choice, never OpenBao's default (10).
/// The confirmed version is always within it: before a secret change writes
/// its attempt, authorisation re-escrows the confirmed values as the latest
/// version if abandoned attempts sit above it, so the confirmed version is
/// never more than one below the latest. The rest is history for the device page.
pub const KV_MAX_VERSIONS: u64 = 20;

/// Lifetime bounds of the CAs (seconds).
const ROOT_TTL: u64 = 10 * 365 * 24 * 3600;
const INT_TTL: u64 = 5 * 365 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    InPlace,
}

#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<(Outcome, String)>,
}

impl Report {
    pub(crate) fn push(&mut self, o: Outcome, what: impl Into<String>) {
        self.steps.push((o, what.into()));
    }

    pub fn changed(&self) -> bool {
        self.steps.iter().any(|(o, _)| *o != Outcome::InPlace)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (o, what) in &self.steps {
            let tag = match o {
                Outcome::Created => "created ",
                Outcome::Updated => "updated ",
                Outcome::InPlace => "in place",
            };
            out.push_str(&format!("{tag}  {what}\n"));
        }
        let count = |k| self.steps.iter().filter(|(o, _)| *o == k).count();
        if self.changed() {
            out.push_str(&format!(
                "bootstrap: {} created, {} updated, {} already in place\n",
                count(Outcome::Created),
                count(Outcome::Updated),
                count(Outcome::InPlace)
            ));
        } else {
            out.push_str("bootstrap: nothing changed, everything was already in place\n");
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("mount {path} exists but is {found}, not {wanted}; refusing to touch it")]
    WrongMount {
        path: String,
        found: String,
        wanted: String,
    },
    #[error("unexpected OpenBao answer: {0}")]
    Unexpected(String),
}

pub struct Bootstrap<'a> {
    pub bao: &'a Bao,
    pub mounts: &'a OpenBaoConfig,
    /// Kleidia's public URL: base of the CRL and issuing-certificate URLs.
    pub public_url: &'a url::Url,
}

impl Bootstrap<'_> {
    pub async fn run(&self) -> Result<Report, BootstrapError> {
        let mut r = Report::default();
        let m = self.mounts;
        for mount in [&m.kv_mount, &m.app_mount, &m.license_mount] {
            self.ensure_mount(&mut r, mount, "kv", Some("2"), None)
                .await?;
        }
        self.ensure_config(
            &mut r,
            &format!("{}/config", m.kv_mount),
            &format!(
                "{}/ keeps {KV_MAX_VERSIONS} versions per secret",
                m.kv_mount
            ),
            json!({"max_versions": KV_MAX_VERSIONS}),
            &[("max_versions", json!(KV_MAX_VERSIONS))],
        )
        .await?;
        self.ensure_mount(&mut r, &m.pki_root_mount, "pki", None, Some(ROOT_TTL))
            .await?;
        self.ensure_mount(&mut r, &m.pki_mount, "pki", None, Some(INT_TTL))
            .await?;
        self.ensure_root_ca(&mut r).await?;
        let base = self.public_url.as_str().trim_end_matches('/').to_string();
        // The root's URLs go into the intermediate certificate, so set them first.
        self.ensure_urls(
            &mut r,
            &m.pki_root_mount,
            &format!("{base}/pki/root/ca"),
            &format!("{base}/pki/root/crl"),
        )
        .await?;
        self.ensure_intermediate_ca(&mut r).await?;
        self.ensure_urls(
            &mut r,
            &m.pki_mount,
            &format!("{base}/pki/ca"),
            &format!("{base}/pki/crl"),
        )
        .await?;
        self.ensure_ocsp_url(&mut r, &m.pki_mount, &format!("{base}/pki/ocsp"))
            .await?;
        self.ensure_crl_lifetime(&mut r, &m.pki_mount, ISSUING_CRL)
            .await?;
        self.ensure_crl_lifetime(&mut r, &m.pki_root_mount, ROOT_CRL)
            .await?;
        self.ensure_auto_tidy(&mut r, &m.pki_mount).await?;
        for (name, body) in piv_roles() {
            self.ensure_role(&mut r, name, body).await?;
        }
        self.ensure_audit_anchor_key(&mut r).await?;
        self.ensure_policy(&mut r, POLICY_APP, &app_policy(m))
            .await?;
        self.ensure_policy(&mut r, POLICY_LICENSE, &license_policy(m))
            .await?;
        Ok(r)
    }

    async fn ensure_mount(
        &self,
        r: &mut Report,
        path: &str,
        kind: &str,
        version: Option<&str>,
        max_ttl: Option<u64>,
    ) -> Result<(), BootstrapError> {
        let what = match version {
            Some(v) => format!("{kind}-v{v} mount {path}/"),
            None => format!("{kind} mount {path}/"),
        };
        let existing = self.bao.read(&format!("sys/mounts/{path}")).await;
        let existing = match existing {
            Ok(v) => v,
            // Older servers answer 400 for a missing mount instead of 404.
            Err(BaoError::Other { status: 400, .. } | BaoError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(found) = existing else {
            let mut body = json!({"type": kind});
            if let Some(v) = version {
                body["options"] = json!({"version": v});
            }
            if let Some(t) = max_ttl {
                body["config"] = json!({"max_lease_ttl": format!("{t}s")});
            }
            self.bao.write(&format!("sys/mounts/{path}"), &body).await?;
            super::wait_kv_upgraded(self.bao, path, version).await?;
            r.push(Outcome::Created, what);
            return Ok(());
        };
        let data = found.get("data").unwrap_or(&found);
        let found_type = data.get("type").and_then(Value::as_str).unwrap_or("?");
        let found_version = data
            .pointer("/options/version")
            .and_then(Value::as_str)
            .unwrap_or("1");
        if found_type != kind || version.is_some_and(|v| v != found_version) {
            return Err(BootstrapError::WrongMount {
                path: format!("{path}/"),
                found: format!("{found_type} (version {found_version})"),
                wanted: what,
            });
        }
        if let Some(t) = max_ttl {
            let current = data
                .pointer("/config/max_lease_ttl")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if current != t {
                self.bao
                    .write(
                        &format!("sys/mounts/{path}/tune"),
                        &json!({"max_lease_ttl": format!("{t}s")}),
                    )
                    .await?;
                r.push(Outcome::Updated, format!("{what} (max lease TTL {t}s)"));
                return Ok(());
            }
        }
        r.push(Outcome::InPlace, what);
        Ok(())
    }

    /// The transit mount and the audit anchor's HMAC key (see
    /// `crate::audit::anchor`): type `hmac`, never exportable, no plaintext
    /// backup, not deletable. An existing key that could leave OpenBao is an
    /// error: an anchor MACed with it proves nothing.
    async fn ensure_audit_anchor_key(&self, r: &mut Report) -> Result<(), BootstrapError> {
        let mount = &self.mounts.transit_mount;
        self.ensure_mount(r, mount, "transit", None, None).await?;
        let path = format!("{mount}/keys/{AUDIT_KEY}");
        let what = format!("audit anchor HMAC key {path} (non-exportable)");
        match self.bao.read(&path).await? {
            None => {
                self.bao
                    .write(
                        &path,
                        &json!({"type": "hmac", "key_size": 32, "exportable": false,
                                "allow_plaintext_backup": false}),
                    )
                    .await?;
                r.push(Outcome::Created, what);
            }
            Some(found) => {
                let d = found.get("data").unwrap_or(&found);
                let flag = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(true);
                if flag("exportable") || flag("allow_plaintext_backup") {
                    return Err(BootstrapError::Unexpected(format!(
                        "{path} is exportable or may be backed up in plaintext; \
                         the audit anchor needs a key that never leaves OpenBao"
                    )));
                }
                r.push(Outcome::InPlace, what);
            }
        }
        Ok(())
    }

    async fn has_issuer(&self, mount: &str) -> Result<bool, BootstrapError> {
        Ok(!self.bao.list(&format!("{mount}/issuers")).await?.is_empty())
    }

    async fn ensure_root_ca(&self, r: &mut Report) -> Result<(), BootstrapError> {
        let mount = &self.mounts.pki_root_mount;
        let what = format!("root CA in {mount}/ (EC P-384, 10 years)");
        if self.has_issuer(mount).await? {
            r.push(Outcome::InPlace, what);
            return Ok(());
        }
        self.bao
            .write(
                &format!("{mount}/root/generate/internal"),
                &json!({
                    "common_name": "Kleidia Root CA",
                    "issuer_name": "kleidia-root",
                    "key_type": "ec",
                    "key_bits": 384,
                    "ttl": format!("{ROOT_TTL}s"),
                }),
            )
            .await?;
        r.push(Outcome::Created, what);
        Ok(())
    }

    async fn ensure_intermediate_ca(&self, r: &mut Report) -> Result<(), BootstrapError> {
        let root = &self.mounts.pki_root_mount;
        let int = &self.mounts.pki_mount;
        let what = format!("intermediate CA in {int}/ signed by {root}/ (EC P-256, 5 years)");
        if self.has_issuer(int).await? {
            r.push(Outcome::InPlace, what);
            return Ok(());
        }
        let csr = self
            .bao
            .write(
                &format!("{int}/intermediate/generate/internal"),
                &json!({
                    "common_name": "Kleidia YubiKey Issuing CA",
                    "key_type": "ec",
                    "key_bits": 256,
                }),
            )
            .await?;
        let csr = csr
            .pointer("/data/csr")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BootstrapError::Unexpected("no CSR from intermediate/generate".into())
            })?;
        let signed = self
            .bao
            .write(
                &format!("{root}/root/sign-intermediate"),
                &json!({
                    "csr": csr,
                    "common_name": "Kleidia YubiKey Issuing CA",
                    "format": "pem",
                    "ttl": format!("{INT_TTL}s"),
                    "max_path_length": 0,
                }),
            )
            .await?;
        let cert = signed
            .pointer("/data/certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BootstrapError::Unexpected("no certificate from sign-intermediate".into())
            })?;
        let issuing = signed
            .pointer("/data/issuing_ca")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.bao
            .write(
                &format!("{int}/intermediate/set-signed"),
                &json!({"certificate": format!("{cert}\n{issuing}")}),
            )
            .await?;
        r.push(Outcome::Created, what);
        Ok(())
    }

    async fn ensure_urls(
        &self,
        r: &mut Report,
        mount: &str,
        issuing: &str,
        crl: &str,
    ) -> Result<(), BootstrapError> {
        self.ensure_config(
            r,
            &format!("{mount}/config/urls"),
            &format!("{mount}/ issuing and CRL URLs ({issuing}, {crl})"),
            json!({"issuing_certificates": [issuing], "crl_distribution_points": [crl]}),
            &[
                ("issuing_certificates", json!([issuing])),
                ("crl_distribution_points", json!([crl])),
            ],
        )
        .await
    }

    /// Read a config endpoint, compare the listed fields, write `body` if any differ.
    async fn ensure_config(
        &self,
        r: &mut Report,
        path: &str,
        what: &str,
        body: Value,
        expect: &[(&str, Value)],
    ) -> Result<(), BootstrapError> {
        let current = self.bao.read(path).await?;
        let data = current.as_ref().and_then(|v| v.get("data"));
        let same = data.is_some_and(|d| expect.iter().all(|(k, v)| same_value(d.get(*k), v)));
        if same {
            r.push(Outcome::InPlace, what);
            return Ok(());
        }
        self.bao.write(path, &body).await?;
        let o = if data.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        r.push(o, what);
        Ok(())
    }

    /// `ocsp_servers` of the mount's URLs, so that every certificate it
    /// issues names Kleidia's OCSP pass-through in its AIA. A write of
    /// `config/urls` keeps the fields it does not name (checked on 2.7.2), so
    /// this and [`Self::ensure_urls`] do not undo each other.
    async fn ensure_ocsp_url(
        &self,
        r: &mut Report,
        mount: &str,
        ocsp: &str,
    ) -> Result<(), BootstrapError> {
        self.ensure_config(
            r,
            &format!("{mount}/config/urls"),
            &format!("{mount}/ OCSP URL ({ocsp})"),
            json!({"ocsp_servers": [ocsp]}),
            &[("ocsp_servers", json!([ocsp]))],
        )
        .await
    }

    /// An auto-rebuilt CRL (see [`CrlLifetime`]). When the settings change,
    /// the CRL is rebuilt at once: OpenBao applies a new expiry only to the
    /// next CRL it builds, and an installation whose CRL is already stale
    /// gets a fresh one now instead of at the next revocation.
    async fn ensure_crl_lifetime(
        &self,
        r: &mut Report,
        mount: &str,
        life: CrlLifetime,
    ) -> Result<(), BootstrapError> {
        let expiry = format!("{}h", life.expiry_hours);
        let grace = format!("{}h", life.grace_hours);
        let before = r.steps.len();
        self.ensure_config(
            r,
            &format!("{mount}/config/crl"),
            &format!("{mount}/ CRL auto-rebuilt, expiry {expiry}, rebuilt {grace} before it"),
            json!({
                "disable": false,
                "auto_rebuild": true,
                "expiry": expiry,
                "auto_rebuild_grace_period": grace,
            }),
            &[
                ("disable", json!(false)),
                ("auto_rebuild", json!(true)),
                ("expiry", json!(expiry)),
                ("auto_rebuild_grace_period", json!(grace)),
            ],
        )
        .await?;
        let changed = r.steps[before..]
            .iter()
            .any(|(o, _)| *o != Outcome::InPlace);
        if changed {
            self.bao.read(&format!("{mount}/crl/rotate")).await?;
            r.push(
                Outcome::Updated,
                format!("{mount}/ CRL rebuilt with the new lifetime"),
            );
        }
        Ok(())
    }

    /// Periodic tidy of the mount's certificate store: certificates (revoked
    /// or not) are removed [`TIDY_SAFETY_BUFFER_SECS`] after they expire, which
    /// also drops expired entries from the CRL. A revoked certificate stays on
    /// the CRL until then (OpenBao tidies revoked entries only past NotAfter).
    async fn ensure_auto_tidy(&self, r: &mut Report, mount: &str) -> Result<(), BootstrapError> {
        let interval = TIDY_INTERVAL_SECS;
        let buffer = TIDY_SAFETY_BUFFER_SECS;
        // Written as "<n>s", read back as a number of seconds.
        self.ensure_config(
            r,
            &format!("{mount}/config/auto-tidy"),
            &format!(
                "{mount}/ auto-tidy every {}h of certificates expired over {}h ago",
                interval / 3600,
                buffer / 3600
            ),
            json!({
                "enabled": true,
                "interval_duration": format!("{interval}s"),
                "tidy_cert_store": true,
                "tidy_revoked_certs": true,
                "safety_buffer": format!("{buffer}s"),
                "revoked_safety_buffer": format!("{buffer}s"),
            }),
            &[
                ("enabled", json!(true)),
                ("interval_duration", json!(interval)),
                ("tidy_cert_store", json!(true)),
                ("tidy_revoked_certs", json!(true)),
                ("safety_buffer", json!(buffer)),
                ("revoked_safety_buffer", json!(buffer)),
            ],
        )
        .await
    }

    async fn ensure_role(
        &self,
        r: &mut Report,
        name: &str,
        body: Value,
    ) -> Result<(), BootstrapError> {
        let int = &self.mounts.pki_mount;
        let path = format!("{int}/roles/{name}");
        let what = format!("PIV signing role {path}");
        let current = self.bao.read(&path).await?;
        let Some(current) = current else {
            self.bao.write(&path, &body).await?;
            r.push(Outcome::Created, what);
            return Ok(());
        };
        let data = current.get("data").cloned().unwrap_or(Value::Null);
        let same = body
            .as_object()
            .is_some_and(|o| o.iter().all(|(k, v)| same_value(data.get(k), v)));
        if same {
            r.push(Outcome::InPlace, what);
        } else {
            self.bao.write(&path, &body).await?;
            r.push(Outcome::Updated, what);
        }
        Ok(())
    }

    async fn ensure_policy(
        &self,
        r: &mut Report,
        name: &str,
        text: &str,
    ) -> Result<(), BootstrapError> {
        let path = format!("sys/policies/acl/{name}");
        let what = format!("policy {name}");
        let current = self.bao.read(&path).await?;
        let current_text = current
            .as_ref()
            .and_then(|v| v.pointer("/data/policy"))
            .and_then(Value::as_str);
        match current_text {
            Some(t) if t == text => r.push(Outcome::InPlace, what),
            Some(_) => {
                self.bao.write(&path, &json!({"policy": text})).await?;
                r.push(Outcome::Updated, what);
            }
            None => {
                self.bao.write(&path, &json!({"policy": text})).await?;
                r.push(Outcome::Created, what);
            }
        }
        Ok(())
    }
}

/// How long a CRL is valid (`expiry`, its nextUpdate) and how long before
/// that OpenBao builds the next one (`auto_rebuild_grace_period`). OpenBao
/// checks about once a minute and rebuilds when less than the grace period
/// is left, so while it is up and unsealed the CRL's nextUpdate is always at
/// least `grace` (minus that minute) ahead; the grace period is also how
/// long OpenBao may be down or sealed before relying parties see a stale CRL. The expiry bounds how long a relying party that caches the CRL
/// until nextUpdate keeps an old one (OCSP answers at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlLifetime {
    pub expiry_hours: u64,
    pub grace_hours: u64,
}

/// The issuing CA's CRL: valid 3 days (as before), rebuilt daily when two
/// days are left: nextUpdate is always 2 to 3 days ahead, and an OpenBao
/// outage of up to two days goes unnoticed by relying parties.
pub const ISSUING_CRL: CrlLifetime = CrlLifetime {
    expiry_hours: 72,
    grace_hours: 48,
};

/// The root's CRL lists at most a revoked intermediate, and relying parties
/// that check the whole chain (Windows does) need it fresh too: valid 30
/// days, rebuilt when 20 are left.
pub const ROOT_CRL: CrlLifetime = CrlLifetime {
    expiry_hours: 30 * 24,
    grace_hours: 20 * 24,
};

/// Auto-tidy: how often, and how long after expiry a certificate is removed.
pub const TIDY_INTERVAL_SECS: u64 = 12 * 3600;
pub const TIDY_SAFETY_BUFFER_SECS: u64 = 72 * 3600;

// OpenBao refuses a grace period that is not strictly shorter than the
// expiry, and checks once a minute: keep far more than that in hand.
const _: () = {
    assert!(ISSUING_CRL.grace_hours < ISSUING_CRL.expiry_hours && ISSUING_CRL.grace_hours >= 24);
    assert!(ROOT_CRL.grace_hours < ROOT_CRL.expiry_hours && ROOT_CRL.grace_hours >= 24);
};

/// OpenBao returns `null` or `[]` for empty lists depending on the field.
fn same_value(found: Option<&Value>, wanted: &Value) -> bool {
    match (found, wanted) {
        (None | Some(Value::Null), Value::Array(a)) => a.is_empty(),
        (Some(Value::Array(f)), Value::Array(w)) => f == w,
        (Some(f), w) => f == w,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_compare_equal_to_null() {
        assert!(same_value(None, &json!([])));
        assert!(same_value(Some(&Value::Null), &json!([])));
        assert!(!same_value(Some(&json!(["a"])), &json!([])));
        assert!(same_value(Some(&json!(1)), &json!(1)));
    }
}
