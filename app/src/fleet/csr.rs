//! Certificate signing requests from the YubiKey: the self-signature checks
//! out, and the key is one the PIV applet generates and the policy allows.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::policy::KeyAlgorithm;

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not a PEM \"CERTIFICATE REQUEST\"")]
    NotPem,
    #[error("the CSR is not valid DER: {0}")]
    Malformed(String),
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    #[error("the CSR's key ({0}) is not one a YubiKey PIV slot holds (RSA 2048/3072/4096, EC P-256, EC P-384)")]
    UnsupportedKey(String),
}

/// What Kleidia needs from a verified CSR.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    pub pem: String,
    pub algorithm: KeyAlgorithm,
    /// DER of the SubjectPublicKeyInfo, compared with the attested key.
    pub spki_der: Vec<u8>,
}

pub fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

pub fn verify_csr(pem: &str) -> Result<VerifiedCsr, CsrError> {
    let der = pem_to_der(pem, "CERTIFICATE REQUEST").ok_or(CsrError::NotPem)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("trailing bytes after the CSR".into()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = key_algorithm(spki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(VerifiedCsr {
        pem: pem.trim().to_string() + "\n",
        algorithm,
        spki_der: spki.raw.to_vec(),
    })
}

pub fn key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<KeyAlgorithm, CsrError> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            n => Err(CsrError::UnsupportedKey(format!("RSA {n}"))),
        },
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => Ok(KeyAlgorithm::EccP256),
                OID_P384 => Ok(KeyAlgorithm::EccP384),
                other => Err(CsrError::UnsupportedKey(format!("EC curve {other}"))),
            }
        }
        Ok(other) => Err(CsrError::UnsupportedKey(
            format!("{other:?}").chars().take(40).collect(),
        )),
        Err(e) => Err(CsrError::UnsupportedKey(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl_csr(args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut a = vec![
            "req", "-new", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-subj", "/CN=x",
        ];
        a.extend_from_slice(args);
        let ok = Command::new("openssl")
            .args(&a)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        std::fs::read_to_string(dir.path().join("c.pem")).unwrap()
    }

    #[test]
    fn piv_key_types_are_recognised_and_others_refused() {
        let p256 = openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        assert_eq!(verify_csr(&p256).unwrap().algorithm, KeyAlgorithm::EccP256);
        let p384 = openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]);
        assert_eq!(verify_csr(&p384).unwrap().algorithm, KeyAlgorithm::EccP384);
        let rsa = openssl_csr(&["-newkey", "rsa:2048"]);
        assert_eq!(verify_csr(&rsa).unwrap().algorithm, KeyAlgorithm::Rsa2048);
        let p521 = openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]);
        assert!(matches!(
            verify_csr(&p521),
            Err(CsrError::UnsupportedKey(_))
        ));
        let ed = openssl_csr(&["-newkey", "ed25519"]);
        assert!(verify_csr(&ed).is_err());
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let pem = openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let mut der = pem_to_der(&pem, "CERTIFICATE REQUEST").unwrap();
        // Flip a bit inside the subject (CN=x) so the signature no longer matches.
        let pos = der.iter().position(|b| *b == b'x').unwrap();
        der[pos] ^= 0x01;
        use base64::Engine as _;
        let bad = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        assert_eq!(verify_csr(&bad).unwrap_err(), CsrError::BadSignature);
        assert_eq!(verify_csr("hello").unwrap_err(), CsrError::NotPem);
    }
}
