//! The escrow's version history against the real `kleidia serve`,
//! PostgreSQL and OpenBao (DESIGN §8): however many secret changes are
//! abandoned, the confirmed version stays in OpenBao's version window, and a
//! device whose confirmed version is unreadable can still be wiped. The
//! agent is played by this test with a software RSA key.

use kleidia_protocol::ticket::{agent_key_fingerprint, EncryptedSecret};
use kleidia_tests::app::{AppOptions, KleidiaApp};
use kleidia_tests::bao::{bootstrapped_bao, run_bootstrap, BaoClient};
use kleidia_tests::client::{cli_create_user, Api, Browser, ADMIN_PASSWORD};
use kleidia_tests::{authorize_with_card, Cards, TestBao, TestDb};
use rand::rngs::OsRng;
use rand::Rng;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

/// Abandoned changes in the history test: far more than any version window.
const ABANDONED: usize = 50;

struct Stack {
    bao: TestBao,
    root_bao: BaoClient,
    db: TestDb,
    app: KleidiaApp,
}

impl Stack {
    async fn start() -> Stack {
        let (bao, root_bao) = bootstrapped_bao().await.unwrap();
        let app_token = root_bao
            .token_with_policies(&["kleidia-app"])
            .await
            .unwrap();
        let db = TestDb::new().await.unwrap();
        let app = KleidiaApp::spawn(AppOptions {
            database_url: db.url.clone(),
            bao_addr: bao.addr.clone(),
            bao_token: app_token,
            env: vec![],
        })
        .await
        .unwrap();
        cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();
        Stack {
            bao,
            root_bao,
            db,
            app,
        }
    }

