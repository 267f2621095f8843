//! Domain types that validate on construction (zero2prod's `domain`): a value
//! of one of these types is known good, so code past the edge never re-checks
//! or compares strings.
//!
//! - `role`: `Role` and `SessionKind` (people and their sessions);
//! - `user`: `Username`, `DisplayName`, `EmailAddress` (what an account is called);
//! - `device`: `Serial` and `DeviceState`; `operation`: `OperationState`.
//!
//! The domain imports no other module of the app: it is the bottom layer.

mod device;
mod operation;
mod role;
mod user;

pub use device::{DeviceState, InvalidSerial, Serial, UnknownDeviceState};
pub use operation::{
    parse_operation, OperationState, ProtocolName, UnknownOperation, UnknownOperationState,
};

pub use role::{ParseRoleError, ParseSessionKindError, Role, SessionKind};
pub use user::{DisplayName, EmailAddress, InvalidAccountField, Username};

/// `sqlx::Type`, `Encode` and `Decode` for a type kept in a PostgreSQL `text`
/// column under its `as_str()` name and read back with its `FromStr`: a name
/// the type does not know is a decode error, never a silent default.
macro_rules! stored_as_text {
    ($t:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $t {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $t {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(name.parse::<$t>()?)
            }
        }
    };
}
pub(crate) use stored_as_text;
