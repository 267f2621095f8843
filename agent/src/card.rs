//! Blocking YubiKey operations through PC/SC and the `yubikey` crate. Callers
//! run these in `spawn_blocking`. Secrets come in as bytes that the caller
//! zeroizes; nothing here logs them.

use std::str::FromStr;

use kleidia_protocol::agent::{
    DefaultCredentials, DiscoveredYubiKey, KeyAlgorithm, ManagementKeyAlgorithm, PinPolicy,
    PivInfo, PivSlot, SlotCertificate, SlotInfo, SlotKey, TouchPolicy,
};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use yubikey::certificate::yubikey_signer::{KeyType, Rsa2048, Rsa3072, Rsa4096, Signer, YubiRsa};
use yubikey::certificate::CertInfo;
use yubikey::piv::{self, AlgorithmId, ManagementSlotId, SlotAlgorithmId, SlotId};
use yubikey::{MgmAlgorithmId, MgmKey, YubiKey};

/// Which PC/SC readers may hold a YubiKey we use.
#[derive(Debug, Clone, Copy)]
pub struct ReaderPolicy {
    pub allow_virtual_readers: bool,
}

impl ReaderPolicy {
    /// Real YubiKeys show up as "Yubico YubiKey …" readers. vsmartcard's
    /// `Virtual PCD` readers accept a card from anything that reaches their
    /// TCP port, so they are only used when explicitly allowed.
    pub fn allows(&self, reader: &str) -> bool {
        let lower = reader.to_ascii_lowercase();
        if lower.contains("yubico") || lower.contains("yubikey") {
            return true;
        }
        self.allow_virtual_readers && reader.starts_with("Virtual PCD")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("the PC/SC service is not available ({0}); is pcscd running?")]
    PcscUnavailable(String),
    #[error("no YubiKey is connected")]
    NoYubiKey,
    #[error("no YubiKey with serial {0} is connected")]
    NotFound(u32),
    #[error("the YubiKey was removed during the operation")]
    Removed,
    #[error("wrong PIN; {0} attempts left")]
    WrongPin(u8),
    #[error("the PIN is blocked; unblock it with the PUK")]
    PinBlocked,
    #[error("wrong PUK; {0} attempts left")]
    WrongPuk(u8),
    #[error("the PUK is blocked; only a PIV reset helps now")]
    PukBlocked,
    #[error("wrong management key")]
    WrongManagementKey,
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not supported by this YubiKey: {0}")]
    NotSupported(&'static str),
    #[error("slot {0} holds no key")]
    EmptySlot(&'static str),
    #[error("the certificate's public key is not the key in that slot")]
    CertificateMismatch,
    #[error("the YubiKey refused the reset")]
    ResetRefused,
    #[error("the YubiKey reported an error: {0}")]
    Card(String),
}

/// What a credential failure means depends on what was being checked.
#[derive(Clone, Copy)]
enum Ctx {
    Pin,
    Puk,
    Mgm,
    Other,
}

fn map_err(e: yubikey::Error, ctx: Ctx) -> CardError {
    use yubikey::Error as E;
    match e {
        E::PcscError { inner: Some(p) } => map_pcsc(p),
        E::PcscError { inner: None } => CardError::Card("PC/SC error".into()),
        E::WrongPin { tries } => match ctx {
            Ctx::Puk if tries == 0 => CardError::PukBlocked,
            Ctx::Puk => CardError::WrongPuk(tries),
            _ if tries == 0 => CardError::PinBlocked,
            _ => CardError::WrongPin(tries),
        },
        E::PinLocked => match ctx {
            Ctx::Puk => CardError::PukBlocked,
            _ => CardError::PinBlocked,
        },
        E::AuthenticationError if matches!(ctx, Ctx::Mgm) => CardError::WrongManagementKey,
        E::NotSupported => CardError::NotSupported("the card refused the command as unsupported"),
        other => CardError::Card(other.to_string()),
    }
}

fn map_pcsc(p: pcsc::Error) -> CardError {
    use pcsc::Error as P;
    match p {
        P::RemovedCard
        | P::ResetCard
        | P::NoSmartcard
        | P::ReaderUnavailable
        | P::UnpoweredCard
        | P::UnresponsiveCard => CardError::Removed,
        P::NoReadersAvailable => CardError::NoYubiKey,
        P::NoService | P::ServiceStopped => CardError::PcscUnavailable(p.to_string()),
        other => CardError::Card(other.to_string()),
    }
}

fn pin_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Pin)
}
fn puk_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Puk)
}
fn mgm_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Mgm)
}
fn other_err(e: yubikey::Error) -> CardError {
    map_err(e, Ctx::Other)
}

