//! Tests that go through the real pcscd + vpcd with software YubiKeys.
//! There is one pcscd and two virtual readers per machine, so this binary's
//! tests run one at a time (the `card` test group in `.config/nextest.toml`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent;
mod backup_restore;
mod fault_matrix;
mod ha_failover;
mod oath_wipe;
mod player;
mod settle;
mod virtual_yubikey;
