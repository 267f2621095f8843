//! Sessions live in PostgreSQL: they work across app processes, survive a
//! restart, and end on the server at logout and after the idle timeout.

use std::time::Duration;

use kleidia_tests::client::{Api, Browser};
use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;

#[tokio::test]
async fn a_session_from_one_app_process_works_on_another_and_survives_a_restart() {
    let mut app = TestApp::spawn().await;
    // Replicas share the public URL (it is the JWT issuer) and the database.
    // Here each is reached on its own port, so they also answer for the
    // address itself on any port (`server.allowed_hosts`).
    let public = app.base_url().to_string();
    let same_url = [
        ("KLEIDIA_SERVER_PUBLIC_URL", public.as_str()),
        ("KLEIDIA_SERVER_ALLOWED_HOSTS", "[\"127.0.0.1\"]"),
    ];
    let second = app.spawn_another(&same_url).await;
    let b = app.browser();
    assert_eq!(
        b.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let mut api = app.api();
    api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let token = api.token.clone().unwrap();

    // Same browser (cookies are per host, not per port), other process.
    let on_second = Browser::new(&second.base_url);
    on_second.set_cookie(&format!("{}; Path=/", b.cookie_header().unwrap()));
    let (s, me) = on_second.me().await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["via"], "browser");
    // The JWT too: both processes share the signing key through OpenBao.
    assert_eq!(
        Api::with_token(&second.base_url, &token).me().await.0,
        StatusCode::OK
    );

    // Restart the first process: the session and the token still work.
    let status = app.server.proc.stop().unwrap();
    assert!(status.success());
    app.server = app.spawn_another(&same_url).await;
    let b2 = app.browser();
    b2.set_cookie(&format!("{}; Path=/", b.cookie_header().unwrap()));
    assert_eq!(b2.me().await.0, StatusCode::OK);
    let api2 = Api::with_token(app.base_url(), &token);
    assert_eq!(api2.me().await.0, StatusCode::OK);

    // Logging out on one process ends the session everywhere.
    let r = on_second.logout().await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b2.me().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_idle_session_ends_on_the_server_and_an_active_one_does_not() {
    let app = TestApp::builder()
        .env("KLEIDIA_SESSION_IDLE_TIMEOUT_SECS", "4")
        .start()
        .await;
    let idle = app.browser();
    let active = app.browser();
    idle.login("admin", ADMIN_PASSWORD).await;
    active.login("admin", ADMIN_PASSWORD).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(active.me().await.0, StatusCode::OK);
    }
    assert_eq!(idle.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(active.me().await.0, StatusCode::OK);
    // The cookie of the idle session is not Secure over http and not
    // persistent; the server alone decides.
    let r = app.browser().login("admin", ADMIN_PASSWORD).await;
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
    let app = TestApp::builder()
        .env("KLEIDIA_SESSION_COOKIE_SECURE", "always")
        .start()
        .await;
    let r = app.browser().login("admin", ADMIN_PASSWORD).await;
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
    let app = TestApp::builder()
        .env("KLEIDIA_SESSION_IDLE_TIMEOUT_SECS", "60")
        .env("KLEIDIA_SESSION_ABSOLUTE_TIMEOUT_SECS", "4")
        .start()
        .await;
    let b = app.browser();
    b.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(b.me().await.0, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        statuses.push(b.me().await.0.as_u16());
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
