//! Issue 14 §4: resuming an unconfirmed secret change opens a presence
//! challenge and, once proven, issues a new ticket and rewrites the
//! operation. It is a POST behind the CSRF check: a GET (an `<img>` on any
//! page) is 405 and changes nothing; a cross-site POST riding on the
//! person's session cookie is refused, changes nothing and is audited.

use kleidia_tests::pki::random_serial;
use kleidia_tests::{Person, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// What resuming would change: the operation's row (ticket expiry, session,
/// agent key), its presence challenges, and the audit rows about the device.
async fn footprint(f: &TestApp, serial: u32, op: &str) -> (String, i64, i64) {
    let pool = f.db.pool().await.unwrap();
    let row: String =
        sqlx::query_scalar("SELECT row_to_json(o)::text FROM operations o WHERE id = $1::uuid")
            .bind(op)
            .fetch_one(&pool)
            .await
            .unwrap();
    let challenges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM presence_challenges WHERE operation_id = $1::uuid",
    )
    .bind(op)
    .fetch_one(&pool)
    .await
    .unwrap();
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE target_id = $1")
        .bind(serial.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    (row, challenges, audited)
}

/// Bob's device with a PIN change authorised but never confirmed.
async fn unconfirmed_change(f: &TestApp) -> (Person, u32, String) {
    let bob = f.person("bob", "user", "Bob").await;
    let serial = random_serial();
    bob.register_ok(serial).await;
    let (s, op) = bob
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    (
        bob,
        serial,
        op["operation_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_get_for_a_devices_secrets_is_refused_and_changes_nothing() {
    let f = TestApp::spawn().await;
    let (bob, serial, op) = unconfirmed_change(&f).await;
    let before = footprint(&f, serial, &op).await;

    // The old call, with Bob's own credentials: the method is gone.
    let (s, v) = bob
        .api
        .get(&format!("/api/yubikey/{serial}/secrets?operation_id={op}"))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    // Bob's browser following a link or an <img> on some page.
    let b = f.browser();
    let r = b.login("bob", "bob-long-password-1-2").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .get(&format!("/api/yubikey/{serial}/secrets?operation_id={op}"))
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        footprint(&f, serial, &op).await,
        before,
        "a GET changed something"
    );

    // The POST does what the GET did: a presence challenge, then the ticket.
    let (s, again) = bob.resume(serial, &op).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        bob.decrypt(&again["request"]["params"]["new_pin"]),
        "602917"
    );
    assert_ne!(footprint(&f, serial, &op).await, before);
}

#[tokio::test]
async fn a_cross_site_post_for_a_devices_secrets_is_refused_unchanged_and_audited() {
    let f = TestApp::spawn().await;
    let (bob, serial, op) = unconfirmed_change(&f).await;
    let b = f.browser();
    let r = b.login("bob", "bob-long-password-1-2").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = b.cookie_header().unwrap();
    let before = footprint(&f, serial, &op).await;
    let refused_before =
        f.db.count("audit_log WHERE action = 'request.cross_site_refused'")
            .await;

    let url = b.url(&format!("/api/yubikey/{serial}/secrets"));
    let attempts = [
        vec![("origin", "https://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "null"), ("sec-fetch-site", "cross-site")],
    ];
    for headers in &attempts {
        // A page elsewhere posting with Bob's cookie attached.
        let mut r = reqwest::Client::new()
            .post(&url)
            .header("cookie", &cookie)
            .json(&json!({"operation_id": op}));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(
            footprint(&f, serial, &op).await,
            before,
            "{headers:?} changed something"
        );
    }

    let refused: Vec<serde_json::Value> = f
        .audit_details("request.cross_site_refused")
        .await
        .into_iter()
        .skip(usize::try_from(refused_before).unwrap())
        .collect();
    assert_eq!(refused.len(), attempts.len(), "{refused:?}");
    for d in &refused {
        assert_eq!(d["method"], "POST");
        assert_eq!(d["path"], format!("/api/yubikey/{serial}/secrets"));
    }
    assert!(refused[0]["why"].as_str().unwrap().contains("evil.example"));
    assert!(refused[1]["why"].as_str().unwrap().contains("cross-site"));

    // The same request from Kleidia's own page gets through the CSRF check
    // (Bob's browser session has no agent key: refused for that, not 403).
    let resp = b
        .http
        .post(&url)
        .header("origin", &b.base)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"operation_id": op}))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
    // And Bob's own agent (Bearer) resumes it.
    let (s, again) = bob.resume(serial, &op).await;
    assert_eq!(s, StatusCode::OK, "{again}");
}