/// Opened keys by reader name; whether a reader with a card failed with a
/// PC/SC error; whether a reader reported no card.
type Scan = (Vec<(String, YubiKey)>, bool, bool);

/// Every allowed YubiKey: (reader name, opened key), and whether some reader
/// holding a card could not be read just now (e.g. it was reset a moment ago
/// by the previous session, or another process holds a transaction).
fn open_all_once(policy: ReaderPolicy) -> Result<Scan, CardError> {
    let mut ctx = yubikey::reader::Context::open().map_err(other_err)?;
    let readers = match ctx.iter() {
        Ok(r) => r,
        Err(yubikey::Error::PcscError {
            inner: Some(pcsc::Error::NoReadersAvailable),
        }) => return Ok((Vec::new(), false, false)),
        Err(e) => return Err(other_err(e)),
    };
    let mut out = Vec::new();
    let (mut transient, mut empty) = (false, false);
    for reader in readers {
        let name = reader.name().into_owned();
        if !policy.allows(&name) {
            continue;
        }
        // Empty readers and non-PIV cards fail to open; they are simply not YubiKeys.
        match reader.open() {
            Ok(yk) => out.push((name, yk)),
            Err(e) => {
                tracing::debug!(reader = %name, error = %e, "reader not opened");
                match e {
                    yubikey::Error::PcscError {
                        inner: Some(pcsc::Error::NoSmartcard),
                    } => empty = true,
                    yubikey::Error::PcscError { .. } => transient = true,
                    _ => {}
                }
            }
        }
    }
    Ok((out, transient, empty))
}

/// Tries after a transient PC/SC failure, and the pause before each retry.
const OPEN_RETRIES: u32 = 8;
const OPEN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(150);

/// Like [`open_all_once`], retrying for a moment while `done` is not yet
/// satisfied and a reader answered with a PC/SC error. With `empty_too`, a
/// reader reporting no card counts as such an answer too: vsmartcard's vpcd
/// reports its card absent for a moment after a reset.
fn open_all_until(
    policy: ReaderPolicy,
    empty_too: bool,
    done: impl Fn(&[(String, YubiKey)]) -> bool,
) -> Result<Vec<(String, YubiKey)>, CardError> {
    let mut attempt = 0;
    loop {
        let (all, transient, empty) = open_all_once(policy)?;
        let retry = transient || (empty_too && empty);
        if done(&all) || !retry || attempt >= OPEN_RETRIES {
            return Ok(all);
        }
        all.into_iter().for_each(|(_, yk)| release(yk));
        attempt += 1;
        std::thread::sleep(OPEN_RETRY_PAUSE);
    }
}

/// Disconnect without resetting the card. Only for sessions in which nothing
/// was authenticated; a session that verified a PIN or the management key is
/// dropped instead, which resets the card so no other program inherits it.
fn release(yk: YubiKey) {
    let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
}

/// Open the YubiKey with `serial` among the allowed readers.
pub fn open(serial: u32, policy: ReaderPolicy) -> Result<(String, YubiKey), CardError> {
    let all = open_all_until(policy, true, |all| {
        all.iter().any(|(_, yk)| yk.serial().0 == serial)
    })?;
    if all.is_empty() {
        return Err(CardError::NoYubiKey);
    }
    let mut found = None;
    for (reader, yk) in all {
        if yk.serial().0 == serial && found.is_none() {
            found = Some((reader, yk));
        } else {
            release(yk);
        }
    }
    found.ok_or(CardError::NotFound(serial))
}

/// A failed exchange can look like a card refusal (the `yubikey` crate turns
/// some broken exchanges into "authentication error"), so when the key is
/// gone afterwards, say that instead of blaming the management key.
pub fn explain_failure(serial: u32, policy: ReaderPolicy, e: CardError) -> CardError {
    match e {
        CardError::WrongManagementKey | CardError::Card(_) | CardError::NotSupported(_) => {
            match open(serial, policy) {
                Ok((_, yk)) => {
                    release(yk);
                    e
                }
                Err(CardError::NoYubiKey | CardError::NotFound(_) | CardError::Removed) => {
                    CardError::Removed
                }
                Err(_) => e,
            }
        }
        e => e,
    }
}

