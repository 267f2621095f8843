//! Keys and certificates in the PIV slots: generating a key with a CSR and
//! its attestation, importing the signed certificate, attesting again.

use std::str::FromStr;

use kleidia_protocol::agent::{KeyAlgorithm, PinPolicy, PivSlot, TouchPolicy};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use yubikey::certificate::yubikey_signer::{KeyType, Rsa2048, Rsa3072, Rsa4096, Signer, YubiRsa};
use yubikey::certificate::CertInfo;
use yubikey::piv::{self, SlotId};
use yubikey::YubiKey;

use super::open::{open, release};
use super::secrets::{authenticate, check_pin_format};
use super::wire::{key_alg_from_wire, pin_policy_from_wire, slot_id, touch_policy_from_wire};
use super::{has_metadata, other_err, pin_err, CardError, ReaderPolicy};

/// Attestation certificate of the key in `slot`, then the device's f9 certificate.
pub(super) fn attestation_chain(yk: &mut YubiKey, slot: SlotId) -> Result<Vec<String>, CardError> {
    let att = piv::attest(yk, slot).map_err(other_err)?;
    let att = x509_cert::Certificate::from_der(&att)
        .map_err(|_| CardError::Card("the attestation is not a certificate".into()))?;
    let f9 = yubikey::certificate::Certificate::read(yk, SlotId::Attestation).map_err(|_| {
        CardError::NotSupported("the YubiKey has no attestation certificate in slot f9")
    })?;
    [att, f9.cert]
        .iter()
        .map(|c| {
            c.to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| CardError::Card(e.to_string()))
        })
        .collect()
}

fn slot_public_key(
    yk: &mut YubiKey,
    slot: PivSlot,
) -> Result<Option<x509_cert::spki::SubjectPublicKeyInfoOwned>, CardError> {
    match piv::metadata(yk, slot_id(slot)) {
        Ok(m) => Ok(m.public),
        Err(yubikey::Error::NotFound) => Err(CardError::EmptySlot(slot)),
        Err(e) => Err(other_err(e)),
    }
}

pub fn attest(serial: u32, policy: ReaderPolicy, slot: PivSlot) -> Result<Vec<String>, CardError> {
    let (_, mut yk) = open(serial, policy)?;
    if has_metadata(&yk) {
        slot_public_key(&mut yk, slot)?;
    }
    let chain = attestation_chain(&mut yk, slot_id(slot))?;
    release(yk);
    Ok(chain)
}

pub struct CsrRequest<'a> {
    pub slot: PivSlot,
    pub algorithm: KeyAlgorithm,
    pub pin_policy: PinPolicy,
    pub touch_policy: TouchPolicy,
    pub subject: &'a str,
    pub management_key: &'a [u8],
    pub pin: Option<&'a [u8]>,
}

pub struct CsrResult {
    pub csr_pem: String,
    pub public_key_pem: String,
    pub attestation_chain_pem: Vec<String>,
}

fn build_csr<KT: KeyType>(
    yk: &mut YubiKey,
    slot: SlotId,
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    subject: x509_cert::name::Name,
) -> Result<String, CardError>
where
    KT::VerifyingKey: x509_cert::spki::EncodePublicKey,
{
    use x509_cert::builder::Builder as _;
    let signer = Signer::<KT>::new(yk, slot, spki.owned_to_ref())
        .map_err(|e| CardError::Card(format!("the new public key does not parse: {e}")))?;
    let builder = x509_cert::request::RequestBuilder::new(subject)
        .map_err(|e| CardError::Invalid(format!("subject: {e}")))?;
    let csr = builder
        .build::<_, KT::Signature>(&signer)
        .map_err(|e| CardError::Card(format!("signing the CSR on the YubiKey failed: {e}")))?;
    csr.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| CardError::Card(e.to_string()))
}

pub fn generate_csr(
    serial: u32,
    policy: ReaderPolicy,
    req: CsrRequest<'_>,
) -> Result<CsrResult, CardError> {
    let subject = x509_cert::name::Name::from_str(req.subject)
        .map_err(|_| CardError::Invalid("subject is not an RFC 4514 name".into()))?;
    if req.pin.is_none()
        && req.pin_policy != PinPolicy::Never
        && !(req.pin_policy == PinPolicy::Default && req.slot == PivSlot::CardAuthentication)
    {
        return Err(CardError::Invalid(
            "the PIN is needed to sign the CSR with this PIN policy".into(),
        ));
    }
    if let Some(pin) = req.pin {
        check_pin_format(pin)?;
    }
    let (_, mut yk) = open(serial, policy)?;
    authenticate(&mut yk, req.management_key)?;
    // A wrong PIN must fail before the slot's current key is replaced.
    if let Some(pin) = req.pin {
        yk.verify_pin(pin).map_err(pin_err)?;
    }
    let slot = slot_id(req.slot);
    let spki = piv::generate(
        &mut yk,
        slot,
        key_alg_from_wire(req.algorithm),
        pin_policy_from_wire(req.pin_policy),
        touch_policy_from_wire(req.touch_policy),
    )
    .map_err(|e| match e {
        yubikey::Error::AlgorithmError => CardError::NotSupported("this key algorithm or policy"),
        e => other_err(e),
    })?;
    if let Some(pin) = req.pin {
        yk.verify_pin(pin).map_err(pin_err)?;
    }
    let csr_pem = match req.algorithm {
        KeyAlgorithm::EccP256 => build_csr::<p256::NistP256>(&mut yk, slot, &spki, subject)?,
        KeyAlgorithm::EccP384 => build_csr::<p384::NistP384>(&mut yk, slot, &spki, subject)?,
        KeyAlgorithm::Rsa2048 => build_csr::<YubiRsa<Rsa2048>>(&mut yk, slot, &spki, subject)?,
        KeyAlgorithm::Rsa3072 => build_csr::<YubiRsa<Rsa3072>>(&mut yk, slot, &spki, subject)?,
        KeyAlgorithm::Rsa4096 => build_csr::<YubiRsa<Rsa4096>>(&mut yk, slot, &spki, subject)?,
    };
    let public_key_pem = spki
        .to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| CardError::Card(e.to_string()))?;
    let attestation_chain_pem = attestation_chain(&mut yk, slot)?;
    Ok(CsrResult {
        csr_pem,
        public_key_pem,
        attestation_chain_pem,
    })
}

pub fn import_certificate(
    serial: u32,
    policy: ReaderPolicy,
    slot: PivSlot,
    certificate_pem: &str,
    management_key: &[u8],
) -> Result<(), CardError> {
    let cert = x509_cert::Certificate::from_pem(certificate_pem.trim())
        .map_err(|_| CardError::Invalid("certificate_pem is not a PEM X.509 certificate".into()))?;
    let (_, mut yk) = open(serial, policy)?;
    if has_metadata(&yk) {
        let Some(public) = slot_public_key(&mut yk, slot)? else {
            return Err(CardError::EmptySlot(slot));
        };
        let same = public.to_der().ok()
            == cert
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .ok();
        if !same {
            return Err(CardError::CertificateMismatch);
        }
    }
    authenticate(&mut yk, management_key)?;
    yubikey::certificate::Certificate { cert }
        .write(&mut yk, slot_id(slot), CertInfo::Uncompressed)
        .map_err(other_err)
}
