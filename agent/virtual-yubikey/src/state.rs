//! What a YubiKey remembers across power cycles, kept in a JSON file so that
//! restarting the emulator is re-plugging the same key.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_PIN: &[u8] = b"123456";
pub const DEFAULT_PUK: &[u8] = b"12345678";
/// The factory management key of every YubiKey (3DES before 5.7, AES-192 from 5.7).
pub const DEFAULT_MGM_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
pub const DEFAULT_TRIES: u8 = 3;

/// Management key algorithm identifiers (PIV `87` P1 and metadata).
pub mod mgm_alg {
    pub const TDES: u8 = 0x03;
    pub const AES128: u8 = 0x08;
    pub const AES192: u8 = 0x0A;
    pub const AES256: u8 = 0x0C;

    /// Key length in bytes for a management key algorithm.
    pub fn key_len(alg: u8) -> Option<usize> {
        match alg {
            TDES | AES192 => Some(24),
            AES128 => Some(16),
            AES256 => Some(32),
            _ => None,
        }
    }
}

/// Firmware version; selects the personality (5.7+: AES-192 factory key,
/// RSA 3072/4096, key move/delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Firmware(pub u8, pub u8, pub u8);

impl Firmware {
    pub fn bytes(self) -> [u8; 3] {
        [self.0, self.1, self.2]
    }
    pub fn is_5_7(self) -> bool {
        self >= Firmware(5, 7, 0)
    }
    pub fn default_mgm_alg(self) -> u8 {
        if self.is_5_7() {
            mgm_alg::AES192
        } else {
            mgm_alg::TDES
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl FromStr for Firmware {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<u8> = s
            .split('.')
            .map(|p| p.parse::<u8>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("firmware version {s:?} is not MAJOR.MINOR.PATCH"))?;
        let [a, b, c] = parts[..] else {
            bail!("firmware version {s:?} is not MAJOR.MINOR.PATCH")
        };
        let fw = Firmware(a, b, c);
        // The personalities the emulator knows: a YubiKey 5 with PIV metadata
        // (5.3+) and AES management keys (5.4+).
        if a != 5 || b < 4 {
            bail!(
                "firmware {fw} is not supported: use 5.4.x (3DES factory key) or 5.7.x (AES-192)"
            );
        }
        Ok(fw)
    }
}

impl TryFrom<String> for Firmware {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Firmware> for String {
    fn from(f: Firmware) -> String {
        f.to_string()
    }
}

mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

mod hexmap {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(k, v)| (format!("{k:06x}"), hex::encode(v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                let k = u32::from_str_radix(&k, 16).map_err(serde::de::Error::custom)?;
                let v = hex::decode(v).map_err(serde::de::Error::custom)?;
                Ok((k, v))
            })
            .collect()
    }
}

/// A PIN or PUK with its retry counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    #[serde(with = "hexbytes")]
    pub value: Vec<u8>,
    pub max_tries: u8,
    pub tries_left: u8,
}

impl Credential {
    pub fn new(value: &[u8], tries: u8) -> Self {
        Self {
            value: value.to_vec(),
            max_tries: tries,
            tries_left: tries,
        }
    }
    /// The value padded with `FF` to 8 bytes, as it travels in APDUs.
    pub fn padded(&self) -> [u8; 8] {
        let mut out = [0xFF; 8];
        let n = self.value.len().min(8);
        out[..n].copy_from_slice(&self.value[..n]);
        out
    }
    pub fn blocked(&self) -> bool {
        self.tries_left == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManagementKey {
    pub algorithm: u8,
    #[serde(with = "hexbytes")]
    pub key: Vec<u8>,
    pub touch_required: bool,
}

/// A private key held in a PIV slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotKey {
    /// PIV algorithm id (`07` RSA 2048, `11` P-256, …).
    pub algorithm: u8,
    /// PKCS#8 DER of the private key.
    #[serde(with = "hexbytes")]
    pub pkcs8: Vec<u8>,
    pub pin_policy: u8,
    pub touch_policy: u8,
    /// 1 generated on the card, 2 imported.
    pub origin: u8,
}

pub const ORIGIN_GENERATED: u8 = 1;
pub const ORIGIN_IMPORTED: u8 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CardState {
    pub serial: u32,
    pub firmware: Firmware,
    pub pin: Credential,
    pub puk: Credential,
    pub management_key: ManagementKey,
    /// Slot (hex) to key. Includes `f9`, the attestation key put there "at the factory".
    #[serde(with = "slotmap")]
    pub slots: BTreeMap<u8, SlotKey>,
    /// Data objects by their 3-byte tag (content inside the `53` wrapper).
    #[serde(with = "hexmap")]
    pub objects: BTreeMap<u32, Vec<u8>>,
    /// The OATH application; `null` for a key without one. State files
    /// from before the emulator had OATH get an empty one.
    #[serde(default = "OathState::fresh")]
    pub oath: Option<OathState>,
}

/// What the OATH application keeps: the salt that names it (ykman's device
/// id, new after every OATH reset) and the accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OathState {
    #[serde(with = "hexbytes")]
    pub salt: Vec<u8>,
    pub credentials: Vec<OathCredential>,
}

impl OathState {
    pub fn new(salt: [u8; 8]) -> Self {
        Self {
            salt: salt.to_vec(),
            credentials: Vec::new(),
        }
    }

