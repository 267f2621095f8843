//! The app logs in to OpenBao with AppRole (the role and the role_id and
//! secret_id files made by `kleidia bootstrap --approle-out`), with tokens
//! that live 3 s and are renewed up to 8 s, and keeps serving secret
//! operations across several token expiries, an OpenBao restart and a
//! seal. OpenBao here is production-like (`bao server -config`, raft
//! storage, initialised and unsealed), so a restart keeps its data: a dev
//! server would come back empty.

use std::time::{Duration, Instant};

use kleidia_tests::pki::random_serial;
use kleidia_tests::{Person, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One PIN change, start to end: authorize (escrows the new PIN in
/// OpenBao), then report success. Returns the new PIN.
async fn change_pin(p: &Person, serial: u32) -> Result<String, (StatusCode, Value)> {
    let (s, op) = p.authorize(serial, json!({"operation": "set_pin"})).await;
    if s != StatusCode::CREATED {
        return Err((s, op));
    }
    let pin = p.decrypt(&op["request"]["params"]["new_pin"]);
    let id = op["operation_id"].as_str().unwrap_or_default().to_string();
    let (s, v) = p.report(serial, &id, true).await;
    if s != StatusCode::OK {
        return Err((s, v));
    }
    Ok(pin)
}

fn logins(log: &str) -> usize {
    log.matches("logged in to OpenBao").count()
}

async fn readyz(f: &TestApp) -> (StatusCode, Value) {
    f.api().get("/readyz").await
}

/// Poll `/readyz` until `check` holds, failing after a deadline.
async fn wait_readyz(f: &TestApp, what: &str, check: impl Fn(StatusCode, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = readyz(f).await;
        if check(s, &v) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never {what}: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn approle_logins_carry_secret_operations_across_expiries_a_restart_and_a_seal() {
    let mut f = TestApp::builder()
        .persistent_openbao()
        .approle(3, 8)
        .start()
        .await;
    let ann = f.person("ann", "user", "Ann").await;
    let serial = random_serial();
    ann.register_ok(serial).await;
    let secret_id = std::fs::read_to_string(f.dir().join("approle/kleidia-app/secret_id")).unwrap();
    assert!(f.log().contains("method=\"approle\"") || f.log().contains("approle"));

    // Several token lifetimes: every operation succeeds while the app renews
    // its token and, once renewal stops at max TTL, logs in again.
    let mut pins = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while logins(&f.log()) < 4 {
        let pin = change_pin(&ann, serial)
            .await
            .unwrap_or_else(|e| panic!("a PIN change failed across token expiries: {e:?}"));
        pins.push(pin);
        assert!(
            Instant::now() < deadline,
            "the app logged in only {} times",
            logins(&f.log())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(f.escrow_version(serial).await, pins.len() as u64);
    assert_eq!(f.current_escrow(serial).await["pin"], pins[pins.len() - 1]);

    // Sealed: /readyz is degraded (200, says why), pages that need only
    // PostgreSQL work, and a secret operation is refused with 503 naming the seal.
    f.openbao().seal().await.unwrap();
    wait_readyz(&f, "degraded by the seal", |s, v| {
        s == StatusCode::OK && v["status"] == "degraded" && v["checks"]["openbao"] == "sealed"
    })
    .await;
    let (_, v) = readyz(&f).await;
    assert_eq!(v["checks"]["postgres"], "ok", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("sealed"), "{v}");
    assert_eq!(ann.api.me().await.0, StatusCode::OK);
    let admin = f.admin_browser().await;
    assert_eq!(admin.get("/devices").await.status(), StatusCode::OK);
    // The device itself: its state and operations from PostgreSQL, and a
    // sentence instead of the escrow history.
    let (s, v) = ann.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["serial"], serial, "{v}");
    assert!(
        v["operations"].as_array().is_some_and(|o| !o.is_empty()),
        "{v}"
    );
    assert_eq!(v["secret_versions"], json!([]), "{v}");
    assert!(
        v["escrow_unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("sealed")),
        "{v}"
    );
    let (s, _, page) = admin.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"escrow-unavailable\""), "{page}");
    let before = pins.len();
    let (s, v) = ann.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("sealed"), "{v}");
    assert!(v.get("request").is_none(), "no ticket while sealed: {v}");

    // Unsealed (longer than a token's max TTL later is not needed: the seal
    // itself revokes nothing) and restarted: the app carries on by itself.
    f.openbao().unseal().await.unwrap();
    wait_readyz(&f, "ready after the unseal", |s, v| {
        s == StatusCode::OK && v["status"] == "ready"
    })
    .await;
    let (s, v) = ann.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["escrow_unavailable"], serde_json::Value::Null, "{v}");
    let history = v["secret_versions"].as_array().cloned().unwrap_or_default();
    assert!(
        history
            .iter()
            .any(|h| h["current"] == true && h["version"] == pins.len()),
        "the history is back, with the version on the key: {history:?}"
    );
    pins.push(change_pin(&ann, serial).await.unwrap());

    f.openbao().restart().await.unwrap();
    wait_readyz(&f, "degraded after the restart", |_, v| {
        v["checks"]["openbao"] == "sealed"
    })
    .await;
    f.openbao().unseal().await.unwrap();
    wait_readyz(&f, "ready after the restart", |s, v| {
        s == StatusCode::OK && v["status"] == "ready"
    })
    .await;
    let logins_before = logins(&f.log());
    let deadline = Instant::now() + Duration::from_secs(60);
    while logins(&f.log()) < logins_before + 2 {
        pins.push(
            change_pin(&ann, serial)
                .await
                .unwrap_or_else(|e| panic!("a PIN change failed after the restart: {e:?}")),
        );
        assert!(Instant::now() < deadline, "no new logins after the restart");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // What was refused changed nothing; everything else is in OpenBao.
    assert!(pins.len() > before);
    assert_eq!(f.escrow_version(serial).await, pins.len() as u64);
    assert_eq!(f.current_escrow(serial).await["pin"], pins[pins.len() - 1]);
    // The secret_id and the tokens never reach the log.
    let log = f.log();
    assert!(!log.contains(secret_id.trim()), "the secret_id was logged");
    assert!(!log.contains("hvs."), "a token was logged");
}

/// `log` without terminal colour codes (the services colour their fields).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn renewals(log: &str) -> usize {
    log.matches("renewed the OpenBao token").count()
}

/// `openbao.token_file` on a production-like OpenBao (raft, initialised),
/// where tokens carry fields a dev server's do not and the root token lacks
/// some: a periodic token of 5 s is looked up, renewed again and again, and
/// carries PIN changes across many periods; when it is revoked and a new one
/// is dropped into the file, the app reads the file again and carries on.
#[tokio::test]
async fn a_periodic_token_in_a_token_file_is_renewed_and_a_replaced_file_is_read_again() {
    let f = TestApp::builder()
        .persistent_openbao()
        .periodic_token_file(5)
        .start()
        .await;
    let file = f.dir().join("openbao-token");
    let first = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let ann = f.person("ann", "user", "Ann").await;
    let serial = random_serial();
    ann.register_ok(serial).await;
    // The token was looked up at start: renewable, with a TTL.
    let log = plain(&f.log());
    assert!(
        log.contains("logged in to OpenBao method=\"token\" ttl_secs=")
            && log.contains("renewable=true"),
        "{log}"
    );
    assert!(!log.contains("cannot look up"), "{log}");

    // Several periods: each PIN change succeeds while the app renews.
    let mut pins = Vec::new();
    let started = Instant::now();
    while renewals(&f.log()) < 4 {
        pins.push(
            change_pin(&ann, serial)
                .await
                .unwrap_or_else(|e| panic!("a PIN change failed while renewing: {e:?}")),
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} renewals",
            renewals(&f.log())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(logins(&f.log()), 1, "renewed, never replaced");
    // The token is still alive in OpenBao, well past its first period.
    let (s, v) = f
        .root_bao()
        .call("POST", "auth/token/lookup", Some(&json!({"token": first})))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");

    // A new token in the file and the old one revoked: the next call (or
    // the next renewal, whichever comes first) is refused, and the app reads
    // the file again; the call is retried once.
    let second = f
        .root_bao()
        .periodic_token(&["kleidia-app"], 5)
        .await
        .unwrap();
    std::fs::write(&file, format!("{second}\n")).unwrap();
    f.root_bao()
        .post("auth/token/revoke", &json!({"token": first}))
        .await
        .unwrap();
    pins.push(
        change_pin(&ann, serial)
            .await
            .unwrap_or_else(|e| panic!("the PIN change after the token was replaced: {e:?}")),
    );
    let log = f.log();
    assert!(
        log.contains("OpenBao no longer accepts the token")
            || log.contains("OpenBao refused to renew the token"),
        "{log}"
    );
    assert_eq!(logins(&f.log()), 2);
    // And the new token is renewed in turn.
    let renewed = renewals(&f.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while renewals(&f.log()) < renewed + 2 {
        pins.push(change_pin(&ann, serial).await.unwrap());
        assert!(Instant::now() < deadline, "the new token is not renewed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(f.escrow_version(serial).await, pins.len() as u64);
    assert_eq!(f.current_escrow(serial).await["pin"], pins[pins.len() - 1]);
    let log = f.log();
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a token was logged"
    );

    // The root token of an initialised server, in a file, is looked up too
    // (it has no `issue_time`; it does not expire, so nothing is renewed).
    let root_file = f.dir().join("root-token");
    std::fs::write(&root_file, &f.root_bao().token).unwrap();
    let other = f
        .spawn_another(&[(
            "KLEIDIA_OPENBAO_TOKEN_FILE",
            &root_file.display().to_string(),
        )])
        .await;
    let log = other.log();
    assert!(log.contains("token without expiry"), "{log}");
    assert!(!log.contains("cannot look up"), "{log}");
}
