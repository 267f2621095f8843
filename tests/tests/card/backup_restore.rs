//! Backup and restore (docs/openbao.md, "Backup and restore") against a
//! real OpenBao with raft storage, PostgreSQL, the real agent and a software
//! YubiKey: a key enrolled through the agent (PIN changed and escrowed, a key
//! generated on the card and its certificate signed), `scripts/backup.sh`,
//! both stores destroyed, `scripts/restore.sh` into a new database and a new
//! OpenBao, Kleidia started again. The escrowed PIN still opens the card,
//! the certificate still verifies against the CA Kleidia serves, the audit
//! log verifies against its anchor, and secret operations work again.

use std::path::Path;

use kleidia_protocol::agent::GeneratedCsr;
use kleidia_tests::agent::{ok_json, AgentOptions, TestAgent};
use kleidia_tests::app::{cli_create_user, KleidiaApp};
use kleidia_tests::card::{lock, pin_verifies, VirtualYubiKey};
use kleidia_tests::client::Api;
use kleidia_tests::raft::{app_db_url, run_script, RaftBao};
use kleidia_tests::{bin_path, openssl, stack_var, TestDb, ADMIN_PASSWORD};
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};

const SERIAL: u32 = 31_500_001;

fn manifest(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("manifest")).unwrap()
}

/// The installation around the raft OpenBao.
struct Site {
    bao: RaftBao,
    db: TestDb,
    app_token: String,
    roots: String,
}

impl Site {
    fn app_db_url(&self) -> String {
        app_db_url(&self.db)
    }

    async fn serve(&self) -> KleidiaApp {
        let env = vec![("KLEIDIA_ATTESTATION_ROOTS_FILE".into(), self.roots.clone())];
        self.bao
            .serve(&self.db, &self.app_token, env)
            .await
            .unwrap()
    }

    /// `kleidia audit …` as an auditor runs it (runtime role, app token).
    fn audit(&self, cmd: &str) -> (bool, String) {
        self.bao.audit(&self.db, &self.app_token, cmd)
    }

    /// The device's confirmed escrow version in PostgreSQL.
    async fn confirmed_version(&self) -> u64 {
        let pool = self.db.pool().await.unwrap();
        let v: Option<i64> =
            sqlx::query_scalar("SELECT secrets_version FROM devices WHERE serial = $1")
                .bind(i64::from(SERIAL))
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        u64::try_from(v.expect("an escrowed version")).unwrap()
    }

    /// Version `version` of the device's escrow, read with the root token
    /// of the original cluster (the test is OpenBao's admin).
    async fn escrow(&self, version: u64) -> Value {
        self.bao
            .root()
            .get(&format!("yubikeys/data/{SERIAL}/secrets?version={version}"))
            .await
            .unwrap()["data"]["data"]
            .clone()
    }

    async fn drop_and_recreate_database(&self) {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&stack_var("DATABASE_URL"))
            .await
            .unwrap();
        let name = &self.db.name;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.ok();
    }
}

