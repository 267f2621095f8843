//! End-to-end tests against real PostgreSQL and OpenBao with the Kleidia
//! processes started from the workspace binaries. One module per feature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attestation_attacks;
mod audit_anchor;
mod audit_log;
mod escrow_history;
mod fleet;
mod identity;
mod license;
mod licensing;
mod revocation;
mod sessions;
mod wiring;