pub fn discover(policy: ReaderPolicy) -> Result<Vec<DiscoveredYubiKey>, CardError> {
    let all = open_all_until(policy, false, |_| false)?;
    let mut out = Vec::new();
    for (reader, yk) in all {
        let serial = yk.serial().0;
        let firmware = yk.version().to_string();
        release(yk);
        out.push(DiscoveredYubiKey {
            serial,
            firmware,
            form_factor: form_factor(&reader),
            reader,
        });
    }
    out.sort_by_key(|k| k.serial);
    Ok(out)
}

/// The form factor from the management application's device info (`1D`),
/// which the `yubikey` crate parses but does not expose.
fn form_factor(reader: &str) -> Option<String> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).ok()?;
    let name = std::ffi::CString::new(reader).ok()?;
    let card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .ok()?;
    let mut buf = [0u8; 258];
    let select = [
        0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17,
    ];
    let r = card.transmit(&select, &mut buf).ok()?;
    if r.len() < 2 || r[r.len() - 2..] != [0x90, 0x00] {
        return None;
    }
    let r = card
        .transmit(&[0x00, 0x1D, 0x00, 0x00, 0x00], &mut buf)
        .ok()?;
    if r.len() < 3 || r[r.len() - 2..] != [0x90, 0x00] {
        return None;
    }
    let data = &r[1..r.len() - 2];
    let mut i = 0;
    while i + 2 <= data.len() {
        let (tag, len) = (data[i], data[i + 1] as usize);
        let value = data.get(i + 2..i + 2 + len)?;
        if tag == 0x04 && len == 1 {
            let _ = card.disconnect(pcsc::Disposition::LeaveCard);
            return Some(
                match value[0] & 0x0F {
                    1 => "usb_a_keychain",
                    2 => "usb_a_nano",
                    3 => "usb_c_keychain",
                    4 => "usb_c_nano",
                    5 => "usb_c_lightning",
                    6 => "usb_a_bio",
                    7 => "usb_c_bio",
                    _ => "unknown",
                }
                .to_string(),
            );
        }
        i += 2 + len;
    }
    None
}

fn slot_id(slot: PivSlot) -> SlotId {
    match slot {
        PivSlot::Authentication => SlotId::Authentication,
        PivSlot::Signature => SlotId::Signature,
        PivSlot::KeyManagement => SlotId::KeyManagement,
        PivSlot::CardAuthentication => SlotId::CardAuthentication,
    }
}

fn slot_name(slot: PivSlot) -> &'static str {
    match slot {
        PivSlot::Authentication => "9a",
        PivSlot::Signature => "9c",
        PivSlot::KeyManagement => "9d",
        PivSlot::CardAuthentication => "9e",
    }
}

fn has_metadata(yk: &YubiKey) -> bool {
    let v = yk.version();
    (v.major, v.minor) >= (5, 3)
}

fn mgm_alg_to_wire(a: MgmAlgorithmId) -> ManagementKeyAlgorithm {
    match a {
        MgmAlgorithmId::ThreeDes => ManagementKeyAlgorithm::TripleDes,
        MgmAlgorithmId::Aes128 => ManagementKeyAlgorithm::Aes128,
        MgmAlgorithmId::Aes192 => ManagementKeyAlgorithm::Aes192,
        MgmAlgorithmId::Aes256 => ManagementKeyAlgorithm::Aes256,
    }
}

fn mgm_alg_from_wire(a: ManagementKeyAlgorithm) -> MgmAlgorithmId {
    match a {
        ManagementKeyAlgorithm::TripleDes => MgmAlgorithmId::ThreeDes,
        ManagementKeyAlgorithm::Aes128 => MgmAlgorithmId::Aes128,
        ManagementKeyAlgorithm::Aes192 => MgmAlgorithmId::Aes192,
        ManagementKeyAlgorithm::Aes256 => MgmAlgorithmId::Aes256,
    }
}

fn algorithm_name(a: AlgorithmId) -> &'static str {
    match a {
        AlgorithmId::Rsa1024 => "rsa1024",
        AlgorithmId::Rsa2048 => "rsa2048",
        AlgorithmId::Rsa3072 => "rsa3072",
        AlgorithmId::Rsa4096 => "rsa4096",
        AlgorithmId::EccP256 => "ecc_p256",
        AlgorithmId::EccP384 => "ecc_p384",
        AlgorithmId::Ed25519 => "ed25519",
        AlgorithmId::X25519 => "x25519",
    }
}

