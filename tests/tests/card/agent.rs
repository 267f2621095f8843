//! The workstation agent against a software YubiKey through pcscd: every
//! endpoint's success path, its errors, and the attacks a hostile web page
//! could try (in `agent_attacks.rs`).

#[path = "agent_attacks.rs"]
mod attacks;
#[path = "agent_ops.rs"]
mod ops;

use kleidia_protocol::agent::AgentErrorBody;
use kleidia_tests::agent::TestAgent;
use kleidia_tests::card::{VirtualYubiKey, DEFAULT_MGM_KEY};
use yubikey::{Serial, YubiKey};

/// nextest runs each test in its own process and the `pcsc` group keeps them
/// apart; this lock does the same for this module under plain `cargo test`.
static CARD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    CARD_LOCK.lock().await
}

pub fn default_mgm_hex() -> String {
    hex::encode(DEFAULT_MGM_KEY)
}

/// A factory-fresh software YubiKey (firmware 5.7.1, reader 0) and an agent.
pub struct Env {
    pub agent: TestAgent,
    pub key: VirtualYubiKey,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new(serial: u32) -> Env {
        Self::with_firmware(serial, "5.7.1").await
    }

    pub async fn with_firmware(serial: u32, firmware: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = VirtualYubiKey::plug(dir.path(), serial, firmware, 0).unwrap();
        let agent = TestAgent::spawn().await.unwrap();
        Env { agent, key, dir }
    }

    pub fn serial(&self) -> u32 {
        self.key.serial
    }
}

/// PIN retries left, read with the `yubikey` crate (an empty VERIFY).
pub fn pin_retries(serial: u32) -> u8 {
    let mut yk = YubiKey::open_by_serial(Serial(serial)).unwrap();
    yk.get_pin_retries().unwrap()
}

/// Status and JSON error body of a failed response.
pub async fn error_of(resp: reqwest::Response) -> (u16, AgentErrorBody) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not an agent error body ({e}): {status} {text}"));
    (status, body)
}

/// Assert a response is the given error and return its body.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> AgentErrorBody {
    let (s, body) = error_of(resp).await;
    assert_eq!((s, body.error.as_str()), (status, code), "{}", body.message);
    body
}

/// The JSON body of a successful response.
pub async fn ok_json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
