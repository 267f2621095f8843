//! Devices, escrowed secrets, tickets and certificates against the real
//! `kleidia serve`, PostgreSQL and OpenBao. The agent is played by this test
//! with a software RSA key: it decrypts what the server encrypted to it and
//! checks the ticket exactly as the real agent would.

use std::time::SystemTime;

use kleidia_protocol::ticket::{
    params_hash, EncryptedSecret, TicketKeyResponse, TicketVerifyingKey,
};
use kleidia_tests::app::{AppOptions, KleidiaApp};
use kleidia_tests::bao::{bootstrapped_bao, BaoClient};
use kleidia_tests::client::{cli_create_user, Api, ADMIN_PASSWORD};
use kleidia_tests::{TestBao, TestDb};
use kleidia_virtual_yubikey::attest::{attest, pem, AttestationRoot, AttestedKey};
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use kleidia_virtual_yubikey::state::Firmware;
use rand::rngs::OsRng;
use rand::Rng;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

/// One isolated installation: its own OpenBao (bootstrapped), database, app
/// running with a `kleidia-app` token, and a test attestation root.
struct Fleet {
    bao: TestBao,
    root_bao: BaoClient,
    db: TestDb,
    app: KleidiaApp,
    att_root: AttestationRoot,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let (bao, root_bao) = bootstrapped_bao().await.unwrap();
        let app_token = root_bao
            .token_with_policies(&["kleidia-app"])
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let att_root = AttestationRoot::generate(SystemTime::now(), &mut OsRng).unwrap();
        let roots = dir.path().join("roots.pem");
        std::fs::write(&roots, att_root.cert_pem().unwrap()).unwrap();
        let db = TestDb::new().await.unwrap();
        let app = KleidiaApp::spawn(AppOptions {
            database_url: db.url.clone(),
            bao_addr: bao.addr.clone(),
            bao_token: app_token,
            env: vec![(
                "KLEIDIA_ATTESTATION_ROOTS_FILE".into(),
                roots.display().to_string(),
            )],
        })
        .await
        .unwrap();
        cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();
        Fleet {
            bao,
            root_bao,
            db,
            app,
            att_root,
            _dir: dir,
        }
    }

    async fn admin(&self) -> Api {
        let mut a = Api::new(&self.app.base_url);
        a.login("admin", ADMIN_PASSWORD).await.unwrap();
        a
    }

    /// A signed-in person with an agent key registered on their session.
    async fn person(&self, username: &str, role: &str, display: &str) -> Agent {
        let admin = self.admin().await;
        let password = format!("{username}-long-password-1");
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": username, "role": role, "display_name": display,
                        "email": format!("{username}@corp.example"), "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let user_id = v["user"]["id"].as_str().unwrap().to_string();
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
        Agent { api, key, user_id }
    }

    async fn ticket_key(&self) -> TicketVerifyingKey {
        let r: TicketKeyResponse = reqwest::get(self.app.url("/api/agent/ticket-key"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        TicketVerifyingKey::from_response(&r).unwrap()
    }

    async fn device_row(&self, serial: u32) -> (String, Option<i64>, Option<String>) {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_as(
            "SELECT state, secrets_version, owner_id::text FROM devices WHERE serial = $1",
        )
        .bind(i64::from(serial))
        .fetch_one(&pool)
        .await
        .unwrap()
    }

    /// The escrow as OpenBao holds it (read with the root token, as an auditor of OpenBao would).
    async fn escrow(&self, serial: u32, version: u64) -> Value {
        self.root_bao
            .get(&format!("yubikeys/data/{serial}/secrets?version={version}"))
            .await
            .unwrap()["data"]["data"]
            .clone()
    }

    async fn escrow_latest(&self, serial: u32) -> u64 {
        let (s, v) = self
            .root_bao
            .call("GET", &format!("yubikeys/metadata/{serial}/secrets"), None)
            .await
            .unwrap();
        if s == 404 {
            return 0;
        }
        v["data"]["current_version"].as_u64().unwrap()
    }

    /// A chain [slot attestation, device f9] for `key`, as a YubiKey with `serial` makes it.
    fn attestation(&self, serial: u32, key: &PrivateKey, pin: u8, touch: u8) -> Vec<String> {
        attestation_under(&self.att_root, serial, key, pin, touch)
    }
}

fn attestation_under(
    root: &AttestationRoot,
    serial: u32,
    key: &PrivateKey,
    pin: u8,
    touch: u8,
) -> Vec<String> {
    let (f9_key, f9_cert) = root
        .issue_device_attestation(SystemTime::now(), &mut OsRng)
        .unwrap();
    let slot = attest(
        &f9_key,
        &f9_cert,
        &AttestedKey {
            slot: 0x9a,
            key,
            pin_policy: pin,
            touch_policy: touch,
            serial,
            firmware: Firmware(5, 7, 1),
        },
        &mut OsRng,
    )
    .unwrap();
    vec![
        pem("CERTIFICATE", &slot).unwrap(),
        pem("CERTIFICATE", &f9_cert).unwrap(),
    ]
}

struct Agent {
    api: Api,
    key: RsaPrivateKey,
    user_id: String,
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
        self.api
            .post_json(&format!("/api/yubikey/{serial}/operations"), &body)
            .await
    }

    async fn report(&self, serial: u32, op: &str, success: bool) -> (StatusCode, Value) {
        let body = if success {
            json!({"success": true})
        } else {
            json!({"success": false, "error": "wrong_pin", "message": "wrong PIN, 2 tries left"})
        };
        self.api
            .post_json(
                &format!("/api/yubikey/{serial}/operations/{op}/result"),
                &body,
            )
            .await
    }
}