/// Alice, signed in, with `agent`'s key registered on her session.
async fn alice(app: &KleidiaApp, agent: &TestAgent, first: bool) -> Api {
    let password = "alice-long-password-1";
    let chosen = "alice-chose-this-one-1";
    if first {
        let mut admin = Api::new(&app.base_url);
        admin.login("admin", ADMIN_PASSWORD).await.unwrap();
        let (s, v) = admin
            .create_user(
                &json!({"username": "alice", "role": "user", "display_name": "Alice",
                                 "email": "alice@corp.example", "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // The admin chose that password: Alice changes it before anything else.
        let mut api = Api::new(&app.base_url);
        api.login("alice", password).await.unwrap();
        let (s, v) = api.change_password(password, chosen).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    }
    let mut api = Api::new(&app.base_url);
    api.login("alice", chosen).await.unwrap();
    let pem = agent.public_key.to_public_key_pem(LineEnding::LF).unwrap();
    let sid = api.session_id.clone().unwrap();
    let (s, v) = api.register_agent(&sid, &pem).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    api
}

/// Authorise `body` on Kleidia and run it on the card through the real
/// agent, as the enrollment page does; the operation id and the agent's answer.
async fn run_on_card(api: &Api, agent: &TestAgent, body: Value) -> (String, reqwest::Response) {
    let (s, mut op) = api.authorize(SERIAL, &body).await;
    if s == StatusCode::ACCEPTED && op["presence_required"] == true {
        // The card proves its presence through the agent, as agent.js does.
        let path = op["agent_path"].as_str().unwrap();
        let r = agent.post(path, &op["request"]).await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let proof: Value = r.json().await.unwrap();
        let mut answer = json!({"challenge_id": op["challenge_id"], "proof": proof});
        if let Some(pin) = body.get("new_pin") {
            answer["new_pin"] = pin.clone();
        }
        let id = op["operation_id"].as_str().unwrap().to_string();
        let (s2, v) = api
            .post_json(
                &format!("/api/yubikey/{SERIAL}/operations/{id}/presence"),
                &answer,
            )
            .await;
        assert_eq!(s2, StatusCode::CREATED, "{body}: presence: {v}");
        op = v;
    } else {
        assert_eq!(s, StatusCode::CREATED, "{body}: {op}");
    }
    let path = op["agent_path"].as_str().unwrap();
    let r = agent.post(path, &op["request"]).await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    (op["operation_id"].as_str().unwrap().to_string(), r)
}

/// A PIN change through the agent, confirmed to Kleidia.
async fn change_pin(api: &Api, agent: &TestAgent) {
    let (id, _) = run_on_card(api, agent, json!({"operation": "set_pin"})).await;
    let (s, v) = api.report(SERIAL, &id, &json!({"success": true})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_backup_restored_into_new_stores_keeps_the_escrowed_pin_the_certificate_and_the_audit_log(
) {
    let _l = lock().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let key = VirtualYubiKey::plug(work, SERIAL, "5.7.1", 0).unwrap();
    let roots = work.join("attestation-roots.pem");
    std::fs::write(&roots, key.attestation_root_pem().unwrap()).unwrap();

    let bao = RaftBao::bootstrapped("http://127.0.0.1:8080")
        .await
        .unwrap();
    let root = bao.root();
    let app_token = root.token_with_policies(&["kleidia-app"]).await.unwrap();
    let backup_token = bao.backup_token().await.unwrap();
    let site = Site {
        bao,
        db: TestDb::new().await.unwrap(),
        app_token,
        roots: roots.display().to_string(),
    };
    let mut app = site.serve().await;
    cli_create_user(&site.db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();

    // Enrollment through the real agent: a new PIN (escrowed, then applied
    // on the card), then a key generated on the card and its certificate.
    let agent = TestAgent::spawn_with(AgentOptions {
        kleidia_url: app.base_url.clone(),
        ticket_key: None,
        allow_virtual_readers: true,
    })
    .await
    .unwrap();
    let api = alice(&app, &agent, true).await;
    let (s, v) = api.register_device(SERIAL, "5.7.1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    change_pin(&api, &agent).await;
    let version = site.confirmed_version().await;
    let pin = site.escrow(version).await["pin"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        pin_verifies(SERIAL, &pin),
        "the escrowed PIN opens the card"
    );
    assert!(!pin_verifies(SERIAL, "123456"), "the factory PIN is gone");

    let csr = json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
                     "pin_policy": "once", "touch_policy": "never"});
    let (id, r) = run_on_card(&api, &agent, csr).await;
    let g: GeneratedCsr = ok_json(r).await;
    let (s, cert) = api
        .sign_csr(
            SERIAL,
            &json!({"operation_id": id, "csr_pem": g.csr_pem,
                    "attestation_chain_pem": g.attestation_chain_pem}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    std::fs::write(
        work.join("cert.pem"),
        cert["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, out) = site.audit("anchor");
    assert!(ok, "{out}");

    // The backup, with the least-privileged token the docs give.
    let backup = work.join("backup");
    let backup_s = backup.display().to_string();
    let (out, text) = run_script(
        "backup.sh",
        &[&backup_s],
        &[
            ("DATABASE_URL", &site.db.url),
            ("BAO_ADDR", &site.bao.addr),
            ("BAO_TOKEN", &backup_token),
        ],
    );
    assert!(out.status.success(), "backup.sh: {text}");
    let m = manifest(&backup);
    assert!(m.contains("audit_consistent=true"), "{m}");
    assert!(m.contains("order=postgres-then-openbao"), "{m}");

    // Both stores are lost: the database is dropped, OpenBao's raft data deleted.
    app.proc.stop();
    drop(agent);
    site.drop_and_recreate_database().await;
    let mut site = site;
    site.bao.wipe().unwrap();

    // A new OpenBao on the same address, initialised with throwaway keys.
    site.bao.start().await.unwrap();
    let fresh = site.bao.init().await.unwrap();
    site.bao.unseal(&fresh.unseal_key).await.unwrap();
    assert_eq!(
        root.call("GET", "auth/token/lookup-self", None)
            .await
            .unwrap()
            .0,
        StatusCode::FORBIDDEN,
        "the new cluster does not know the old root token"
    );

    // Restore: the snapshot seals OpenBao (it brings the original keyring
    // back), so the ORIGINAL unseal key opens it again.
    let unseal_file = work.join("original-unseal-key");
    std::fs::write(&unseal_file, &site.bao.keys.unseal_key).unwrap();
    let kleidia = bin_path("kleidia").display().to_string();
    let app_db = site.app_db_url();
    let (out, text) = run_script(
        "restore.sh",
        &[&backup_s],
        &[
            ("DATABASE_URL", &site.db.url),
            ("BAO_ADDR", &site.bao.addr),
            ("BAO_TOKEN", &fresh.root_token),
            ("BAO_UNSEAL_KEY_FILE", &unseal_file.display().to_string()),
            ("VERIFY_WITH", &kleidia),
            ("KLEIDIA_DATABASE_URL", &app_db),
            ("KLEIDIA_OPENBAO_ADDR", &site.bao.addr),
            ("KLEIDIA_OPENBAO_TOKEN", &site.app_token),
        ],
    );
    assert!(
        out.status.success(),
        "restore.sh: {text}\nOpenBao log:\n{}",
        site.bao.log()
    );
    assert!(text.contains("audit verify passed"), "{text}");
    assert_eq!(
        root.with_token(&fresh.root_token)
            .call("GET", "auth/token/lookup-self", None)
            .await
            .unwrap()
            .0,
        StatusCode::FORBIDDEN,
        "the throwaway cluster's root token went with its storage"
    );

    // Kleidia again, on the restored stores.
    let app = site.serve().await;
    assert_eq!(site.confirmed_version().await, version);
    let restored_pin = site.escrow(version).await["pin"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(restored_pin, pin);
    assert!(
        pin_verifies(SERIAL, &restored_pin),
        "the restored escrow opens the card"
    );

    std::fs::write(work.join("chain.pem"), fetch(&app, "/pki/ca_chain").await).unwrap();
    std::fs::write(work.join("root.der"), fetch(&app, "/pki/root/ca").await).unwrap();
    openssl(
        work,
        &[
            "x509", "-inform", "DER", "-in", "root.der", "-out", "root.pem",
        ],
    )
    .unwrap();
    let v = openssl(
        work,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "cert.pem",
        ],
    )
    .unwrap();
    assert!(v.contains("cert.pem: OK"), "{v}");

    let (ok, out) = site.audit("verify");
    assert!(ok, "{out}");
    assert!(out.contains("HMAC verified by OpenBao"), "{out}");

    // Secret operations work again: a new agent (new key) on the restarted
    // Kleidia changes the PIN from the restored one.
    let agent = TestAgent::spawn_with(AgentOptions {
        kleidia_url: app.base_url.clone(),
        ticket_key: None,
        allow_virtual_readers: true,
    })
    .await
    .unwrap();
    let api = alice(&app, &agent, false).await;
    change_pin(&api, &agent).await;
    let next = site.confirmed_version().await;
    assert!(next > version);
    let new_pin = site.escrow(next).await["pin"].as_str().unwrap().to_string();
    assert!(pin_verifies(SERIAL, &new_pin), "{}", app.log());
    let (ok, out) = site.audit("verify");
    assert!(ok, "{out}");
}

async fn fetch(app: &KleidiaApp, path: &str) -> Vec<u8> {
    let r = reqwest::get(app.url(path)).await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}
