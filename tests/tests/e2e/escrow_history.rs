//! The escrow's version history against the real `kleidia serve`,
//! PostgreSQL and OpenBao (DESIGN §8): however many secret changes are
//! abandoned, the confirmed version stays in OpenBao's version window, and a
//! device whose confirmed version is unreadable can still be wiped. The
//! agent is played by this test with a software RSA key.

use kleidia_tests::pki::random_serial;
use kleidia_tests::{Person, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Abandoned changes in the history test: far more than any version window.
const ABANDONED: usize = 50;

async fn start() -> TestApp {
    TestApp::builder().own_openbao().start().await
}

/// The confirmed escrow version of the device.
async fn confirmed_version(f: &TestApp, serial: u32) -> u64 {
    let (_, v, _) = f.device_row(serial).await;
    u64::try_from(v.expect("the device has an escrowed version")).unwrap()
}

/// OpenBao's metadata of the device's escrow (root token).
async fn metadata(f: &TestApp, serial: u32) -> Value {
    f.root_bao()
        .get(&format!("yubikeys/metadata/{serial}/secrets"))
        .await
        .unwrap()["data"]
        .clone()
}

/// One escrow version as OpenBao holds it; `None` if unreadable.
async fn escrow(f: &TestApp, serial: u32, version: u64) -> Option<Value> {
    let (s, v) = f
        .root_bao()
        .call(
            "GET",
            &format!("yubikeys/data/{serial}/secrets?version={version}"),
            None,
        )
        .await
        .unwrap();
    (s == StatusCode::OK).then(|| v["data"]["data"].clone())
}

/// Authorise an operation (201 expected); its id and agent parameters.
async fn authorized(p: &Person, serial: u32, operation: &str) -> (String, Value) {
    let (s, op) = p.authorize(serial, json!({"operation": operation})).await;
    assert_eq!(s, StatusCode::CREATED, "{operation}: {op}");
    (
        op["operation_id"].as_str().unwrap().to_string(),
        op["request"]["params"].clone(),
    )
}

/// The agent's report on the operation (200 expected).
async fn report(p: &Person, serial: u32, op: &str, body: Value) {
    let (s, v) = p.api.report(serial, op, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A confirmed PUK change; the new PUK.
async fn change_puk(p: &Person, serial: u32) -> String {
    let (id, params) = authorized(p, serial, "set_puk").await;
    report(p, serial, &id, json!({"success": true})).await;
    p.decrypt(&params["new_puk"])
}

#[tokio::test]
async fn fifty_abandoned_puk_changes_keep_the_confirmed_puk_and_the_next_change_sends_it() {
    let f = start().await;
    // Kleidia, not OpenBao's default of 10, decides how many versions are kept.
    let config = f.root_bao().get("yubikeys/config").await.unwrap();
    assert_eq!(config["data"]["max_versions"], 20, "{config}");

    let carol = f.person("carol", "user", "carol").await;
    let serial = random_serial();
    carol.register_ok(serial).await;
    let puk = change_puk(&carol, serial).await;
    assert_eq!(confirmed_version(&f, serial).await, 1);

    // Fifty PUK changes are authorised and then abandoned: the agent reports
    // that the card refused them, so none was applied.
    for i in 0..ABANDONED {
        let (id, params) = authorized(&carol, serial, "set_puk").await;
        assert_eq!(
            carol.decrypt(&params["current_puk"]),
            puk,
            "attempt {i} sends the confirmed PUK"
        );
        let body = json!({"success": false, "error": "wrong_puk", "message": "not applied"});
        report(&carol, serial, &id, body).await;
    }

    // The confirmed PUK is still readable in OpenBao, and at most one
    // abandoned attempt sits above it.
    let confirmed = confirmed_version(&f, serial).await;
    let meta = metadata(&f, serial).await;
    let latest = meta["current_version"].as_u64().unwrap();
    assert!(latest - confirmed <= 1, "confirmed {confirmed}, {meta}");
    assert_eq!(escrow(&f, serial, confirmed).await.unwrap()["puk"], puk);
    assert!(meta["versions"].as_object().unwrap().len() <= 20, "{meta}");
    // Each re-escrow is audited with versions only.
    let recopies = f.audit_details("escrow.recopy").await;
    assert_eq!(recopies.len(), ABANDONED - 1, "{recopies:?}");
    assert!(
        recopies.iter().all(|d| !d.to_string().contains(&puk)),
        "{recopies:?}"
    );

    // The next PUK change sends the confirmed PUK as the current one and,
    // once confirmed, becomes the confirmed version.
    let (id, params) = authorized(&carol, serial, "set_puk").await;
    assert_eq!(carol.decrypt(&params["current_puk"]), puk);
    let new_puk = carol.decrypt(&params["new_puk"]);
    report(&carol, serial, &id, json!({"success": true})).await;
    let confirmed = confirmed_version(&f, serial).await;
    assert_eq!(escrow(&f, serial, confirmed).await.unwrap()["puk"], new_puk);
    let (s, d) = carol.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], Value::Null, "{d}");
}

#[tokio::test]
async fn a_destroyed_confirmed_version_shows_as_damaged_and_the_key_can_still_be_wiped() {
    let f = start().await;
    let dave = f.person("dave", "user", "dave").await;
    let ada = f.person("ada", "admin", "ada").await;
    let serial = random_serial();
    dave.register_ok(serial).await;
    change_puk(&dave, serial).await;
    let confirmed = confirmed_version(&f, serial).await;

    // Someone with OpenBao's root token destroys the confirmed version.
    f.root_bao()
        .post(
            &format!("yubikeys/destroy/{serial}/secrets"),
            &json!({"versions": [confirmed]}),
        )
        .await
        .unwrap();
    assert!(escrow(&f, serial, confirmed).await.is_none());

    // The page says so instead of "escrowed".
    let (s, d) = ada.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], confirmed, "{d}");
    let b = f.admin_browser().await;
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
    let (id, params) = authorized(&ada, serial, "reset").await;
    assert_eq!(params, json!({"serial": serial}));
    report(&ada, serial, &id, json!({"success": true})).await;
    let (s, d) = ada.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["escrow_damaged"], Value::Null, "{d}");
    assert_eq!(d["device"]["secrets_version"], Value::Null, "{d}");
}

#[tokio::test]
async fn bootstrap_fixes_the_version_window_of_an_existing_escrow_mount() {
    let f = start().await;
    // An installation from before: the mount keeps OpenBao's default.
    f.root_bao()
        .post("yubikeys/config", &json!({"max_versions": 0}))
        .await
        .unwrap();
    let (ok, out, err) = f.bootstrap();
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("updated   yubikeys/ keeps 20 versions per secret"),
        "{out}"
    );
    let config = f.root_bao().get("yubikeys/config").await.unwrap();
    assert_eq!(config["data"]["max_versions"], 20, "{config}");
    let (ok, out, err) = f.bootstrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nothing changed"), "{out}");
}