fn random_serial() -> u32 {
    OsRng.gen_range(10_000_000..99_999_999)
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    kleidia_tests::openssl(dir, args).unwrap()
}

/// A CSR signed by `key` that asks for names Kleidia must ignore.
fn evil_csr(key: &PrivateKey, dir: &std::path::Path) -> String {
    std::fs::write(
        dir.join("slot.key"),
        pem("PRIVATE KEY", &key.to_pkcs8().unwrap()).unwrap(),
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-key",
            "slot.key",
            "-out",
            "slot.csr",
            "-subj",
            "/CN=evil.example/O=Evil",
            "-addext",
            "subjectAltName=DNS:evil.example,email:root@evil.example",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
        dir,
    );
    std::fs::read_to_string(dir.join("slot.csr")).unwrap()
}

#[tokio::test]
async fn a_pin_change_escrows_first_and_the_new_version_becomes_current_only_after_the_agent_confirms(
) {
    let f = Fleet::start().await;
    let alice = f.person("alice", "user", "Alice Example").await;
    let serial = random_serial();
    alice.register(serial).await;
    assert_eq!(
        f.device_row(serial).await.1,
        None,
        "a new key has factory credentials"
    );

    let (s, op) = alice
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["agent_path"], "/piv/set-pin");
    let params = &op["request"]["params"];
    // The agent decrypts the factory PIN and the new one.
    assert_eq!(alice.decrypt(&params["current_pin"]), "123456");
    let new_pin = alice.decrypt(&params["new_pin"]);
    assert!(
        (6..=8).contains(&new_pin.len()) && new_pin.bytes().all(|b| b.is_ascii_digit()),
        "{new_pin}"
    );

    // The ticket verifies with the published key and binds these parameters,
    // this serial and this agent key.
    let claims = f
        .ticket_key()
        .await
        .verify(op["request"]["ticket"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.serial, serial);
    assert_eq!(claims.params_hash, params_hash(params).unwrap());
    assert_eq!(claims.id.to_string(), op["operation_id"].as_str().unwrap());
    let fp = kleidia_protocol::ticket::agent_key_fingerprint(&alice.key.to_public_key()).unwrap();
    assert_eq!(claims.agent_key_fingerprint, fp);
    assert!(claims.expires_at - claims.issued_at <= 120);

    // The new PIN is durable in OpenBao before anything was applied, but the
    // device's confirmed version has not moved.
    assert_eq!(f.escrow_latest(serial).await, 1);
    assert_eq!(f.escrow(serial, 1).await["pin"], new_pin);
    assert_eq!(f.device_row(serial).await.1, None);

    // The page reports the agent's success: now version 1 is what the key holds.
    let id = op["operation_id"].as_str().unwrap();
    let (s, v) = alice.report(serial, id, true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(f.device_row(serial).await.1, Some(1));

    // The device page shows the version history without values.
    let (s, d) = alice.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["secret_versions"][0]["version"], 1);
    assert_eq!(d["secret_versions"][0]["current"], true);
    assert_eq!(d["secret_versions"][0]["by"], "alice");
    let text = d.to_string();
    assert!(
        !text.contains(&new_pin),
        "the PIN leaked into the device API"
    );

    // The PIN is nowhere in PostgreSQL, nor in the server's log.
    let pool = f.db.pool().await.unwrap();
    for table in [
        "devices",
        "operations",
        "audit_log",
        "user_sessions",
        "settings",
        "certificates",
    ] {
        let dump: Option<String> =
            sqlx::query_scalar(&format!("SELECT string_agg(t::text, '\n') FROM {table} t"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            !dump.unwrap_or_default().contains(&new_pin),
            "the PIN is stored in {table}"
        );
    }
    assert!(
        !f.app.log().contains(&new_pin),
        "the PIN is in the server log"
    );

    // The audit log has the authorisation, the ticket and the result.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id")
            .bind(serial.to_string())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        [
            "device.register",
            "operation.authorize",
            "ticket.issue",
            "operation.succeeded"
        ]
    );
}

