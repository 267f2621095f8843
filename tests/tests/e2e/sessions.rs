//! Sessions live in PostgreSQL: they work across app processes, survive a
//! restart, and end on the server at logout and after the idle timeout.

use std::time::Duration;

use kleidia_tests::client::{Env, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn a_session_from_one_app_process_works_on_another_and_survives_a_restart() {
    let mut env = Env::start(&[]).await.unwrap();
    // Replicas share the public URL (it is the JWT issuer) and the database.
    let public = env.app.base_url.clone();
    let same_url = [("KLEIDIA_SERVER_PUBLIC_URL", public.as_str())];
    let second = Env::spawn_on(&env.db, &same_url).await.unwrap();
    let b = env.browser();
    assert_eq!(
        b.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let mut api = env.api();
    api.login("admin", ADMIN_PASSWORD).await.unwrap();

    // Same browser (cookies are per host, not per port), other process.
    let r = b.http.get(second.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["via"], "browser");
    // The JWT too: both processes share the signing key through OpenBao.
    let r = api
        .http
        .get(second.url("/api/auth/me"))
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Restart the first process: the session and the token still work.
    let status = env.app.proc.stop().unwrap();
    assert!(status.success());
    env.app = Env::spawn_on(&env.db, &same_url).await.unwrap();
    let b2 = kleidia_tests::client::Browser::new(&env.app.base_url);
    b2.set_cookie(&format!("{}; Path=/", b.cookie_header().unwrap()));
    assert_eq!(b2.get("/api/auth/me").await.status(), StatusCode::OK);
    let api2 =
        kleidia_tests::client::Api::with_token(&env.app.base_url, api.token.as_ref().unwrap());
    assert_eq!(api2.get("/api/auth/me").await.0, StatusCode::OK);

    // Logging out on one process ends the session everywhere.
    let r = b
        .http
        .post(second.url("/logout"))
        .header("origin", &second.base_url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        b2.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_idle_session_ends_on_the_server_and_an_active_one_does_not() {
    let env = Env::start(&[("KLEIDIA_SESSION_IDLE_TIMEOUT_SECS", "4")])
        .await
        .unwrap();
    let idle = env.browser();
    let active = env.browser();
    idle.login("admin", ADMIN_PASSWORD).await;
    active.login("admin", ADMIN_PASSWORD).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(active.get("/api/auth/me").await.status(), StatusCode::OK);
    }
    assert_eq!(
        idle.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(active.get("/api/auth/me").await.status(), StatusCode::OK);
    // The cookie of the idle session is not Secure over http and not
    // persistent; the server alone decides.
    let r = env.browser().login("admin", ADMIN_PASSWORD).await;
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("kleidia_session="), "{set_cookie}");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Max-Age") && !set_cookie.contains("Secure"),
        "{set_cookie}"
    );
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed() {
    let env = Env::start(&[("KLEIDIA_SESSION_COOKIE_SECURE", "always")])
        .await
        .unwrap();
    let r = env.browser().login("admin", ADMIN_PASSWORD).await;
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("__Host-kleidia_session="),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("Secure") && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Domain="), "{set_cookie}");
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_timeout_however_active_it_is() {
    let env = Env::start(&[
        ("KLEIDIA_SESSION_IDLE_TIMEOUT_SECS", "60"),
        ("KLEIDIA_SESSION_ABSOLUTE_TIMEOUT_SECS", "4"),
    ])
    .await
    .unwrap();
    let b = env.browser();
    b.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(b.get("/api/auth/me").await.status(), StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        statuses.push(b.get("/api/auth/me").await.status().as_u16());
    }
    assert_eq!(statuses.first(), Some(&200), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&401), "{statuses:?}");
    // Once over, it stays over.
    let first_401 = statuses.iter().position(|s| *s == 401).unwrap();
    assert!(
        statuses[first_401..].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
}
