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
mod lifecycle;
mod maintenance;
mod resume;

use std::time::Duration;

use kleidia_tests::browser::{Chrome, Stack};
use yubikey::{Serial, YubiKey};

/// `(data-step, class)` of every step of a progress list, in order.
pub async fn steps(chrome: &Chrome, list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for li in chrome
        .client
        .find_all(fantoccini::Locator::Css(&format!("{list} > li")))
        .await
        .unwrap()
    {
        out.push((
            li.attr("data-step").await.unwrap().unwrap_or_default(),
            li.attr("class").await.unwrap().unwrap_or_default(),
        ));
    }
    out
}

/// Wait for the enrollment to end; returns the result box's class and text.
pub async fn enrollment_outcome(chrome: &Chrome) -> (String, String) {
    let el = chrome
        .wait_for("#enroll-result.ok, #enroll-result.error")
        .await
        .unwrap();
    (
        el.attr("class").await.unwrap().unwrap_or_default(),
        el.text().await.unwrap(),
    )
}

/// Fill the enrollment form and click "Enroll".
pub async fn start_enrollment(chrome: &Chrome, serial: u32, pin: &str) {
    // The page fills in the serial of the key the agent sees; wait for it
    // so it does not land in the middle of what the test types.
    chrome
        .wait_for(&format!(
            "#enroll-form [name=serial][value=\"{serial}\"], #enroll-detected li"
        ))
        .await
        .unwrap();
    let form = "#enroll-form";
    chrome
        .fill(form, "serial", &serial.to_string())
        .await
        .unwrap();
    chrome.fill(form, "pin", pin).await.unwrap();
    chrome.fill(form, "pin_confirm", pin).await.unwrap();
    chrome
        .click("#enroll-form button[type=submit]")
        .await
        .unwrap();
}

/// Whether `pin` verifies on the card now (the agent holds no session
/// between operations, so the test may open the key).
pub fn pin_verifies(serial: u32, pin: &str) -> bool {
    let mut yk = open(serial);
    yk.verify_pin(pin.as_bytes()).is_ok()
}

pub fn open(serial: u32) -> YubiKey {
    // The agent may still be closing its PC/SC session of the last operation.
    let mut last = None;
    for _ in 0..50 {
        match YubiKey::open_by_serial(Serial(serial)) {
            Ok(yk) => return yk,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("open YubiKey {serial}: {last:?}");
}

/// Panic with every process's log when `cond` is false.
#[track_caller]
pub fn check(stack: &Stack, cond: bool, what: &str) {
    if !cond {
        panic!("{what}\n{}", stack.logs());
    }
}
