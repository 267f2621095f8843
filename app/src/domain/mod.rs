//! Domain types that validate on construction (zero2prod's `domain`): a value
//! of one of these types is known good, so code past the edge never re-checks
//! or compares strings.
//!
//! - `role`: `Role` and `SessionKind` (people and their sessions);
//! - `device`: `Serial` and `DeviceState`; `operation`: `OperationState`.

mod device;
mod operation;
mod role;

pub use device::{DeviceState, InvalidSerial, Serial, UnknownDeviceState};
pub use operation::{
    parse_operation, OperationState, ProtocolName, UnknownOperation, UnknownOperationState,
};
