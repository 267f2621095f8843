//! Attestation as a YubiKey does it: a test root CA (stands in for Yubico's
//! PIV root), a per-card attestation key in slot f9 certified by that root,
//! and ATTEST certificates for keys generated on the card, signed by f9.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use der::asn1::{BitString, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use p256::ecdsa::signature::Signer;
use rand::{CryptoRng, RngCore};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::keys::PrivateKey;
use crate::state::Firmware;

/// Yubico's PIV attestation extensions.
pub const OID_FIRMWARE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.3");
pub const OID_SERIAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.7");
pub const OID_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.8");
pub const OID_FORM_FACTOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.9");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// Form factor byte of a USB-A keychain YubiKey (ykman's `FORM_FACTOR.USB_A_KEYCHAIN`).
pub const FORM_FACTOR_USB_A_KEYCHAIN: u8 = 0x01;

const ROOT_SUBJECT: &str = "CN=Kleidia TEST YubiKey PIV Root CA (not Yubico),O=Kleidia test";
const DEVICE_SUBJECT: &str = "CN=Virtual YubiKey PIV Attestation";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The test attestation root: its key and self-signed certificate.
pub struct AttestationRoot {
    pub key: p256::SecretKey,
    pub cert_der: Vec<u8>,
}

impl AttestationRoot {
    pub fn generate<R: RngCore + CryptoRng>(now: SystemTime, rng: &mut R) -> Result<Self> {
        let key = p256::SecretKey::random(rng);
        let name = Name::from_str(ROOT_SUBJECT)?;
        let spki = spki_of(&PrivateKey::P256(key.clone()))?;
        let exts = vec![
            ext(
                OID_BASIC_CONSTRAINTS,
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(1),
                },
            )?,
            ext(
                OID_KEY_USAGE,
                true,
                &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            )?,
        ];
        let validity = validity(now, 20)?;
        let cert_der = sign_cert(&key, name.clone(), name, validity, spki, exts, rng)?;
        Ok(Self { key, cert_der })
    }

    pub fn cert_pem(&self) -> Result<String> {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The file holds the private key and the certificate, both PEM.
    pub fn save(&self, path: &Path) -> Result<()> {
        use p256::pkcs8::EncodePrivateKey;
        let key = self
            .key
            .to_pkcs8_der()
            .map_err(|e| anyhow!("encode root key: {e}"))?;
        let text = format!(
            "{}{}",
            pem("PRIVATE KEY", key.as_bytes())?,
            self.cert_pem()?
        );
        crate::state::write_private_file(path, text.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        use p256::pkcs8::DecodePrivateKey;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read attestation root {}", path.display()))?;
        let mut key = None;
        let mut cert = None;
        for (label, der) in pem_blocks(&text)? {
            match label.as_str() {
                "PRIVATE KEY" => {
                    key = Some(
                        p256::SecretKey::from_pkcs8_der(&der)
                            .map_err(|e| anyhow!("root key: {e}"))?,
                    )
                }
                "CERTIFICATE" => cert = Some(der),
                _ => {}
            }
        }
        match (key, cert) {
            (Some(key), Some(cert_der)) => Ok(Self { key, cert_der }),
            _ => bail!(
                "{} must hold a PRIVATE KEY and a CERTIFICATE",
                path.display()
            ),
        }
    }

    /// Load the root at `path`, creating it first if the file does not exist.
    pub fn load_or_create<R: RngCore + CryptoRng>(
        path: &Path,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let root = Self::generate(now, rng)?;
        root.save(path)?;
        Ok(root)
    }

    /// Certify a card's attestation key (what Yubico does at manufacture).
    /// Returns the new f9 key and its certificate.
    pub fn issue_device_attestation<R: RngCore + CryptoRng>(
        &self,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<(PrivateKey, Vec<u8>)> {
        let root = Certificate::from_der(&self.cert_der)?;
        let key = PrivateKey::P256(p256::SecretKey::random(rng));
        let exts = vec![
            ext(
                OID_BASIC_CONSTRAINTS,
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
            )?,
            ext(
                OID_KEY_USAGE,
                true,
                &KeyUsage(KeyUsages::KeyCertSign.into()),
            )?,
        ];
        let cert = sign_cert(
            &self.key,
            root.tbs_certificate.subject,
            Name::from_str(DEVICE_SUBJECT)?,
            validity(now, 20)?,
            spki_of(&key)?,
            exts,
            rng,
        )?;
        Ok((key, cert))
    }
}

/// What the ATTEST certificate states about the key it certifies.
pub struct AttestedKey<'a> {
    pub slot: u8,
    pub key: &'a PrivateKey,
    pub pin_policy: u8,
    pub touch_policy: u8,
    pub serial: u32,
    pub firmware: Firmware,
}

/// The ATTEST (`F9`) answer: a certificate for `subject.key`, issued by the f9
/// key, carrying Yubico's extensions. Like the real card (which has no
/// clock), it reuses the validity of the f9 certificate.
pub fn attest<R: RngCore + CryptoRng>(
    f9_key: &PrivateKey,
    f9_cert_der: &[u8],
    subject: &AttestedKey<'_>,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let PrivateKey::P256(f9) = f9_key else {
        bail!("the attestation key in slot f9 must be P-256")
    };
    let f9_cert = Certificate::from_der(f9_cert_der)?;
    let f = subject.firmware.bytes();
    let exts = vec![
        raw_ext(OID_FIRMWARE, &f)?,
        raw_ext(
            OID_SERIAL,
            &der::asn1::Uint::new(&subject.serial.to_be_bytes())?.to_der()?,
        )?,
        raw_ext(OID_POLICY, &[subject.pin_policy, subject.touch_policy])?,
        raw_ext(OID_FORM_FACTOR, &[FORM_FACTOR_USB_A_KEYCHAIN])?,
    ];
    sign_cert(
        f9,
        f9_cert.tbs_certificate.subject,
        Name::from_str(&format!("CN=YubiKey PIV Attestation {:02x}", subject.slot))?,
        f9_cert.tbs_certificate.validity,
        spki_of(subject.key)?,
        exts,
        rng,
    )
}

