//! [`Person`]: someone signed in through the API, with the workstation
//! agent played by the test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use kleidia_protocol::agent::presence_digest;
use kleidia_protocol::ticket::{agent_key_fingerprint, EncryptedSecret};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

use crate::client::Api;

/// A person at their workstation: an API session with the agent key the
/// test plays the agent with, and the cards the test plays.
pub struct Person {
    pub api: Api,
    pub agent_key: RsaPrivateKey,
    pub user_id: String,
    pub cards: Cards,
}

/// The YubiKeys the e2e tests play in software, shared by everyone of one
/// [`crate::TestApp`]: per serial, the P-256 key a card holds in its
/// presence slot (95). A card's key is recorded on the device row directly,
/// standing in for a card whose presence key was established at an earlier
/// enrollment (the real establishment, with the card's attestation, is what
/// the card and browser tests run).
#[derive(Clone)]
pub struct Cards {
    db_url: String,
    keys: Arc<Mutex<HashMap<u32, SigningKey>>>,
}

impl Cards {
    pub fn new(db_url: &str) -> Self {
        Self {
            db_url: db_url.to_string(),
            keys: Arc::default(),
        }
    }

    /// The presence key of the card `serial` (made on first use).
    pub fn key(&self, serial: u32) -> SigningKey {
        self.keys
            .lock()
            .unwrap()
            .entry(serial)
            .or_insert_with(|| SigningKey::random(&mut rand::rngs::OsRng))
            .clone()
    }

    /// Record the card's presence key on its device row.
    pub async fn record(&self, serial: u32) {
        use sqlx::Connection;
        let spki = self
            .key(serial)
            .verifying_key()
            .to_public_key_der()
            .unwrap();
        let mut conn = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
        sqlx::query(
            "UPDATE devices SET presence_public_key = $2, presence_established_at = now() WHERE serial = $1",
        )
        .bind(i64::from(serial))
        .bind(spki.as_bytes())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
    }
}

/// The signature a card with `key` makes for a presence `challenge` (as the
/// server sent it), over `fingerprint`.
pub fn sign_presence(key: &SigningKey, challenge: &Value, fingerprint: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let params = &challenge["request"]["params"];
    let nonce = b64.decode(params["nonce"].as_str().unwrap()).unwrap();
    let op: uuid::Uuid = params["operation_id"].as_str().unwrap().parse().unwrap();
    let digest = presence_digest(&nonce, &op, fingerprint);
    let sig: Signature = key.sign_prehash(&digest).unwrap();
    b64.encode(sig.to_der().as_bytes())
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

    /// The fingerprint of this person's agent key.
    pub fn fingerprint(&self) -> String {
        agent_key_fingerprint(&self.agent_key.to_public_key()).unwrap()
    }

    /// Authorise an operation, playing the card through the presence step
    /// when the server asks for it: the final answer (the ticket, or the
    /// refusal).
    pub async fn authorize(&self, serial: u32, body: Value) -> (StatusCode, Value) {
        authorize_with_card(&self.api, &self.cards, &self.fingerprint(), serial, &body).await
    }

    /// The ticket of an unconfirmed change again (`GET …/secrets`), through
    /// the presence step.
    pub async fn resume(&self, serial: u32, operation_id: &str) -> (StatusCode, Value) {
        let (s, v) = self.api.secrets(serial, operation_id).await;
        if !is_presence_challenge(s, &v) {
            return (s, v);
        }
        prove_presence(
            &self.api,
            &self.cards,
            &self.fingerprint(),
            serial,
            &v,
            None,
        )
        .await
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

/// The server answered with a presence challenge (202).
pub fn is_presence_challenge(s: StatusCode, v: &Value) -> bool {
    s == StatusCode::ACCEPTED && v["presence_required"] == true
}

/// `POST …/operations` from an agent the test plays (`api`, whose session
/// registered the agent key with `fingerprint`), playing the card `serial`
/// of `cards` through the presence step when the server asks for it: the
/// final answer (the ticket, or the refusal).
pub async fn authorize_with_card(
    api: &Api,
    cards: &Cards,
    fingerprint: &str,
    serial: u32,
    body: &Value,
) -> (StatusCode, Value) {
    let (s, v) = api.authorize(serial, body).await;
    if !is_presence_challenge(s, &v) {
        return (s, v);
    }
    let v = if v["establish"] == true {
        // The server asks the card to make its presence key: the test's
        // card has one already, recorded as an earlier enrollment would.
        cards.record(serial).await;
        let (s, v) = api.authorize(serial, body).await;
        if !is_presence_challenge(s, &v) {
            return (s, v);
        }
        v
    } else {
        v
    };
    prove_presence(api, cards, fingerprint, serial, &v, body.get("new_pin")).await
}

/// Answer a presence challenge as the agent of `api`'s session with the card `serial`.
pub async fn prove_presence(
    api: &Api,
    cards: &Cards,
    fingerprint: &str,
    serial: u32,
    challenge: &Value,
    new_pin: Option<&Value>,
) -> (StatusCode, Value) {
    let signature = sign_presence(&cards.key(serial), challenge, fingerprint);
    let mut body = json!({
        "challenge_id": challenge["challenge_id"],
        "proof": {"signature": signature, "agent_key_fingerprint": fingerprint,
                  "ticket_id": challenge["challenge_id"]},
    });
    if let Some(p) = new_pin {
        body["new_pin"] = p.clone();
    }
    let op = challenge["operation_id"].as_str().unwrap();
    api.post_json(
        &format!("/api/yubikey/{serial}/operations/{op}/presence"),
        &body,
    )
    .await
}
