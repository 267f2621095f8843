//! Password guessing in parallel: every attempt is counted before its
//! password is checked, so a hundred guesses sent at once get exactly
//! `account_free_failures` verdicts and the rest a lock; and the hash queue
//! is bounded, so a flood gets 503 with `Retry-After` before anything is
//! checked or counted.

use kleidia_tests::TestApp;
use reqwest::StatusCode;
use tokio::task::JoinSet;

/// `n` API sign-ins at once (`name(i)`, `guess-i`): status and Retry-After.
async fn guess_at_once(
    app: &TestApp,
    n: usize,
    name: impl Fn(usize) -> String,
) -> Vec<(StatusCode, Option<String>)> {
    let http = reqwest::Client::new();
    let url = app.url("/api/auth/login");
    let mut set = JoinSet::new();
    for i in 0..n {
        let (http, url, user) = (http.clone(), url.clone(), name(i));
        set.spawn(async move {
            let r = http
                .post(url)
                .json(&serde_json::json!({"username": user, "password": format!("guess-{i}")}))
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status(), retry)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

fn count(results: &[(StatusCode, Option<String>)], s: StatusCode) -> usize {
    results.iter().filter(|(st, _)| *st == s).count()
}

#[tokio::test]
async fn a_hundred_parallel_wrong_guesses_get_five_verdicts_and_the_rest_a_lock() {
    let app = TestApp::builder()
        .env("KLEIDIA_THROTTLE_ACCOUNT_FREE_FAILURES", "5")
        .env("KLEIDIA_THROTTLE_CLIENT_FREE_FAILURES", "1000")
        .env("KLEIDIA_THROTTLE_BASE_DELAY_SECS", "600")
        .env("KLEIDIA_AUTH_HASH_QUEUE", "200")
        .start()
        .await;
    let pat = app
        .create_user("pat", "user", "Pat", "pat-password-1234")
        .await;
    let sessions = app.db.count("user_sessions").await;

    let results = guess_at_once(&app, 100, |_| "pat".into()).await;
    assert_eq!(count(&results, StatusCode::UNAUTHORIZED), 5, "{results:?}");
    assert_eq!(
        count(&results, StatusCode::TOO_MANY_REQUESTS),
        95,
        "{results:?}"
    );
    // Every lock answer says how long to wait.
    for (s, retry) in &results {
        if *s == StatusCode::TOO_MANY_REQUESTS {
            let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
            assert!((1..=600).contains(&secs), "{secs}");
        }
    }

    // The state left behind: five failures, a lock, five bad-password
    // audit rows and 95 throttled ones, no session.
    let failures = app
        .db
        .count("login_throttle WHERE scope = 'account' AND key = '127.0.0.1 pat' AND failures = 5 AND locked_until > now()")
        .await;
    assert_eq!(failures, 1);
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'login.failed' AND actor_name = 'pat' AND details->>'reason' = 'bad_password'")
            .await,
        5
    );
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'login.failed' AND actor_name = 'pat' AND details->>'reason' = 'throttled'")
            .await,
        95
    );
    assert_eq!(app.db.count("user_sessions").await, sessions);
    // Even the right password waits now.
    let (s, _) = app.api().post_login("pat", &pat.password).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn past_the_hash_queue_sign_ins_get_503_with_retry_after_and_nothing_is_counted() {
    let app = TestApp::builder()
        .env("KLEIDIA_THROTTLE_ACCOUNT_FREE_FAILURES", "1000")
        .env("KLEIDIA_THROTTLE_CLIENT_FREE_FAILURES", "1000")
        .env("KLEIDIA_AUTH_HASH_CONCURRENCY", "1")
        .env("KLEIDIA_AUTH_HASH_QUEUE", "0")
        .start()
        .await;
    let before = app
        .db
        .count("audit_log WHERE action = 'login.failed'")
        .await;
    let results = guess_at_once(&app, 100, |i| format!("name-{i}")).await;
    let busy = count(&results, StatusCode::SERVICE_UNAVAILABLE);
    let checked = count(&results, StatusCode::UNAUTHORIZED);
    assert_eq!(busy + checked, 100, "{results:?}");
    assert!(busy > 0, "one hash at a time and no queue: {results:?}");
    for (s, retry) in &results {
        if *s == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(retry.as_deref(), Some("1"));
        }
    }
    // Only the checked ones were counted and audited.
    let counted: i64 = {
        let pool = app.db.pool().await.unwrap();
        sqlx::query_scalar(
            "SELECT coalesce(sum(failures), 0)::bigint FROM login_throttle WHERE scope = 'account'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(counted, checked as i64);
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'login.failed'")
            .await
            - before,
        checked as i64
    );
}

/// s5-bench: many right passwords at once, more than the hashes that run
/// (default `auth.hash_concurrency` 2, `auth.hash_queue` 256): each waits
/// for its hash rather than getting 503, and each gets a session of its own.
#[tokio::test]
async fn twenty_people_signing_in_at_once_all_get_in_and_each_gets_a_session() {
    let app = TestApp::builder().start().await;
    let mut people = Vec::new();
    // 20: the TRIAL license's 25 accounts, with the admin.
    for i in 0..20 {
        let name = format!("crowd{i:02}");
        let u = app
            .create_user(&name, "user", &name, &format!("crowd-password-{i:04}"))
            .await;
        people.push((name, u.password));
    }
    let sessions = app.db.count("user_sessions").await;
    let logins = "audit_log WHERE action = 'login.ok' AND actor_name LIKE 'crowd%'";
    let logins_before = app.db.count(logins).await;
    let failures = app
        .db
        .count("audit_log WHERE action = 'login.failed'")
        .await;
    let http = reqwest::Client::new();
    let url = app.url("/api/auth/login");
    let mut set = JoinSet::new();
    for (name, password) in people.clone() {
        let (http, url) = (http.clone(), url.clone());
        set.spawn(async move {
            let r = http
                .post(url)
                .json(&serde_json::json!({"username": name, "password": password}))
                .send()
                .await
                .unwrap();
            let s = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (name, s, v["token"].as_str().map(str::to_string))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        let (name, s, token) = r.unwrap();
        assert_eq!(s, StatusCode::OK, "{name}");
        assert!(tokens.insert(token.unwrap()), "{name}: a token twice");
    }
    assert_eq!(tokens.len(), 20);
    assert_eq!(app.db.count("user_sessions").await, sessions + 20);
    assert_eq!(app.db.count(logins).await, logins_before + 20);
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'login.failed'")
            .await,
        failures
    );
}

/// A sign-in reserves its attempt on the account's throttle row while
/// another sign-in of the same person succeeds and clears that row (two
/// tabs, a script and a browser). Once, the reservation found the row when
/// it inserted and none when it locked it, and the right password got a
/// 500. The schedule is forced here: the row is locked, the sign-in sent,
/// and the row deleted (as a success's clear does) once the sign-in waits
/// for it.
#[tokio::test]
async fn a_sign_in_whose_throttle_row_is_cleared_meanwhile_still_signs_in() {
    let app = TestApp::builder().start().await;
    let pat = app
        .create_user("pat", "user", "Pat", "pat-password-1234")
        .await;
    let (s, _) = app.api().post_login("pat", "a wrong guess here").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let row = "login_throttle WHERE scope = 'account' AND key = '127.0.0.1 pat'";
    assert_eq!(app.db.count(row).await, 1);
    let sessions = app.db.count("user_sessions").await;
    let signed_in = "audit_log WHERE action = 'login.ok' AND actor_name = 'pat'";
    let audited = app.db.count(signed_in).await;

    let pool = app.db.pool().await.unwrap();
    let mut other = pool.begin().await.unwrap();
    sqlx::query(&format!("SELECT 1 FROM {row} FOR UPDATE"))
        .fetch_one(&mut *other)
        .await
        .unwrap();
    let api = app.api();
    let password = pat.password.clone();
    let sign_in = tokio::spawn(async move { api.post_login("pat", &password).await });
    // The sign-in waits for the locked row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sign-in never waited for the throttle row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query(&format!("DELETE FROM {row}"))
        .execute(&mut *other)
        .await
        .unwrap();
    other.commit().await.unwrap();

    let (s, body) = sign_in.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    // Left behind: one more session, the account's counter cleared by the
    // success, the sign-in audited.
    assert_eq!(app.db.count("user_sessions").await, sessions + 1);
    assert_eq!(app.db.count(row).await, 0);
    assert_eq!(app.db.count(signed_in).await, audited + 1);
}
