//! [`Person`]: someone signed in through the API, with the workstation
//! agent played by the test.

use kleidia_protocol::ticket::EncryptedSecret;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

use crate::client::Api;

/// A person at their workstation: an API session with the agent key the
/// test plays the agent with.
pub struct Person {
    pub api: Api,
    pub agent_key: RsaPrivateKey,
    pub user_id: String,
}

impl Person {
    pub fn session_id(&self) -> String {
        self.api.session_id.clone().expect("signed in")
    }

    pub fn agent_key_pem(&self) -> String {
        self.agent_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// A secret the server encrypted to this person's agent key.
    pub fn decrypt(&self, v: &Value) -> String {
        let ct = EncryptedSecret(v.as_str().unwrap().to_string());
        String::from_utf8(ct.decrypt(&self.agent_key).unwrap().to_vec()).unwrap()
    }

    /// Register a YubiKey 5.7.1.
    pub async fn register(&self, serial: u32) -> (StatusCode, Value) {
        self.api.register_device(serial, "5.7.1").await
    }

    /// Register a YubiKey 5.7.1, which must succeed.
    pub async fn register_ok(&self, serial: u32) {
        let (s, v) = self.register(serial).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    pub async fn authorize(&self, serial: u32, body: Value) -> (StatusCode, Value) {
        self.api.authorize(serial, &body).await
    }

    /// Report the agent's outcome: success, or a wrong PIN.
    pub async fn report(
        &self,
        serial: u32,
        operation_id: &str,
        success: bool,
    ) -> (StatusCode, Value) {
        let body = if success {
            json!({"success": true})
        } else {
            json!({"success": false, "error": "wrong_pin", "message": "wrong PIN, 2 tries left"})
        };
        self.api.report(serial, operation_id, &body).await
    }
}