    /// A factory-fresh OATH application with a random salt.
    pub fn fresh() -> Option<Self> {
        Some(Self::new(rand::random()))
    }
}

/// One OATH account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OathCredential {
    /// The account's id as ykman writes it (`[period/]issuer:name`).
    #[serde(with = "hexbytes")]
    pub name: Vec<u8>,
    /// `10` HOTP, `20` TOTP.
    pub kind: u8,
    /// `01` SHA-1, `02` SHA-256, `03` SHA-512.
    pub algorithm: u8,
    pub digits: u8,
    /// The HMAC key.
    #[serde(with = "hexbytes")]
    pub secret: Vec<u8>,
    pub touch: bool,
    /// HOTP's moving factor.
    pub counter: u32,
}

mod slotmap {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SlotKey;
    pub fn serialize<S: Serializer>(v: &BTreeMap<u8, SlotKey>, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(k, v)| (format!("{k:02x}"), v))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u8, SlotKey>, D::Error> {
        let m = BTreeMap::<String, SlotKey>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                let k = u8::from_str_radix(&k, 16).map_err(serde::de::Error::custom)?;
                Ok((k, v))
            })
            .collect()
    }
}

/// Object holding the certificate of the attestation key (slot f9).
pub const OBJ_ATTESTATION_CERT: u32 = 0x5F_FF01;
pub const SLOT_ATTESTATION: u8 = 0xF9;

impl CardState {
    /// A key as it leaves the factory: default PIN, PUK and management key,
    /// no keys or objects except the attestation key and its certificate
    /// (`attestation_cert` is DER; it is stored in object 5FFF01 as PIV stores certificates).
    pub fn factory(
        serial: u32,
        firmware: Firmware,
        attestation: SlotKey,
        attestation_cert: Vec<u8>,
    ) -> Self {
        let mut slots = BTreeMap::new();
        slots.insert(SLOT_ATTESTATION, attestation);
        let mut objects = BTreeMap::new();
        objects.insert(
            OBJ_ATTESTATION_CERT,
            crate::attest::cert_object(&attestation_cert),
        );
        Self {
            serial,
            firmware,
            pin: Credential::new(DEFAULT_PIN, DEFAULT_TRIES),
            puk: Credential::new(DEFAULT_PUK, DEFAULT_TRIES),
            management_key: ManagementKey {
                algorithm: firmware.default_mgm_alg(),
                key: DEFAULT_MGM_KEY.to_vec(),
                touch_required: false,
            },
            slots,
            objects,
            oath: OathState::fresh(),
        }
    }

    /// PIV RESET: everything back to factory values, except the attestation
    /// key and its certificate, which survive a reset on a real YubiKey.
    /// The OATH application is another application: a PIV reset leaves it.
    pub fn reset(&mut self) {
        self.pin = Credential::new(DEFAULT_PIN, DEFAULT_TRIES);
        self.puk = Credential::new(DEFAULT_PUK, DEFAULT_TRIES);
        self.management_key = ManagementKey {
            algorithm: self.firmware.default_mgm_alg(),
            key: DEFAULT_MGM_KEY.to_vec(),
            touch_required: false,
        };
        self.slots.retain(|slot, _| *slot == SLOT_ATTESTATION);
        self.objects.retain(|tag, _| *tag == OBJ_ATTESTATION_CERT);
    }

    pub fn pin_is_default(&self) -> bool {
        self.pin.value == DEFAULT_PIN
    }
    pub fn puk_is_default(&self) -> bool {
        self.puk.value == DEFAULT_PUK
    }
    pub fn mgm_is_default(&self) -> bool {
        self.management_key.key == DEFAULT_MGM_KEY
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse state file {}", path.display()))
    }

    /// Write atomically (temporary file + rename), readable by the owner only:
    /// the file holds PINs and private keys, even if only test ones.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_private_file(path, &json)
    }
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dummy_key() -> SlotKey {
        SlotKey {
            algorithm: 0x11,
            pkcs8: vec![1, 2, 3],
            pin_policy: 1,
            touch_policy: 1,
            origin: 2,
        }
    }

    #[test]
    fn firmware_personalities_parse_and_pick_the_factory_key_algorithm() {
        let old: Firmware = "5.4.3".parse().unwrap();
        let new: Firmware = "5.7.1".parse().unwrap();
        assert_eq!(old.default_mgm_alg(), mgm_alg::TDES);
        assert_eq!(new.default_mgm_alg(), mgm_alg::AES192);
        assert!("4.3.5".parse::<Firmware>().is_err());
        assert!("5.7".parse::<Firmware>().is_err());
        assert_eq!(new.to_string(), "5.7.1");
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("vyk-state-{}", std::process::id()));
        let path = dir.join("key.json");
        let mut s = CardState::factory(
            12345678,
            "5.7.1".parse().unwrap(),
            dummy_key(),
            vec![0x30, 0],
        );
        s.objects.insert(0x5FC105, vec![0x70, 0x01, 0xAA]);
        s.pin.tries_left = 1;
        s.save(&path).unwrap();
        assert_eq!(CardState::load(&path).unwrap(), s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reset_keeps_only_the_attestation_key_and_certificate() {
        let mut s = CardState::factory(1, "5.4.3".parse().unwrap(), dummy_key(), vec![0x30, 0]);
        s.slots.insert(0x9A, dummy_key());
        s.objects.insert(0x5FC105, vec![1]);
        s.pin = Credential {
            value: b"999999".to_vec(),
            max_tries: 5,
            tries_left: 0,
        };
        s.management_key.key = vec![9; 24];
        s.reset();
        assert!(s.pin_is_default() && s.puk_is_default() && s.mgm_is_default());
        assert_eq!(s.pin.tries_left, 3);
        assert_eq!(
            s.slots.keys().copied().collect::<Vec<_>>(),
            vec![SLOT_ATTESTATION]
        );
        assert_eq!(
            s.objects.keys().copied().collect::<Vec<_>>(),
            vec![OBJ_ATTESTATION_CERT]
        );
    }
}