#[tokio::test]
async fn an_unconfirmed_change_blocks_the_next_and_a_failure_keeps_both_versions() {
    let f = Fleet::start().await;
    let bob = f.person("bob", "user", "Bob").await;
    let serial = random_serial();
    bob.register(serial).await;
    let (_, op1) = bob.authorize(serial, json!({"operation": "set_puk"})).await;
    let id1 = op1["operation_id"].as_str().unwrap().to_string();
    assert_eq!(bob.report(serial, &id1, true).await.0, StatusCode::OK);
    let puk1 = bob.decrypt(&op1["request"]["params"]["new_puk"]);

    // A PIN change is authorised but never confirmed (page closed mid-way).
    let (s, op2) = bob
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op2}");
    let id2 = op2["operation_id"].as_str().unwrap().to_string();
    // A second secret change must wait: the server cannot know which PIN the key holds.
    let (s, v) = bob.authorize(serial, json!({"operation": "set_puk"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&id2), "{v}");

    // The device page says so and offers to settle it.
    let b = kleidia_tests::client::Browser::new(&f.app.base_url);
    b.login("admin", ADMIN_PASSWORD).await;
    let (_, _, html) = b.get_text(&format!("/devices/{serial}")).await;
    assert!(html.contains(r#"id="pending-change""#), "{html}");
    assert!(
        html.contains(&format!(r#"data-operation="{id2}""#)),
        "{html}"
    );

    // After a reload the page gets the same change again, under a new ticket.
    let (s, again) = bob
        .api
        .get(&format!("/api/yubikey/{serial}/secrets?operation_id={id2}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        bob.decrypt(&again["request"]["params"]["new_pin"]),
        "602917"
    );
    assert_ne!(again["request"]["ticket"], op2["request"]["ticket"]);

    // The agent reports a failure: the device keeps version 1, both versions stay readable.
    let (s, v) = bob.report(serial, &id2, false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["error"], "wrong_pin");
    assert_eq!(f.device_row(serial).await.1, Some(1));
    assert_eq!(f.escrow(serial, 1).await["puk"], puk1);
    assert_eq!(f.escrow(serial, 2).await["pin"], "602917");
    assert_eq!(
        f.escrow(serial, 2).await["puk"],
        puk1,
        "a PIN change carries the confirmed PUK"
    );
    // Reporting again is refused; the next change is allowed.
    assert_eq!(bob.report(serial, &id2, true).await.0, StatusCode::CONFLICT);
    let (s, _) = bob
        .authorize(serial, json!({"operation": "rotate_management_key"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // The failed attempt (2) sits above the confirmed version, so the
    // confirmed values are re-escrowed first (3, now confirmed), then the
    // new attempt is written (4).
    assert_eq!(f.device_row(serial).await.1, Some(3));
    assert_eq!(f.escrow(serial, 3).await["puk"], puk1);
    assert_eq!(f.escrow_latest(serial).await, 4);
}

#[tokio::test]
async fn an_attested_csr_is_signed_with_names_from_kleidia_and_a_revoked_certificate_is_in_the_crl()
{
    let f = Fleet::start().await;
    let carol = f.person("carol", "user", "Carol Example").await;
    let serial = random_serial();
    carol.register(serial).await;

    let (s, op) = carol
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let params = &op["request"]["params"];
    assert_eq!(params["subject"], "CN=Carol Example");
    assert_eq!(carol.decrypt(&params["pin"]), "123456");
    assert_eq!(
        carol.decrypt(&params["management_key"]),
        "010203040506070801020304050607080102030405060708"
    );
    let op_id = op["operation_id"].as_str().unwrap();

    // The "card": a P-256 key, its attestation, and a CSR that asks for evil names.
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = evil_csr(&key, dir.path());
    let chain = f.attestation(serial, &key, 2, 1);
    let (s, cert) = carol
        .api
        .post_json(
            &format!("/api/yubikey/{serial}/sign-csr"),
            &json!({"operation_id": op_id, "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    std::fs::write(
        dir.path().join("cert.pem"),
        cert["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let chain_pem = reqwest::get(f.app.url("/pki/ca_chain"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.path().join("chain.pem"), &chain_pem).unwrap();
    let root_der = reqwest::get(f.app.url("/pki/root/ca"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(dir.path().join("root.der"), &root_der).unwrap();
    openssl(
        &[
            "x509", "-inform", "DER", "-in", "root.der", "-out", "root.pem",
        ],
        dir.path(),
    );
    let v = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "cert.pem",
        ],
        dir.path(),
    );
    assert!(v.contains("cert.pem: OK"), "{v}");
    let text = openssl(&["x509", "-in", "cert.pem", "-noout", "-text"], dir.path());
    assert!(text.contains("Subject: CN = Carol Example\n"), "{text}");
    assert!(!text.contains("evil"), "{text}");
    assert!(text.contains("email:carol@corp.example"), "{text}");
    assert!(text.contains("UPN::carol@corp.example"), "{text}");
    assert!(text.contains("Microsoft Smartcard Login"), "{text}");

    // It is on the device page, and the key generation counts as succeeded.
    let (_, d) = carol.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(d["certificates"][0]["serial_number"], cert["serial_number"]);
    assert_eq!(d["certificates"][0]["slot"], "9a");
    assert_eq!(d["certificates"][0]["status"], "issued");
    assert_eq!(d["operations"][0]["state"], "succeeded");
    // The device page shows it to the staff too.
    let b = kleidia_tests::client::Browser::new(&f.app.base_url);
    b.login("admin", ADMIN_PASSWORD).await;
    let (s, _, html) = b.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(cert["serial_number"].as_str().unwrap()),
        "{html}"
    );
    assert!(html.contains("Carol Example"), "{html}");
    // One certificate per key generation.
    let (s, _) = carol
        .api
        .post_json(
            &format!("/api/yubikey/{serial}/sign-csr"),
            &json!({"operation_id": op_id, "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The owner may not revoke; an admin may, and the CRL then lists it.
    let cid = cert["certificate_id"].as_str().unwrap();
    let (s, _) = carol
        .api
        .post_json(
            &format!("/api/certificates/{cid}/revoke"),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let admin = f.admin().await;
    let (s, v) = admin
        .post_json(
            &format!("/api/certificates/{cid}/revoke"),
            &json!({"reason": "key compromise"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "revoked");
    let crl = reqwest::get(f.app.url("/pki/crl"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(dir.path().join("crl.der"), &crl).unwrap();
    let crl_text = openssl(
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
        dir.path(),
    );
    let serial_hex = cert["serial_number"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .to_uppercase();
    assert!(
        crl_text.contains(&serial_hex),
        "{serial_hex} not in\n{crl_text}"
    );
}

#[tokio::test]
async fn unattested_keys_and_attestations_for_another_device_or_root_are_refused() {
    let f = Fleet::start().await;
    let dave = f.person("dave", "user", "Dave").await;
    let serial = random_serial();
    dave.register(serial).await;
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = evil_csr(&key, dir.path());
    let other_key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let foreign_root = AttestationRoot::generate(SystemTime::now(), &mut OsRng).unwrap();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "another serial",
            f.attestation(serial + 1, &key, 2, 1),
            "not for this device",
        ),
        (
            "another key",
            f.attestation(serial, &other_key, 2, 1),
            "not the key in the CSR",
        ),
        (
            "an untrusted root",
            attestation_under(&foreign_root, serial, &key, 2, 1),
            "trusted attestation root",
        ),
        (
            "no device certificate",
            f.attestation(serial, &key, 2, 1)[..1].to_vec(),
            "device (f9)",
        ),
        (
            "another PIN policy",
            f.attestation(serial, &key, 1, 1),
            "PIN/touch policy",
        ),
    ];
    for (what, chain, expect) in cases {
        let (_, op) = dave
            .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
            .await;
        let (s, v) = dave
            .api
            .post_json(
                &format!("/api/yubikey/{serial}/sign-csr"),
                &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": chain}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(expect),
            "{what}: {v}"
        );
    }
    // A CSR for another algorithm than the one generated.
    let (_, op) = dave
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p384", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    let (s, v) = dave
        .api
        .post_json(
            &format!("/api/yubikey/{serial}/sign-csr"),
            &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": f.attestation(serial, &key, 2, 1)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Nothing was issued, and every refusal is audited.
    let pool = f.db.pool().await.unwrap();
    let certs: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(certs, 0);
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'certificate.refused'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(refused, 6);
}

#[tokio::test]
async fn helpdesk_may_operate_someone_elses_key_a_user_may_not_and_nobody_may_on_a_lost_key() {
    let f = Fleet::start().await;
    let erin = f.person("erin", "user", "Erin").await;
    let frank = f.person("frank", "user", "Frank").await;
    let help = f.person("helen", "helpdesk", "Helen Helpdesk").await;
    let auditor = f.person("otto", "auditor", "Otto Auditor").await;
    let serial = random_serial();
    erin.register(serial).await;

    let (s, _) = frank
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = frank.api.get(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = frank.api.get("/api/devices").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = auditor
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Helpdesk: the secrets are encrypted to helpdesk's own agent key.
    let (s, op) = help
        .authorize(serial, json!({"operation": "set_puk"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(
        help.decrypt(&op["request"]["params"]["current_puk"]),
        "12345678"
    );
    assert_eq!(
        help.report(serial, op["operation_id"].as_str().unwrap(), true)
            .await
            .0,
        StatusCode::OK
    );

    // By policy, owners may not unblock their own PIN; helpdesk may.
    let (s, v) = erin
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("policy"), "{v}");
    let (s, op) = help
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(
        help.report(serial, op["operation_id"].as_str().unwrap(), false)
            .await
            .0,
        StatusCode::OK
    );

    // The owner reports the key lost: no operation is authorised any more.
    let (s, v) = erin
        .api
        .post_json(
            &format!("/api/devices/{serial}/state"),
            &json!({"state": "lost", "reason": "left on a train"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for who in [&erin, &help] {
        let (s, v) = who.authorize(serial, json!({"operation": "set_pin"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    // …and a lost key does not come back to active.
    let admin = f.admin().await;
    let (s, _) = admin
        .post_json(
            &format!("/api/devices/{serial}/state"),
            &json!({"state": "active", "reason": "found"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(f.device_row(serial).await.0, "lost");
}

#[tokio::test]
async fn operations_outside_policy_are_refused_with_the_rule_they_break() {
    let f = Fleet::start().await;
    let gina = f.person("gina", "user", "Gina").await;
    let serial = random_serial();
    gina.register(serial).await;
    let (s, v) = gina
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "123456"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("policy"), "{v}");
    let (s, v) = gina
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9c", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("slot 9c"), "{v}");
    let (s, v) = gina
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "rsa4096", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Unknown fields are refused, and nothing was written for any of these.
    let (s, _) = gina
        .authorize(serial, json!({"operation": "set_pin", "pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(f.escrow_latest(serial).await, 0);
    let pool = f.db.pool().await.unwrap();
    let ops: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ops, 0);

    // An admin tightens the policy: owners may then unblock, 9c gets "once".
    let admin = f.admin().await;
    let (_, mut p) = admin.get("/api/settings/policy").await;
    p["owners_may_unblock_pin"] = json!(true);
    p["slots"]["9c"]["pin_policies"] = json!(["once", "always"]);
    let (s, v) = put_json(&admin, "/api/settings/policy", &p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = gina
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // An invalid policy is refused and changes nothing.
    p["pin_min_length"] = json!(4);
    let (s, v) = put_json(&admin, "/api/settings/policy", &p).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, now) = admin.get("/api/settings/policy").await;
    assert_eq!(now["pin_min_length"], 6);
    let (s, _) = put_json(&gina.api, "/api/settings/policy", &p).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn put_json(api: &Api, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = api
        .http
        .put(format!("{}{}", api.base, path))
        .bearer_auth(api.token.as_deref().unwrap())
        .json(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn agent_keys_are_checked_and_bound_to_the_callers_own_session() {
    let f = Fleet::start().await;
    let hank = f.person("hank", "user", "Hank").await;
    let ivy = f.person("ivy", "user", "Ivy").await;
    let small = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let small_pem = small
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let sid = hank.api.session_id.clone().unwrap();
    let (s, v) = hank
        .api
        .post_json(
            &format!("/api/session/{sid}/register-agent"),
            &json!({"public_key": small_pem}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = hank
        .api
        .post_json(
            &format!("/api/session/{sid}/register-agent"),
            &json!({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Ivy cannot put her key on Hank's session.
    let ivy_pem = ivy
        .key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let (s, _) = ivy
        .api
        .post_json(
            &format!("/api/session/{sid}/register-agent"),
            &json!({"public_key": ivy_pem}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Hank's session still has his own key: his secrets decrypt with it.
    let serial = random_serial();
    hank.register(serial).await;
    let (_, op) = hank
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(
        hank.decrypt(&op["request"]["params"]["current_pin"]),
        "123456"
    );
    // After logout the key is gone with the session.
    let (s, _) = hank.api.post_json("/api/auth/logout", &json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let pool = f.db.pool().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM user_sessions WHERE id = $1::uuid")
        .bind(&sid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn openbao_down_refuses_with_503_before_any_ticket_exists() {
    let mut f = Fleet::start().await;
    let jack = f.person("jack", "user", "Jack").await;
    let serial = random_serial();
    jack.register(serial).await;
    f.bao.proc.stop();
    let (s, v) = jack
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("OpenBao"), "{v}");
    assert!(v.get("request").is_none());
    let pool = f.db.pool().await.unwrap();
    let (state, hash): (String, Option<String>) =
        sqlx::query_as("SELECT state, params_hash FROM operations")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(hash, None, "no ticket was issued");
    assert_eq!(f.device_row(serial).await.1, None);
}

#[tokio::test]
async fn a_database_failure_after_the_escrow_write_leaves_the_operation_pending_and_the_old_secret_readable(
) {
    let f = Fleet::start().await;
    let kim = f.person("kim", "user", "Kim").await;
    let serial = random_serial();
    kim.register(serial).await;
    let (_, op) = kim.authorize(serial, json!({"operation": "set_pin"})).await;
    let first_pin = kim.decrypt(&op["request"]["params"]["new_pin"]);
    kim.report(serial, op["operation_id"].as_str().unwrap(), true)
        .await;

    // The commit that records the new version fails (as if PostgreSQL went away
    // right after OpenBao accepted the write).
    let pool = f.db.pool().await.unwrap();
    sqlx::query(
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.secrets_version_new IS NOT NULL THEN RAISE EXCEPTION 'simulated failure'; END IF; \
           RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER fail_commit BEFORE UPDATE ON operations FOR EACH ROW EXECUTE FUNCTION fail_commit()")
        .execute(&pool)
        .await
        .unwrap();
    let (s, v) = kim.authorize(serial, json!({"operation": "set_pin"})).await;
    assert!(s.is_server_error(), "{s} {v}");
    assert!(v.get("request").is_none(), "no ticket may leave: {v}");

    // The operation stays pending; the device still holds version 1, which
    // is readable; the orphan version 2 exists but nothing points to it.
    let pending: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT state, secrets_version_new FROM operations WHERE state = 'pending'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(pending, vec![("pending".to_string(), None)]);
    assert_eq!(f.device_row(serial).await.1, Some(1));
    assert_eq!(f.escrow(serial, 1).await["pin"], first_pin);
    assert_eq!(f.escrow_latest(serial).await, 2);
}

#[tokio::test]
async fn staff_list_and_filter_the_fleet_with_keyset_pages_and_users_see_only_their_own() {
    let f = Fleet::start().await;
    let lea = f.person("lea", "user", "Lea").await;
    let admin = f.admin().await;
    let pool = f.db.pool().await.unwrap();
    let lea_id = uuid::Uuid::parse_str(&lea.user_id).unwrap();
    // 120 devices straight into the database: 40 of them Lea's, 30 suspended.
    sqlx::query(
        "INSERT INTO devices (serial, firmware, owner_id, state) \
         SELECT 1000 + g, CASE WHEN g % 2 = 0 THEN '5.7.1' ELSE '5.4.3' END, \
                CASE WHEN g % 3 = 0 THEN $1 END, CASE WHEN g % 4 = 0 THEN 'suspended' ELSE 'active' END \
         FROM generate_series(1, 120) g",
    )
    .bind(lea_id)
    .execute(&pool)
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/api/devices?limit=50&after={a}"),
            None => "/api/devices?limit=50".to_string(),
        };
        let (s, v) = admin.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen.extend(
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["serial"].as_i64().unwrap()),
        );
        match v["next_after"].as_i64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1001..=1120).collect::<Vec<_>>());
    let (_, v) = admin
        .get("/api/devices?state=suspended&firmware=5.7.1&limit=200")
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 30);
    let (_, v) = admin.get("/api/devices?owner=lea&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 40);
    // Search: digits are a serial prefix, anything else a person.
    let (_, v) = admin.get("/api/devices?q=100&limit=200").await;
    let found: Vec<i64> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(found, (1001..=1009).collect::<Vec<_>>());
    let (_, v) = admin.get("/api/devices?q=LEA&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 40);
    let (_, v) = admin.get("/api/devices?q=%25&limit=200").await;
    assert_eq!(
        v["devices"].as_array().unwrap().len(),
        120,
        "a bare wildcard filters nothing out and matches nothing special"
    );
    let (s, _) = admin.get("/api/devices?state=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, mine) = lea.api.get("/api/my/devices?limit=200").await;
    let mine = mine["devices"].as_array().unwrap();
    assert_eq!(mine.len(), 40);
    assert!(mine.iter().all(|d| d["owner_username"] == "lea"));
    // The pages render the same lists.
    let b = kleidia_tests::client::Browser::new(&f.app.base_url);
    b.login("admin", ADMIN_PASSWORD).await;
    let (s, _, html) = b.get_text("/devices?state=suspended").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("/devices/1004") && !html.contains("/devices/1001\""),
        "{html}"
    );

    // The dashboard counts what the filtered lists show, and links to them.
    let (s, _, home) = b.get_text("/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        home.contains(r#"href="/devices?state=suspended"><span class="stat">30</span>"#),
        "{home}"
    );
    assert!(
        home.contains(r#"href="/devices?state=active"><span class="stat">90</span>"#),
        "{home}"
    );
    // None of these has escrowed credentials yet: all 120 are on factory values.
    assert!(
        home.contains(r#"href="/devices?factory=true"><span class="stat">120</span>"#),
        "{home}"
    );
    let (_, v) = admin.get("/api/devices?factory=true&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 120);
    assert!(home.contains("Recent events"), "{home}");
}

#[tokio::test]
async fn postgresql_refusing_connections_gives_503_and_writes_nothing_to_the_escrow() {
    let f = Fleet::start().await;
    let mia = f.person("mia", "user", "Mia").await;
    let serial = random_serial();
    mia.register(serial).await;
    let pool = f.db.pool().await.unwrap();
    let mut own = pool.acquire().await.unwrap();
    // The app's connections are cut and no new one is accepted.
    sqlx::query(&format!("ALTER DATABASE {} CONNECTION LIMIT 0", f.db.name))
        .execute(&mut *own)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&f.db.name)
        .execute(&mut *own)
        .await
        .unwrap();
    let (s, v) = mia.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("database"), "{v}");
    let r = reqwest::get(f.app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        f.escrow_latest(serial).await,
        0,
        "nothing may reach OpenBao"
    );

    sqlx::query(&format!("ALTER DATABASE {} CONNECTION LIMIT -1", f.db.name))
        .execute(&mut *own)
        .await
        .unwrap();
    let (s, v) = mia.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