/// A certificate as PIV stores it in a data object: `70` certificate,
/// `71` CertInfo (0: not compressed), `FE` error detection code.
pub fn cert_object(cert_der: &[u8]) -> Vec<u8> {
    let mut out = crate::tlv::encode(0x70, cert_der);
    crate::tlv::encode_into(0x71, &[0], &mut out);
    crate::tlv::encode_into(0xFE, &[], &mut out);
    out
}

/// The certificate DER inside a PIV certificate object.
pub fn cert_from_object(object: &[u8]) -> Option<Vec<u8>> {
    let items = crate::tlv::parse_all(object).ok()?;
    crate::tlv::find(&items, 0x70).map(<[u8]>::to_vec)
}

fn spki_of(key: &PrivateKey) -> Result<SubjectPublicKeyInfoOwned> {
    Ok(SubjectPublicKeyInfoOwned::from_der(&key.spki_der()?)?)
}

fn ext<T: Encode>(oid: ObjectIdentifier, critical: bool, value: &T) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// An extension whose value is raw bytes inside the OCTET STRING, as Yubico encodes them.
fn raw_ext(oid: ObjectIdentifier, value: &[u8]) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(value)?,
    })
}

fn validity(now: SystemTime, years: u32) -> Result<Validity> {
    // An hour of slack for clocks that disagree a little.
    let start = now - Duration::from_secs(3600);
    Ok(Validity {
        not_before: Time::UtcTime(UtcTime::from_system_time(start)?),
        not_after: Time::UtcTime(UtcTime::from_system_time(now + YEAR * years)?),
    })
}

fn sign_cert<R: RngCore + CryptoRng>(
    signer: &p256::SecretKey,
    issuer: Name,
    subject: Name,
    validity: Validity,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7F;
    serial[0] |= 0x01;
    let alg = AlgorithmIdentifierOwned {
        oid: OID_ECDSA_SHA256,
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: alg.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let sk = p256::ecdsa::SigningKey::from(signer);
    let sig: p256::ecdsa::Signature = sk.sign(&tbs.to_der()?);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.to_der().as_bytes())?,
    };
    Ok(cert.to_der()?)
}

