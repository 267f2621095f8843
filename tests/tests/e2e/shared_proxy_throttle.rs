//! Issue 14 §2: with TLS ended at a load balancer everybody shares one
//! address. One person's typos lock only that person at that address, never
//! the organisation behind it; a success clears their counter; spraying many
//! accounts from one address is still slowed down (429 with `Retry-After`)
//! and audited. The app runs with `server.client_ip_header =
//! x-forwarded-for`, as kustomize configures it behind the load balancer.

use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PROXY: &str = "203.0.113.10";

async fn start() -> TestApp {
    TestApp::builder()
        .env("KLEIDIA_SERVER_CLIENT_IP_HEADER", "x-forwarded-for")
        .start()
        .await
}

/// `POST /api/auth/login` as forwarded by the load balancer for `client`:
/// the status, `Retry-After` and the body.
async fn sign_in(
    f: &TestApp,
    client: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(f.url("/api/auth/login"))
        .header("x-forwarded-for", format!("198.51.100.1, {client}"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let s = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (s, retry, r.json().await.unwrap_or(Value::Null))
}

async fn locks(f: &TestApp, scope: &str) -> Vec<String> {
    let pool = f.db.pool().await.unwrap();
    sqlx::query_scalar(
        "SELECT key FROM login_throttle WHERE scope = $1 AND locked_until > now() ORDER BY key",
    )
    .bind(scope)
    .fetch_all(&pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_persons_twenty_typos_behind_the_proxy_lock_nobody_else_out() {
    let f = start().await;
    let alice = f
        .create_user("alice", "user", "Alice", "alice-password-1")
        .await;
    let bob = f.create_user("bob", "user", "Bob", "bob-password-1").await;

    let mut answers = Vec::new();
    for i in 0..20 {
        answers.push(sign_in(&f, PROXY, "alice", &format!("typo-{i}")).await.0);
    }
    // Five verdicts, then Alice (at this address) is locked.
    assert!(
        answers[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert!(
        answers[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
    let (s, retry, _) = sign_in(&f, PROXY, "alice", &alice.password).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());

    // Bob, behind the same proxy, signs in; the address is not locked.
    let (s, _, v) = sign_in(&f, PROXY, "bob", &bob.password).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(locks(&f, "client").await, Vec::<String>::new());
    assert_eq!(locks(&f, "account").await, [format!("{PROXY} alice")]);
    // Alice from elsewhere (her phone) is not locked either.
    let (s, _, v) = sign_in(&f, "192.0.2.44", "alice", &alice.password).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The refusals are audited with what was locked.
    let throttled: Vec<Value> = f
        .audit_details("login.failed")
        .await
        .into_iter()
        .filter(|d| d["reason"] == "throttled")
        .collect();
    assert_eq!(throttled.len(), 16);
    assert!(
        throttled.iter().all(|d| d["scope"] == "account"),
        "{throttled:?}"
    );
}

#[tokio::test]
async fn a_success_clears_the_persons_counter_at_that_address() {
    let f = start().await;
    let carol = f
        .create_user("carol", "user", "Carol", "carol-password-1")
        .await;
    // Four typos, a success, four more typos: never locked.
    for round in 0..3 {
        for i in 0..4 {
            let (s, _, _) = sign_in(&f, PROXY, "carol", &format!("typo-{round}-{i}")).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "round {round}, typo {i}");
        }
        let (s, _, v) = sign_in(&f, PROXY, "carol", &carol.password).await;
        assert_eq!(s, StatusCode::OK, "round {round}: {v}");
    }
    assert_eq!(f.db.count("login_client_failures").await, 0);
    assert_eq!(locks(&f, "account").await, Vec::<String>::new());
}

#[tokio::test]
async fn spraying_thirty_accounts_from_one_address_is_slowed_down_and_audited() {
    let f = start().await;
    let dave = f
        .create_user("dave", "user", "Dave", "dave-password-1")
        .await;
    let sprayer = "198.51.100.66";
    let mut answers = Vec::new();
    for i in 0..30 {
        let (s, retry, _) = sign_in(&f, sprayer, &format!("user{i:02}"), "Winter2026!").await;
        answers.push((s, retry));
    }
    // Twenty distinct accounts get a verdict; then the address waits.
    assert!(
        answers[..20]
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert!(
        answers[20..]
            .iter()
            .all(|(s, r)| *s == StatusCode::TOO_MANY_REQUESTS && r.is_some()),
        "{answers:?}"
    );
    assert_eq!(locks(&f, "client").await, [sprayer.to_string()]);
    let throttled: Vec<Value> = f
        .audit_details("login.failed")
        .await
        .into_iter()
        .filter(|d| d["reason"] == "throttled")
        .collect();
    assert_eq!(throttled.len(), 10);
    assert!(
        throttled.iter().all(|d| d["scope"] == "client"),
        "{throttled:?}"
    );
    // The twentieth failure recorded the slow-down it caused.
    let last_verdict = f
        .audit_details("login.failed")
        .await
        .into_iter()
        .rev()
        .find(|d| d["reason"] == "unknown_user")
        .unwrap();
    assert!(
        last_verdict["client_locked_until"].is_number(),
        "{last_verdict}"
    );
    // Nothing was locked for anybody elsewhere.
    let (s, _, v) = sign_in(&f, PROXY, "dave", &dave.password).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
