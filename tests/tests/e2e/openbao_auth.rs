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
