//! Certificates through OpenBao's PKI: sign a verified CSR with the PIV role
//! (names from Kleidia, key from the CSR), revoke, and fetch the CA chain and
//! CRLs that `/pki/*` serves.

use serde_json::Value;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::csr::{pem_to_der, VerifiedCsr};
use super::pki_cache::PkiCache;
use super::policy::KeyAlgorithm;
use crate::vault::bootstrap::{piv_sign_request, ROLE_PIV_EC, ROLE_PIV_RSA};
use crate::vault::{Bao, BaoError, RawAnswer};

/// Names that go into the certificate, all from Kleidia's user record.
#[derive(Debug, Clone)]
pub struct CertificateNames {
    pub common_name: String,
    pub email: Option<String>,
    pub upn: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    /// Colon-separated lowercase hex, as OpenBao writes it.
    pub serial_number: String,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("OpenBao returned a certificate Kleidia cannot read: {0}")]
    BadCertificate(String),
}

/// One PKI mount of OpenBao (the issuing CA, or the root for its own
/// documents), with the cache of the public documents that a revocation clears.
#[derive(Clone, Copy)]
pub struct Pki<'a> {
    pub bao: &'a Bao,
    pub mount: &'a str,
    pub cache: &'a PkiCache,
}

impl Pki<'_> {
    pub async fn sign(
        &self,
        csr: &VerifiedCsr,
        names: &CertificateNames,
        ttl_secs: u64,
    ) -> Result<IssuedCertificate, PkiError> {
        let role = match csr.algorithm {
            KeyAlgorithm::EccP256 | KeyAlgorithm::EccP384 => ROLE_PIV_EC,
            _ => ROLE_PIV_RSA,
        };
        let emails: Vec<&str> = names.email.iter().map(String::as_str).collect();
        let body = piv_sign_request(
            &csr.pem,
            &names.common_name,
            &emails,
            names.upn.as_deref(),
            ttl_secs,
        );
        let resp = self
            .bao
            .write(&format!("{}/sign/{role}", self.mount), &body)
            .await?;
        let pem = resp
            .pointer("/data/certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| PkiError::BadCertificate("no certificate in the answer".into()))?
            .to_string();
        let serial_number = resp
            .pointer("/data/serial_number")
            .and_then(Value::as_str)
            .ok_or_else(|| PkiError::BadCertificate("no serial number in the answer".into()))?
            .to_string();
        let der = pem_to_der(&pem, "CERTIFICATE")
            .ok_or_else(|| PkiError::BadCertificate("not PEM".into()))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let subject = cert.subject().to_string();
        Ok(IssuedCertificate {
            pem: pem.trim().to_string() + "\n",
            serial_number,
            subject,
            not_before,
            not_after,
        })
    }

    /// Revoke a certificate in OpenBao and ask this replica's CRL rebuilder
    /// for a new CRL ([`run_crl_rebuilds`]). OCSP answers "revoked" as soon
    /// as this returns; the CRL served at `/pki/crl` lists the certificate
    /// once the rebuild that follows has finished (docs/openbao.md,
    /// "Revocation").
    ///
    /// With `auto_rebuild` on (bootstrap sets it, so the CRL never goes
    /// stale) OpenBao no longer rebuilds the CRL on a revocation, only when
    /// it nears its nextUpdate; hence the explicit rebuild. It is not made
    /// here: a rebuild reads every revoked certificate (its time grows with
    /// the CRL), and revocations that come while one runs share the next.
    pub async fn revoke(&self, serial_number: &str) -> Result<(), PkiError> {
        let r = self
            .bao
            .write(
                &format!("{}/revoke", self.mount),
                &serde_json::json!({"serial_number": serial_number}),
            )
            .await;
        match r {
            Ok(_) => {}
            // Already revoked (or expired and tidied): the goal is reached.
            Err(BaoError::Other {
                status: 400,
                message,
                ..
            }) if message.contains("already") || message.contains("expired") => {}
            Err(e) => return Err(e.into()),
        }
        self.cache.want_crl();
        Ok(())
    }

    /// Build a new CRL now (`crl/rotate`) and drop the cached documents.
    pub async fn rebuild_crl(&self) -> Result<(), PkiError> {
        self.bao.read(&format!("{}/crl/rotate", self.mount)).await?;
        self.cache.invalidate();
        Ok(())
    }

    /// Rebuild the CRL if a revocation asked for it since the last rebuild
    /// started; on failure the request stays. `true` when it rebuilt.
    pub async fn rebuild_crl_if_wanted(&self) -> Result<bool, PkiError> {
        if !self.cache.take_crl_wanted() {
            return Ok(false);
        }
        match self.rebuild_crl().await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.cache.want_crl();
                Err(e)
            }
        }
    }

    /// Ask OpenBao's OCSP responder about a DER-encoded OCSP request
    /// (unauthenticated, never cached here). OpenBao's answer comes back as
    /// it is, including its own 4xx `malformedRequest` responses.
    pub async fn ocsp(&self, request_der: Vec<u8>) -> Result<RawAnswer, PkiError> {
        Ok(self
            .bao
            .post_public(
                &format!("{}/ocsp", self.mount),
                "application/ocsp-request",
                request_der,
            )
            .await?)
    }

    /// Raw bytes of an unauthenticated PKI endpoint of this mount (`ca`,
    /// `ca_chain`, `crl`, `ca/pem`, `crl/pem`), from the cache when fresh;
    /// `None` when the CA is not set up.
    pub async fn document(&self, what: &str) -> Result<Option<Vec<u8>>, PkiError> {
        let key = format!("{}/{what}", self.mount);
        if let Some(b) = self.cache.get(&key) {
            return Ok(Some(b));
        }
        // A CRL fetched while a rebuild finishes is not kept past it.
        let generation = self.cache.generation();
        let fetched = self.bao.fetch_public(&key).await?;
        if let Some(b) = &fetched {
            self.cache.put_if_current(&key, b.clone(), generation);
        }
        Ok(fetched)
    }
}

/// How long to wait before trying a failed CRL rebuild again.
pub const CRL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// This replica's CRL rebuilder: a rebuild as soon as a revocation asks for
/// one, one at a time; the revocations made while one runs share the next
/// one. A failed rebuild (OpenBao down, sealed) is tried again every
/// [`CRL_RETRY`]. Started with the server: it first tries one rebuild (for
/// a replica killed between a revocation and its rebuild; an installation
/// whose CA is not set up yet only logs it), and the server makes a pending
/// one before it stops.
pub async fn run_crl_rebuilds(pki: Pki<'_>) {
    if let Err(e) = pki.rebuild_crl().await {
        tracing::info!(mount = pki.mount, error = %e, "CRL rebuild at start failed");
    }
    loop {
        pki.cache.crl_wanted().await;
        loop {
            match pki.rebuild_crl_if_wanted().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(mount = pki.mount, error = %e, "CRL rebuild failed; trying again");
                    tokio::time::sleep(CRL_RETRY).await;
                }
            }
        }
    }
}