fn pin_policy_to_wire(p: yubikey::PinPolicy) -> PinPolicy {
    match p {
        yubikey::PinPolicy::Default => PinPolicy::Default,
        yubikey::PinPolicy::Never => PinPolicy::Never,
        yubikey::PinPolicy::Once => PinPolicy::Once,
        yubikey::PinPolicy::Always => PinPolicy::Always,
    }
}

fn pin_policy_from_wire(p: PinPolicy) -> yubikey::PinPolicy {
    match p {
        PinPolicy::Default => yubikey::PinPolicy::Default,
        PinPolicy::Never => yubikey::PinPolicy::Never,
        PinPolicy::Once => yubikey::PinPolicy::Once,
        PinPolicy::Always => yubikey::PinPolicy::Always,
    }
}

fn touch_policy_to_wire(p: yubikey::TouchPolicy) -> TouchPolicy {
    match p {
        yubikey::TouchPolicy::Default => TouchPolicy::Default,
        yubikey::TouchPolicy::Never => TouchPolicy::Never,
        yubikey::TouchPolicy::Always => TouchPolicy::Always,
        yubikey::TouchPolicy::Cached => TouchPolicy::Cached,
    }
}

fn touch_policy_from_wire(p: TouchPolicy) -> yubikey::TouchPolicy {
    match p {
        TouchPolicy::Default => yubikey::TouchPolicy::Default,
        TouchPolicy::Never => yubikey::TouchPolicy::Never,
        TouchPolicy::Always => yubikey::TouchPolicy::Always,
        TouchPolicy::Cached => yubikey::TouchPolicy::Cached,
    }
}

struct Credentials {
    pin_retries: Option<u8>,
    puk_retries: Option<u8>,
    mgm_algorithm: Option<ManagementKeyAlgorithm>,
    defaults: DefaultCredentials,
}

/// PIN/PUK/management key state from metadata only: nothing here can use up a retry.
fn credentials(yk: &mut YubiKey) -> Result<Credentials, CardError> {
    if !has_metadata(yk) {
        // An empty VERIFY asks for the retry count without trying a PIN.
        let pin_retries = yk.get_pin_retries().map_err(pin_err)?;
        return Ok(Credentials {
            pin_retries: Some(pin_retries),
            puk_retries: None,
            mgm_algorithm: None,
            defaults: DefaultCredentials {
                pin: None,
                puk: None,
                management_key: None,
            },
        });
    }
    let pin = piv::metadata(yk, SlotId::Management(ManagementSlotId::Pin)).map_err(other_err)?;
    let puk = piv::metadata(yk, SlotId::Management(ManagementSlotId::Puk)).map_err(other_err)?;
    let mgm =
        piv::metadata(yk, SlotId::Management(ManagementSlotId::Management)).map_err(other_err)?;
    let mgm_algorithm = match mgm.algorithm {
        SlotAlgorithmId::Management(a) => Some(mgm_alg_to_wire(a)),
        _ => None,
    };
    Ok(Credentials {
        pin_retries: pin.retries.as_ref().map(|r| r.remaining_count),
        puk_retries: puk.retries.as_ref().map(|r| r.remaining_count),
        mgm_algorithm,
        defaults: DefaultCredentials {
            pin: pin.default,
            puk: puk.default,
            management_key: mgm.default,
        },
    })
}

pub fn check_defaults(
    serial: u32,
    policy: ReaderPolicy,
) -> Result<(bool, DefaultCredentials), CardError> {
    let (_, mut yk) = open(serial, policy)?;
    let supported = has_metadata(&yk);
    let c = credentials(&mut yk)?;
    release(yk);
    Ok((supported, c.defaults))
}

fn cert_info(cert: &x509_cert::Certificate) -> SlotCertificate {
    let tbs = cert.tbs_certificate();
    let v = tbs.validity();
    SlotCertificate {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        not_before: v.not_before.to_unix_duration().as_secs() as i64,
        not_after: v.not_after.to_unix_duration().as_secs() as i64,
        serial_number: hex::encode(tbs.serial_number().as_bytes()),
    }
}

