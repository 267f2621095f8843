//! The YubiKey lifecycle in a real browser: Debian's headless Chromium
//! (through chromedriver) on Kleidia's pages, with every process real:
//! OpenBao, PostgreSQL, the license service, `kleidia serve`, the agent,
//! pcscd and a software YubiKey. What the pages claim is then checked from
//! outside the browser: on the card (`ykman`, the `yubikey` crate), in
//! OpenBao, and with `openssl` against Kleidia's CA and CRL.
//!
//! These tests plug a key into the first vpcd reader, so they run one at a
//! time with the card tests (the `pcsc` group in `.config/nextest.toml`).
//! Screenshots of the main pages land in `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_status;
mod approval;
mod firmware;
mod fleet_pages;
mod lifecycle;
mod maintenance;
mod newcomer;
mod oidc;
mod resume;
