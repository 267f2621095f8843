//! The fleet's SQL, one module per table: devices, operations, certificates,
//! and the agent key registered on a session. Functions take an executor or
//! the transaction of a multi-step write; nothing here decides who may do what.

pub mod agent_keys;
pub mod certificates;
pub mod devices;
pub mod operations;

use time::OffsetDateTime;

pub use certificates::{CertificateRow, CertificateStatus};
pub use devices::{DeviceFilter, DeviceRow};
pub use operations::OperationRow;

/// `2026-11-28 13:45 UTC`, for pages.
pub fn fmt_time(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}