pub fn info(serial: u32, policy: ReaderPolicy) -> Result<PivInfo, CardError> {
    let (reader, mut yk) = open(serial, policy)?;
    let md = has_metadata(&yk);
    let creds = credentials(&mut yk)?;
    let mut slots = Vec::new();
    for slot in PivSlot::ALL {
        let id = slot_id(slot);
        let key = if md {
            match piv::metadata(&mut yk, id) {
                Ok(m) => Some(SlotKey {
                    algorithm: match m.algorithm {
                        SlotAlgorithmId::Asymmetric(a) => algorithm_name(a).to_string(),
                        _ => "unknown".to_string(),
                    },
                    pin_policy: m.policy.map(|(p, _)| pin_policy_to_wire(p)),
                    touch_policy: m.policy.map(|(_, t)| touch_policy_to_wire(t)),
                    origin: m.origin.map(|o| match o {
                        piv::Origin::Generated => "generated".to_string(),
                        piv::Origin::Imported => "imported".to_string(),
                    }),
                }),
                Err(yubikey::Error::NotFound) => None,
                Err(e) => return Err(other_err(e)),
            }
        } else {
            None
        };
        let certificate = yubikey::certificate::Certificate::read(&mut yk, id)
            .ok()
            .map(|c| cert_info(&c.cert));
        slots.push(SlotInfo {
            slot,
            key,
            certificate,
        });
    }
    let firmware = yk.version().to_string();
    release(yk);
    Ok(PivInfo {
        serial,
        firmware,
        reader,
        pin_retries: creds.pin_retries,
        puk_retries: creds.puk_retries,
        management_key_algorithm: creds.mgm_algorithm,
        metadata_supported: md,
        defaults: creds.defaults,
        slots,
    })
}

/// PINs and PUKs are 6–8 bytes on a YubiKey; refuse anything else before the
/// card counts it as a wrong attempt.
fn check_pin_format(v: &[u8]) -> Result<(), CardError> {
    if !(6..=8).contains(&v.len()) || v.contains(&0xFF) {
        return Err(CardError::InvalidSecret(
            "a PIN or PUK must be 6 to 8 characters",
        ));
    }
    Ok(())
}

pub fn set_pin(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
) -> Result<(), CardError> {
    check_pin_format(current)?;
    check_pin_format(new)?;
    let (_, mut yk) = open(serial, policy)?;
    yk.change_pin(current, new).map_err(pin_err)
}

pub fn set_puk(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
) -> Result<(), CardError> {
    check_pin_format(current)?;
    check_pin_format(new)?;
    let (_, mut yk) = open(serial, policy)?;
    yk.change_puk(current, new).map_err(puk_err)
}

pub fn unblock_pin(
    serial: u32,
    policy: ReaderPolicy,
    puk: &[u8],
    new_pin: &[u8],
) -> Result<(), CardError> {
    check_pin_format(puk)?;
    check_pin_format(new_pin)?;
    let (_, mut yk) = open(serial, policy)?;
    yk.unblock_pin(puk, new_pin).map_err(puk_err)
}

/// Parse a management key given as hex for `alg`.
fn parse_mgm(hex_key: &[u8], alg: MgmAlgorithmId) -> Result<MgmKey, CardError> {
    let text = std::str::from_utf8(hex_key)
        .map_err(|_| CardError::InvalidSecret("a management key must be hex"))?;
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| CardError::InvalidSecret("a management key must be hex"))?,
    );
    MgmKey::from_bytes(bytes.as_slice(), Some(alg)).map_err(|_| {
        CardError::InvalidSecret(
            "the management key has the wrong length for its algorithm, or is weak",
        )
    })
}

/// The algorithm of the card's current management key (3DES before metadata existed).
fn current_mgm_alg(yk: &mut YubiKey) -> Result<MgmAlgorithmId, CardError> {
    if !has_metadata(yk) {
        return Ok(MgmAlgorithmId::ThreeDes);
    }
    match piv::metadata(yk, SlotId::Management(ManagementSlotId::Management))
        .map_err(other_err)?
        .algorithm
    {
        SlotAlgorithmId::Management(a) => Ok(a),
        _ => Err(CardError::Card("unexpected management key metadata".into())),
    }
}

fn authenticate(yk: &mut YubiKey, mgm_hex: &[u8]) -> Result<(), CardError> {
    let alg = current_mgm_alg(yk)?;
    let key = parse_mgm(mgm_hex, alg)?;
    yk.authenticate(&key).map_err(mgm_err)
}

pub fn rotate_management_key(
    serial: u32,
    policy: ReaderPolicy,
    current: &[u8],
    new: &[u8],
    algorithm: ManagementKeyAlgorithm,
    require_touch: bool,
) -> Result<(), CardError> {
    let new_key = parse_mgm(new, mgm_alg_from_wire(algorithm))?;
    let (_, mut yk) = open(serial, policy)?;
    authenticate(&mut yk, current)?;
    new_key
        .set_manual(&mut yk, require_touch)
        .map_err(other_err)
}