    /// A signed-in person with an agent key registered on their session.
    async fn person(&self, username: &str, role: &str) -> Agent {
        let mut admin = Api::new(&self.app.base_url);
        admin.login("admin", ADMIN_PASSWORD).await.unwrap();
        let password = format!("{username}-long-password-1");
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": username, "role": role, "display_name": username,
                        "email": format!("{username}@corp.example"), "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let mut api = Api::new(&self.app.base_url);
        api.login(username, &password).await.unwrap();
        let key = RsaPrivateKey::new(&mut OsRng, 3072).unwrap();
        let pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let sid = api.session_id.clone().unwrap();
        let (s, v) = api
            .post_json(
                &format!("/api/session/{sid}/register-agent"),
                &json!({"public_key": pem}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let cards = Cards::new(&self.db.url);
        Agent { api, key, cards }
    }

    async fn confirmed_version(&self, serial: u32) -> u64 {
        let pool = self.db.pool().await.unwrap();
        let v: Option<i64> =
            sqlx::query_scalar("SELECT secrets_version FROM devices WHERE serial = $1")
                .bind(i64::from(serial))
                .fetch_one(&pool)
                .await
                .unwrap();
        u64::try_from(v.expect("the device has an escrowed version")).unwrap()
    }

    /// OpenBao's metadata of the device's escrow (root token).
    async fn metadata(&self, serial: u32) -> Value {
        self.root_bao
            .get(&format!("yubikeys/metadata/{serial}/secrets"))
            .await
            .unwrap()["data"]
            .clone()
    }

    /// One escrow version as OpenBao holds it; `None` if unreadable.
    async fn escrow(&self, serial: u32, version: u64) -> Option<Value> {
        let (s, v) = self
            .root_bao
            .call(
                "GET",
                &format!("yubikeys/data/{serial}/secrets?version={version}"),
                None,
            )
            .await
            .unwrap();
        (s == StatusCode::OK).then(|| v["data"]["data"].clone())
    }

    async fn audit_details(&self, serial: u32, action: &str) -> Vec<Value> {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar(
            "SELECT details FROM audit_log WHERE target_id = $1 AND action = $2 ORDER BY id",
        )
        .bind(serial.to_string())
        .bind(action)
        .fetch_all(&pool)
        .await
        .unwrap()
    }
}

struct Agent {
    api: Api,
    key: RsaPrivateKey,
    /// The card the test plays through the presence step.
    cards: Cards,
}

impl Agent {
    fn decrypt(&self, v: &Value) -> String {
        let ct = EncryptedSecret(v.as_str().unwrap().to_string());
        String::from_utf8(ct.decrypt(&self.key).unwrap().to_vec()).unwrap()
    }

    async fn register(&self, serial: u32) {
        let (s, v) = self
            .api
            .post_json(
                "/api/devices",
                &json!({"serial": serial, "firmware": "5.7.1"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn authorize(&self, serial: u32, body: Value) -> (StatusCode, Value) {
        let fp = agent_key_fingerprint(&self.key.to_public_key()).unwrap();
        authorize_with_card(&self.api, &self.cards, &fp, serial, &body).await
    }

    /// Authorise an operation (201 expected); its id and agent parameters.
    async fn authorized(&self, serial: u32, operation: &str) -> (String, Value) {
        let (s, op) = self
            .authorize(serial, json!({"operation": operation}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{operation}: {op}");
        (
            op["operation_id"].as_str().unwrap().to_string(),
            op["request"]["params"].clone(),
        )
    }

    async fn report(&self, serial: u32, op: &str, body: Value) {
        let (s, v) = self
            .api
            .post_json(
                &format!("/api/yubikey/{serial}/operations/{op}/result"),
                &body,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// A confirmed PUK change; the new PUK.
    async fn change_puk(&self, serial: u32) -> String {
        let (id, params) = self.authorized(serial, "set_puk").await;
        self.report(serial, &id, json!({"success": true})).await;
        self.decrypt(&params["new_puk"])
    }
}

fn random_serial() -> u32 {
    OsRng.gen_range(10_000_000..99_999_999)
}

#[tokio::test]
async fn fifty_abandoned_puk_changes_keep_the_confirmed_puk_and_the_next_change_sends_it() {
    let f = Stack::start().await;
    // Kleidia, not OpenBao's default of 10, decides how many versions are kept.
    let config = f.root_bao.get("yubikeys/config").await.unwrap();
    assert_eq!(config["data"]["max_versions"], 20, "{config}");

    let carol = f.person("carol", "user").await;
    let serial = random_serial();
    carol.register(serial).await;
    let puk = carol.change_puk(serial).await;
    assert_eq!(f.confirmed_version(serial).await, 1);

    // Fifty PUK changes are authorised and then abandoned: the agent reports
    // that the card refused them, so none was applied.
    for i in 0..ABANDONED {
        let (id, params) = carol.authorized(serial, "set_puk").await;
        assert_eq!(
            carol.decrypt(&params["current_puk"]),
            puk,
            "attempt {i} sends the confirmed PUK"
        );
        let body = json!({"success": false, "error": "wrong_puk", "message": "not applied"});
        carol.report(serial, &id, body).await;
    }

    // The confirmed PUK is still readable in OpenBao, and at most one
    // abandoned attempt sits above it.
    let confirmed = f.confirmed_version(serial).await;
    let meta = f.metadata(serial).await;
    let latest = meta["current_version"].as_u64().unwrap();
    assert!(latest - confirmed <= 1, "confirmed {confirmed}, {meta}");
    assert_eq!(f.escrow(serial, confirmed).await.unwrap()["puk"], puk);
    assert!(meta["versions"].as_object().unwrap().len() <= 20, "{meta}");
    // Each re-escrow is audited with versions only.
    let recopies = f.audit_details(serial, "escrow.recopy").await;
    assert_eq!(recopies.len(), ABANDONED - 1, "{recopies:?}");
    assert!(
        recopies.iter().all(|d| !d.to_string().contains(&puk)),
        "{recopies:?}"
    );

    // The next PUK change sends the confirmed PUK as the current one and,
    // once confirmed, becomes the confirmed version.
    let (id, params) = carol.authorized(serial, "set_puk").await;
    assert_eq!(carol.decrypt(&params["current_puk"]), puk);
    let new_puk = carol.decrypt(&params["new_puk"]);
    carol.report(serial, &id, json!({"success": true})).await;
    let confirmed = f.confirmed_version(serial).await;
    assert_eq!(f.escrow(serial, confirmed).await.unwrap()["puk"], new_puk);
    let (s, d) = carol.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], Value::Null, "{d}");
}

#[tokio::test]
async fn a_destroyed_confirmed_version_shows_as_damaged_and_the_key_can_still_be_wiped() {
    let f = Stack::start().await;
    let dave = f.person("dave", "user").await;
    let ada = f.person("ada", "admin").await;
    let serial = random_serial();
    dave.register(serial).await;
    dave.change_puk(serial).await;
    let confirmed = f.confirmed_version(serial).await;

    // Someone with OpenBao's root token destroys the confirmed version.
    f.root_bao
        .post(
            &format!("yubikeys/destroy/{serial}/secrets"),
            &json!({"versions": [confirmed]}),
        )
        .await
        .unwrap();
    assert!(f.escrow(serial, confirmed).await.is_none());

    // The page says so instead of "escrowed".
    let (s, d) = ada.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], confirmed, "{d}");
    let b = Browser::new(&f.app.base_url);
    b.login("admin", ADMIN_PASSWORD).await;
    let (s, _, html) = b.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK);
    let damaged = format!("Credentials</th><td>escrow damaged (version {confirmed} unreadable)");
    assert!(html.contains(&damaged), "{html}");

    // Changing a secret needs the lost value: refused with a clear message, not a 500.
    let (s, v) = dave
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("unreadable"), "{v}");

    // A wipe needs no secret: it is authorised, and reporting it succeeds.
    let (id, params) = ada.authorized(serial, "reset").await;
    assert_eq!(params, json!({"serial": serial}));
    ada.report(serial, &id, json!({"success": true})).await;
    let (s, d) = ada.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], Value::Null, "{d}");
    assert_eq!(d["device"]["secrets_version"], Value::Null, "{d}");
}

#[tokio::test]
async fn bootstrap_fixes_the_version_window_of_an_existing_escrow_mount() {
    let f = Stack::start().await;
    // An installation from before: the mount keeps OpenBao's default.
    f.root_bao
        .post("yubikeys/config", &json!({"max_versions": 0}))
        .await
        .unwrap();
    let (ok, out, err) = run_bootstrap(&f.bao.addr, &f.bao.token, "http://127.0.0.1:8080").unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("updated   yubikeys/ keeps 20 versions per secret"),
        "{out}"
    );
    let config = f.root_bao.get("yubikeys/config").await.unwrap();
    assert_eq!(config["data"]["max_versions"], 20, "{config}");
    let (ok, out, err) = run_bootstrap(&f.bao.addr, &f.bao.token, "http://127.0.0.1:8080").unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nothing changed"), "{out}");
}