pub fn pem(label: &str, der: &[u8]) -> Result<String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).map_err(|e| anyhow!("PEM: {e}"))
}

/// Every PEM block in `text`, as (label, DER).
pub fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let Some(end_marker) = after.find("-----END ") else {
            bail!("unterminated PEM block")
        };
        let Some(line_end) = after[end_marker + 9..].find("-----") else {
            bail!("unterminated PEM END line")
        };
        let block_end = end_marker + 9 + line_end + 5;
        let (label, der) = der::pem::decode_vec(&after.as_bytes()[..block_end])
            .map_err(|e| anyhow!("PEM: {e}"))?;
        out.push((label.to_string(), der));
        rest = &after[block_end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use rand::rngs::OsRng;

    fn verify_signed_by(cert_der: &[u8], issuer_der: &[u8]) {
        let cert = Certificate::from_der(cert_der).unwrap();
        let issuer = Certificate::from_der(issuer_der).unwrap();
        assert_eq!(cert.tbs_certificate.issuer, issuer.tbs_certificate.subject);
        let pk = p256::PublicKey::from_sec1_bytes(
            issuer
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        )
        .unwrap();
        let vk = p256::ecdsa::VerifyingKey::from(pk);
        let sig = p256::ecdsa::Signature::from_der(cert.signature.raw_bytes()).unwrap();
        vk.verify(&cert.tbs_certificate.to_der().unwrap(), &sig)
            .unwrap();
    }

    #[test]
    fn the_attestation_chain_verifies_and_carries_yubico_extensions() {
        let now = SystemTime::now();
        let root = AttestationRoot::generate(now, &mut OsRng).unwrap();
        verify_signed_by(&root.cert_der, &root.cert_der);
        let (f9, f9_cert) = root.issue_device_attestation(now, &mut OsRng).unwrap();
        verify_signed_by(&f9_cert, &root.cert_der);
        let key = PrivateKey::generate(crate::keys::alg::P256, &mut OsRng).unwrap();
        let subject = AttestedKey {
            slot: 0x9a,
            key: &key,
            pin_policy: 2,
            touch_policy: 1,
            serial: 12345678,
            firmware: "5.7.1".parse().unwrap(),
        };
        let leaf = attest(&f9, &f9_cert, &subject, &mut OsRng).unwrap();
        verify_signed_by(&leaf, &f9_cert);
        let cert = Certificate::from_der(&leaf).unwrap();
        let exts = cert.tbs_certificate.extensions.unwrap();
        let get = |oid| {
            exts.iter()
                .find(|e| e.extn_id == oid)
                .unwrap()
                .extn_value
                .as_bytes()
                .to_vec()
        };
        assert_eq!(get(OID_FIRMWARE), vec![5, 7, 1]);
        assert_eq!(get(OID_POLICY), vec![2, 1]);
        assert_eq!(get(OID_FORM_FACTOR), vec![1]);
        let serial = der::asn1::Uint::from_der(&get(OID_SERIAL)).unwrap();
        let n = serial
            .as_bytes()
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b));
        assert_eq!(n, 12345678);
        assert_eq!(
            cert.tbs_certificate.subject.to_string(),
            "CN=YubiKey PIV Attestation 9a"
        );
        assert_eq!(
            cert.tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap(),
            key.spki_der().unwrap()
        );
    }

    #[test]
    fn the_root_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("vyk-root-{}", std::process::id()));
        let path = dir.join("root.pem");
        let root = AttestationRoot::load_or_create(&path, SystemTime::now(), &mut OsRng).unwrap();
        let again = AttestationRoot::load_or_create(&path, SystemTime::now(), &mut OsRng).unwrap();
        assert_eq!(root.cert_der, again.cert_der);
        assert_eq!(root.key.to_bytes(), again.key.to_bytes());
        assert!(again
            .cert_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let obj = cert_object(&root.cert_der);
        assert_eq!(obj[0], 0x70);
        assert_eq!(cert_from_object(&obj), Some(root.cert_der.clone()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
