//! Signing in over HTTP against `kleidia serve`: session fixation, which
//! JWTs are refused, throttling of failed sign-ins, and a forgotten
//! password reset with the CLI.

use kleidia_tests::client::Api;
use kleidia_tests::jwt::{b64_decode, forge_jwt};
use kleidia_tests::{unix_now, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_cookie_from_before_sign_in_is_useless_after_it() {
    let app = TestApp::spawn().await;
    app.create_user("eve", "user", "Eve", "eve-password-123")
        .await;
    // An attacker signs in and plants their session cookie in the victim's browser.
    let attacker = app.browser();
    assert_eq!(
        attacker.login("eve", "eve-password-123-2").await.status(),
        StatusCode::SEE_OTHER
    );
    let planted = attacker.cookie_header().unwrap();
    let victim = app.browser();
    victim.set_cookie(&format!("{planted}; Path=/"));
    // A made-up session id is no better.
    let forged = app.browser();
    forged.set_cookie("kleidia_session=AAAAAAAAAAAAAAAAAAAAAA; Path=/");
    assert_eq!(forged.me().await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(
        victim.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let after = victim.cookie_header().unwrap();
    assert_ne!(after, planted, "the session id must change at sign-in");
    let (s, me) = victim.me().await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["username"], "admin");
    // The planted cookie was ended by the sign-in: it opens nothing now,
    // in particular not the admin's session.
    let replay = app.browser();
    replay.set_cookie(&format!("{planted}; Path=/"));
    assert_eq!(replay.me().await.0, StatusCode::UNAUTHORIZED);
    let r = replay.get("/users").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}

#[tokio::test]
async fn tokens_with_alg_none_another_algorithm_expired_wrong_audience_or_after_logout_are_refused()
{
    let app = TestApp::spawn().await;
    let mut api = app.api();
    let login = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(api.me().await.0, StatusCode::OK);

    let secret = app.root_bao().get("secret/data/kleidia/jwt").await.unwrap();
    assert_eq!(secret["data"]["data"]["algorithm"], "HS256");
    let key = b64_decode(secret["data"]["data"]["key"].as_str().unwrap());
    assert_eq!(key.len(), 32);

    let base = app.base_url();
    let now = unix_now();
    let good = json!({
        "iss": base, "aud": "kleidia-api", "sub": login["user"]["id"], "sid": login["session_id"],
        "iat": now, "exp": now + 300,
    });
    // The control: a token we forge correctly is accepted, so the refusals
    // below are about what we changed.
    let control = forge_jwt("HS256", &key, &good);
    assert_eq!(Api::with_token(base, &control).me().await.0, StatusCode::OK);

    let mut cases: Vec<(&str, String)> = vec![
        ("alg none", forge_jwt("none", &key, &good)),
        ("HS512 with the right key", forge_jwt("HS512", &key, &good)),
        (
            "wrong key",
            forge_jwt("HS256", b"another key, 32 bytes long......", &good),
        ),
    ];
    let mut c = good.clone();
    c["exp"] = json!(unix_now() - 3600);
    c["iat"] = json!(unix_now() - 7200);
    cases.push(("expired", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    cases.push(("wrong audience", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["iss"] = json!("https://evil.example");
    cases.push(("wrong issuer", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["sid"] = json!(uuid::Uuid::new_v4());
    cases.push(("unknown session", forge_jwt("HS256", &key, &c)));
    for (what, t) in &cases {
        let (s, body) = Api::with_token(base, t).me().await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }

    // Logout revokes the issued token and our forged twin at once.
    let (s, _) = api.logout().await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        Api::with_token(base, &control).me().await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn failed_sign_ins_lock_the_name_and_the_admin_sees_and_clears_the_lock() {
    let app = TestApp::builder()
        .env("KLEIDIA_THROTTLE_ACCOUNT_FREE_FAILURES", "3")
        .env("KLEIDIA_THROTTLE_BASE_DELAY_SECS", "600")
        .start()
        .await;
    app.create_user("kim", "user", "Kim", "kim-password-1234")
        .await;
    let api = app.api();
    // A real name with a wrong password and a name that does not exist get
    // the same answers, failure by failure.
    for i in 0..3 {
        let real = api.post_login("kim", "wrong-password").await;
        let ghost = api.post_login("nobody-here", "wrong-password").await;
        assert_eq!(real.0, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(real, ghost, "attempt {i}");
    }
    // Locked now: even the right password waits.
    let locked = api.post_login("kim", "kim-password-1234-2").await;
    assert_eq!(locked.0, StatusCode::TOO_MANY_REQUESTS, "{:?}", locked.1);
    assert_eq!(locked, api.post_login("nobody-here", "whatever").await);

    let admin = app.admin_api().await;
    let (s, list) = admin.lockouts().await;
    assert_eq!(s, StatusCode::OK);
    let kim = list
        .as_array()
        .unwrap()
        .iter()
        // Locked at this address: the key is "<client address> <account>".
        .find(|l| l["scope"] == "account" && l["key"] == "127.0.0.1 kim")
        .unwrap_or_else(|| panic!("{list}"));
    assert!(kim["locked_until"].is_string(), "{kim}");
    let failed = app
        .db
        .count("audit_log WHERE action = 'login.failed' AND actor_name IN ('kim', 'nobody-here')")
        .await;
    assert_eq!(failed, 8, "every failed or throttled attempt is audited");

    // Clearing by the name alone lifts it at every address.
    let (s, _) = admin.clear_lockout("account", "kim").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let ok = api.post_login("kim", "kim-password-1234-2").await;
    assert_eq!(ok.0, StatusCode::OK, "{:?}", ok.1);
    let cleared = app
        .db
        .count("audit_log WHERE action = 'login.lockout_clear'")
        .await;
    assert_eq!(cleared, 1);
}

#[tokio::test]
async fn the_cli_resets_a_forgotten_password_ends_sessions_and_prints_a_one_time_password() {
    let app = TestApp::spawn().await;
    let b = app.admin_browser().await;
    let out = app.cli(&[
        "user",
        "reset-password",
        "--username",
        "admin",
        "--generate-password",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pw = stdout.trim();
    assert_eq!(pw.len(), 20, "stdout is exactly the password: {stdout:?}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.browser().login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app.browser().login("admin", pw).await;
    assert_eq!(r.headers()["location"], "/account/password");
    let out = app.cli(&[
        "user",
        "reset-password",
        "--username",
        "nobody",
        "--generate-password",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user \"nobody\""));
}
