//! Devices: the serial number newtype and the lifecycle state machine
//! (DESIGN §3): `registered → active ⇄ suspended`, `active|suspended → lost |
//! revoked → retired`, and `returned` for a wiped key back in the pool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A YubiKey serial number: a positive decimal integer of at most 10 digits
/// that fits in 32 bits (what GET SERIAL returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SerialRepr", into = "u32")]
pub struct Serial(u32);

/// In the API: the number (as responses carry it), or its decimal text
/// (requests may send either, as [`Serial`]'s `Deserialize` accepts both).
impl utoipa::PartialSchema for Serial {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(1))
                    .maximum(Some(u32::MAX)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]{1,10}$")),
            )
            .description(Some("A YubiKey serial number (1 to 4294967295)"))
            .into()
    }
}

impl utoipa::ToSchema for Serial {}

/// Text or a number that is not a YubiKey serial number; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSerial(String);

#[derive(Deserialize)]
#[serde(untagged)]
enum SerialRepr {
    N(u64),
    S(String),
}

impl TryFrom<SerialRepr> for Serial {
    type Error = InvalidSerial;
    fn try_from(r: SerialRepr) -> Result<Self, InvalidSerial> {
        match r {
            SerialRepr::N(n) => u32::try_from(n)
                .ok()
                .and_then(Serial::new)
                .ok_or_else(|| InvalidSerial(format!("{n} is not a YubiKey serial number"))),
            SerialRepr::S(s) => Serial::parse(&s),
        }
    }
}

/// From a `bigint` serial column (`devices.serial`, `*.device_serial`), whose
/// CHECK keeps it in 1..=u32::MAX.
impl TryFrom<i64> for Serial {
    type Error = InvalidSerial;
    fn try_from(v: i64) -> Result<Self, InvalidSerial> {
        u32::try_from(v)
            .ok()
            .and_then(Serial::new)
            .ok_or_else(|| InvalidSerial(format!("{v} is not a YubiKey serial number")))
    }
}

impl From<Serial> for u32 {
    fn from(s: Serial) -> u32 {
        s.0
    }
}

impl Serial {
    pub fn parse(s: &str) -> Result<Self, InvalidSerial> {
        let t = s.trim();
        if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSerial(format!(
                "{s:?} is not a YubiKey serial number (digits only)"
            )));
        }
        match t.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Serial(n)),
            _ => Err(InvalidSerial(format!(
                "{s:?} is not a YubiKey serial number"
            ))),
        }
    }

    pub fn new(n: u32) -> Option<Self> {
        (n > 0).then_some(Serial(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The value stored in PostgreSQL (`bigint`).
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Serial {
    type Err = InvalidSerial;
    fn from_str(s: &str) -> Result<Self, InvalidSerial> {
        Serial::parse(s)
    }
}

/// A device's place in the lifecycle; the `devices.state` text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum DeviceState {
    Registered,
    Active,
    Suspended,
    Lost,
    Revoked,
    Returned,
    Retired,
}

/// A name that is not one of the [`DeviceState`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device state {0:?}")]
pub struct UnknownDeviceState(pub String);

impl DeviceState {
    pub const ALL: [DeviceState; 7] = [
        DeviceState::Registered,
        DeviceState::Active,
        DeviceState::Suspended,
        DeviceState::Lost,
        DeviceState::Revoked,
        DeviceState::Returned,
        DeviceState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Registered => "registered",
            DeviceState::Active => "active",
            DeviceState::Suspended => "suspended",
            DeviceState::Lost => "lost",
            DeviceState::Revoked => "revoked",
            DeviceState::Returned => "returned",
            DeviceState::Retired => "retired",
        }
    }

    /// Whether an administrator may move a device from `self` to `to`.
    /// `registered → active` happens through enrollment, not by hand.
    pub fn can_transition(self, to: DeviceState) -> bool {
        use DeviceState::*;
        matches!(
            (self, to),
            (Registered, Active)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active | Suspended | Registered, Lost)
                | (Active | Suspended | Registered | Lost, Revoked)
                | (Lost | Revoked | Returned, Retired)
                // A wiped key goes back to the pool.
                | (Revoked | Lost | Active | Suspended | Registered, Returned)
                | (Returned, Registered)
        )
    }

    /// States whose certificates are revoked when entered. `Returned`
    /// too: a key back in the pool must not still sign as its last holder
    /// (issue 14 §10), whatever the offboarding policy.
    pub fn revokes_certificates(self) -> bool {
        matches!(
            self,
            DeviceState::Lost | DeviceState::Revoked | DeviceState::Retired | DeviceState::Returned
        )
    }

    /// States in which the owner may still use and maintain the key.
    pub fn is_usable(self) -> bool {
        matches!(self, DeviceState::Registered | DeviceState::Active)
    }

    /// States in which a key still holding its factory credentials matters
    /// (the dashboard's and the device filter's "factory" count).
    pub const IN_SERVICE: [DeviceState; 3] = [
        DeviceState::Registered,
        DeviceState::Active,
        DeviceState::Suspended,
    ];
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceState {
    type Err = UnknownDeviceState;
    fn from_str(s: &str) -> Result<Self, UnknownDeviceState> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownDeviceState(s.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_decimal_u32() {
        assert_eq!(Serial::parse("12345678").unwrap().get(), 12_345_678);
        assert_eq!(Serial::parse(" 42 ").unwrap().get(), 42);
        for bad in [
            "",
            "0",
            "-1",
            "1e5",
            "12a",
            "99999999999",
            "4294967296",
            "０１",
        ] {
            assert!(Serial::parse(bad).is_err(), "{bad}");
        }
        let s: Serial = serde_json::from_str("\"123\"").unwrap();
        assert_eq!(s.get(), 123);
        let s: Serial = serde_json::from_str("123").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "123");
        assert!(serde_json::from_str::<Serial>("0").is_err());
        assert_eq!(Serial::try_from(7_i64).unwrap().get(), 7);
        assert!(Serial::try_from(0_i64).is_err());
        assert!(Serial::try_from(1_i64 << 32).is_err());
    }

    #[test]
    fn the_lifecycle_allows_what_design_section_3_lists_and_nothing_else() {
        use DeviceState::*;
        assert!(Registered.can_transition(Active));
        assert!(Active.can_transition(Suspended));
        assert!(Suspended.can_transition(Active));
        assert!(Active.can_transition(Lost));
        assert!(Lost.can_transition(Retired));
        assert!(Revoked.can_transition(Retired));
        assert!(Revoked.can_transition(Returned));
        assert!(Returned.can_transition(Registered));
        assert!(!Retired.can_transition(Active));
        assert!(!Lost.can_transition(Active));
        assert!(!Revoked.can_transition(Active));
        assert!(!Retired.can_transition(Registered));
        for s in DeviceState::ALL {
            assert!(!s.can_transition(s), "{s} → {s}");
            assert_eq!(s.as_str().parse::<DeviceState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "Active".parse::<DeviceState>().unwrap_err().to_string(),
            "unknown device state \"Active\""
        );
    }
}
