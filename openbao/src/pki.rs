//! A PKI mount: sign CSRs through a role, revoke, rebuild the CRL, and fetch
//! the public CA and CRL files.

use std::time::Duration;

use vaultrs::api::pki::requests::SignCertificateRequest;

use crate::client::OpenBao;
use crate::error::Error;

/// One PKI mount. Cheap to create: `bao.pki("pki_int")`.
#[derive(Debug, Clone)]
pub struct Pki {
    bao: OpenBao,
    mount: String,
}

/// A `<mount>/sign/<role>` request. Names come from here, the key from the
/// CSR; what the role allows decides what OpenBao accepts.
#[derive(Debug, Clone, Default)]
pub struct SignRequest {
    /// PEM.
    pub csr: String,
    pub common_name: String,
    /// DNS names or email addresses (`alt_names`).
    pub alt_names: Vec<String>,
    /// `OID;UTF8:value` (e.g. the Windows UPN).
    pub other_sans: Vec<String>,
    /// Keep the CN out of the SANs (OpenBao copies it in by default).
    pub exclude_cn_from_sans: bool,
    /// Capped by the role's `max_ttl`; the role's `ttl` when `None`.
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Signed {
    /// PEM.
    pub certificate: String,
    /// PEM of the issuing CA.
    pub issuing_ca: String,
    /// PEM, issuing CA first.
    pub ca_chain: Vec<String>,
    /// Colon-separated lowercase hex, as OpenBao writes it.
    pub serial_number: String,
}

impl OpenBao {
    pub fn pki(&self, mount: &str) -> Pki {
        Pki {
            bao: self.clone(),
            mount: mount.trim_matches('/').to_string(),
        }
    }
}

impl Pki {
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Sign `req.csr` with `role` (PEM in, PEM out).
    pub async fn sign(&self, role: &str, req: &SignRequest) -> Result<Signed, Error> {
        let path = format!("{}/sign/{role}", self.mount);
        let mount = self.mount.as_str();
        let signed = self
            .bao
            .call(&path, |s| {
                let mut builder = SignCertificateRequest::builder();
                builder
                    .exclude_cn_from_sans(req.exclude_cn_from_sans)
                    .format("pem");
                if !req.alt_names.is_empty() {
                    builder.alt_names(req.alt_names.join(","));
                }
                if !req.other_sans.is_empty() {
                    builder.other_sans(req.other_sans.clone());
                }
                if let Some(ttl) = req.ttl {
                    builder.ttl(format!("{}s", ttl.as_secs()));
                }
                async move {
                    vaultrs::pki::cert::ca::sign(
                        &s,
                        mount,
                        role,
                        &req.csr,
                        &req.common_name,
                        Some(&mut builder),
                    )
                    .await
                }
            })
            .await?;
        Ok(Signed {
            certificate: signed.certificate,
            issuing_ca: signed.issuing_ca,
            ca_chain: signed.ca_chain.unwrap_or_default(),
            serial_number: signed.serial_number,
        })
    }

    /// Revoke by serial number (`aa:bb:…`). Revoking a revoked certificate
    /// succeeds; an unknown or expired one is an [`Error::Other`] (400).
    /// Returns the revocation time (Unix seconds).
    pub async fn revoke(&self, serial_number: &str) -> Result<u64, Error> {
        let path = format!("{}/revoke", self.mount);
        let mount = self.mount.as_str();
        let r = self
            .bao
            .call(&path, |s| async move {
                vaultrs::pki::cert::revoke(&s, mount, serial_number).await
            })
            .await?;
        Ok(r.revocation_time)
    }

    /// Rebuild the CRL now.
    pub async fn rotate_crl(&self) -> Result<(), Error> {
        let path = format!("{}/crl/rotate", self.mount);
        let mount = self.mount.as_str();
        self.bao
            .call(&path, |s| async move {
                vaultrs::pki::cert::crl::rotate(&s, mount).await
            })
            .await?;
        Ok(())
    }

    /// A public file of the mount: `ca`, `ca/pem`, `ca_chain`, `crl`,
    /// `crl/pem` (DER unless `/pem`); `None` when OpenBao has none.
    pub async fn fetch(&self, what: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bao
            .fetch_public(&format!("{}/{}", self.mount, what.trim_matches('/')))
            .await
    }
}