/// Attestation certificate of the key in `slot`, then the device's f9 certificate.
fn attestation_chain(yk: &mut YubiKey, slot: SlotId) -> Result<Vec<String>, CardError> {
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
        Err(yubikey::Error::NotFound) => Err(CardError::EmptySlot(slot_name(slot))),
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
    let alg = match req.algorithm {
        KeyAlgorithm::Rsa2048 => AlgorithmId::Rsa2048,
        KeyAlgorithm::Rsa3072 => AlgorithmId::Rsa3072,
        KeyAlgorithm::Rsa4096 => AlgorithmId::Rsa4096,
        KeyAlgorithm::EccP256 => AlgorithmId::EccP256,
        KeyAlgorithm::EccP384 => AlgorithmId::EccP384,
    };
    let slot = slot_id(req.slot);
    let spki = piv::generate(
        &mut yk,
        slot,
        alg,
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
            return Err(CardError::EmptySlot(slot_name(slot)));
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

/// Values used to block the PIN and PUK before a reset. Policy-generated
/// PINs and PUKs are digits, so these control bytes can never be the real one;
/// two of them in case someone set one by hand.
const BLOCKERS: [[u8; 8]; 2] = [[0x00; 8], [0x01; 8]];

pub fn reset(serial: u32, policy: ReaderPolicy) -> Result<(), CardError> {
    let (_, mut yk) = open(serial, policy)?;
    // Block the PIN: a PIV reset is only possible once both PIN and PUK are blocked.
    let mut blocked = false;
    'pin: for value in BLOCKERS {
        for _ in 0..16 {
            match yk.verify_pin(&value) {
                Ok(()) => continue 'pin,
                Err(yubikey::Error::WrongPin { tries: 0 }) | Err(yubikey::Error::PinLocked) => {
                    blocked = true;
                    break 'pin;
                }
                Err(yubikey::Error::WrongPin { .. }) => {}
                Err(e) => return Err(other_err(e)),
            }
        }
    }
    if !blocked {
        return Err(CardError::ResetRefused);
    }
    let mut blocked = false;
    'puk: for value in BLOCKERS {
        for _ in 0..16 {
            match yk.change_puk(&value, &value) {
                Ok(()) => continue 'puk,
                Err(yubikey::Error::WrongPin { tries: 0 }) | Err(yubikey::Error::PinLocked) => {
                    blocked = true;
                    break 'puk;
                }
                Err(yubikey::Error::WrongPin { .. }) => {}
                Err(e) => return Err(other_err(e)),
            }
        }
    }
    if !blocked {
        return Err(CardError::ResetRefused);
    }
    yk.reset_device().map_err(|e| match e {
        yubikey::Error::GenericError => CardError::ResetRefused,
        e => other_err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yubikey_readers_are_used_unless_virtual_readers_are_allowed() {
        let strict = ReaderPolicy {
            allow_virtual_readers: false,
        };
        let lax = ReaderPolicy {
            allow_virtual_readers: true,
        };
        assert!(strict.allows("Yubico YubiKey OTP+FIDO+CCID 00 00"));
        assert!(!strict.allows("Virtual PCD 00 00"));
        assert!(!strict.allows("Alcor Micro AU9540 00 00"));
        assert!(lax.allows("Virtual PCD 00 01"));
        assert!(!lax.allows("Alcor Micro AU9540 00 00"));
    }

    #[test]
    fn a_wrong_pin_and_a_wrong_puk_are_told_apart_and_zero_tries_means_blocked() {
        assert_eq!(
            pin_err(yubikey::Error::WrongPin { tries: 2 }),
            CardError::WrongPin(2)
        );
        assert_eq!(
            puk_err(yubikey::Error::WrongPin { tries: 2 }),
            CardError::WrongPuk(2)
        );
        assert_eq!(
            pin_err(yubikey::Error::WrongPin { tries: 0 }),
            CardError::PinBlocked
        );
        assert_eq!(puk_err(yubikey::Error::PinLocked), CardError::PukBlocked);
        assert_eq!(
            mgm_err(yubikey::Error::AuthenticationError),
            CardError::WrongManagementKey
        );
        assert_eq!(
            other_err(yubikey::Error::PcscError {
                inner: Some(pcsc::Error::RemovedCard)
            }),
            CardError::Removed
        );
    }

    #[test]
    fn a_pin_of_the_wrong_length_is_refused_before_it_reaches_the_card() {
        assert!(check_pin_format(b"12345").is_err());
        assert!(check_pin_format(b"123456789").is_err());
        assert!(check_pin_format(b"123456").is_ok());
    }
}
