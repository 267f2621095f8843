//! The in-process session cache (`session.cache_secs`, docs/security.md
//! "Sessions") seen by an attacker holding a stolen cookie or token: after
//! logout or disabling, the replica that did it refuses them at once, and
//! every other replica within the documented bound, never later.

use std::time::Duration;

use kleidia_tests::app::KleidiaApp;
use kleidia_tests::client::{Api, Browser};
use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;

/// The bound these tests configure (`KLEIDIA_SESSION_CACHE_SECS`).
const BOUND_SECS: u64 = 2;

/// Two replicas of one installation: same public URL, database and OpenBao.
async fn two_replicas() -> (TestApp, KleidiaApp) {
    let app = TestApp::builder()
        .env("KLEIDIA_SESSION_CACHE_SECS", &BOUND_SECS.to_string())
        .start()
        .await;
    let public = app.base_url().to_string();
    let second = app
        .spawn_another(&[
            ("KLEIDIA_SERVER_PUBLIC_URL", public.as_str()),
            ("KLEIDIA_SERVER_ALLOWED_HOSTS", "[\"127.0.0.1\"]"),
        ])
        .await;
    (app, second)
}

/// Wait out the bound on the other replica (plus a margin for the request
/// itself), then ask: the answer must be final by then.
async fn after_the_bound() {
    tokio::time::sleep(Duration::from_millis(BOUND_SECS * 1000 + 300)).await;
}

#[tokio::test]
async fn a_stolen_token_or_cookie_is_refused_after_logout_on_every_replica_within_the_bound() {
    let (app, second) = two_replicas().await;
    let mut api = app.api();
    api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let token = api.token.clone().unwrap();
    let b = app.browser();
    assert_eq!(
        b.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let cookie = format!("{}; Path=/", b.cookie_header().unwrap());

    // The thief copied both, and used them on both replicas: each replica
    // now has the sessions in its cache.
    let stolen_here = Api::with_token(app.base_url(), &token);
    let stolen_there = Api::with_token(&second.base_url, &token);
    let cookie_here = Browser::new(app.base_url());
    cookie_here.set_cookie(&cookie);
    let cookie_there = Browser::new(&second.base_url);
    cookie_there.set_cookie(&cookie);
    for _ in 0..3 {
        assert_eq!(stolen_here.me().await.0, StatusCode::OK);
        assert_eq!(stolen_there.me().await.0, StatusCode::OK);
        assert_eq!(cookie_here.me().await.0, StatusCode::OK);
        assert_eq!(cookie_there.me().await.0, StatusCode::OK);
    }

    // The owner signs out of both on the first replica.
    assert_eq!(api.logout().await.0, StatusCode::NO_CONTENT);
    assert_eq!(b.logout().await.status(), StatusCode::SEE_OTHER);
    // The replica that ended them refuses at once; so does the cookie
    // everywhere (its record is looked up on every request).
    assert_eq!(stolen_here.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(cookie_here.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(cookie_there.me().await.0, StatusCode::UNAUTHORIZED);
    // The other replica, within the bound; and for good.
    after_the_bound().await;
    for _ in 0..3 {
        assert_eq!(stolen_there.me().await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(stolen_here.me().await.0, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = stolen_there.get("/api/devices").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "no data either");

    // What is left: no session row of the admin but the ones still in use,
    // and both logouts audited.
    let left = app
        .db
        .count("user_sessions s JOIN users u ON u.id = s.user_id WHERE u.username = 'admin'")
        .await;
    assert_eq!(left, 0, "both sessions are gone from PostgreSQL");
    assert_eq!(app.db.count("audit_log WHERE action = 'logout'").await, 2);
}

#[tokio::test]
async fn disabling_an_account_locks_out_its_stolen_token_on_every_replica_within_the_bound() {
    let (app, second) = two_replicas().await;
    let dora = app
        .create_user("dora", "user", "Dora", "dora-password-123")
        .await;
    let mut api = app.api();
    api.login("dora", &dora.password).await.unwrap();
    let token = api.token.clone().unwrap();
    let stolen_here = Api::with_token(app.base_url(), &token);
    let stolen_there = Api::with_token(&second.base_url, &token);
    assert_eq!(stolen_here.me().await.0, StatusCode::OK);
    assert_eq!(stolen_there.me().await.0, StatusCode::OK);

    // The admin disables Dora on the second replica this time.
    let mut admin = Api::new(&second.base_url);
    admin.login("admin", ADMIN_PASSWORD).await.unwrap();
    let (s, v) = admin.disable_user(&dora.id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(stolen_there.me().await.0, StatusCode::UNAUTHORIZED);
    after_the_bound().await;
    assert_eq!(stolen_here.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(stolen_there.me().await.0, StatusCode::UNAUTHORIZED);

    // Enabling the account again does not bring the old token back.
    let (s, _) = admin.enable_user(&dora.id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stolen_here.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(stolen_there.me().await.0, StatusCode::UNAUTHORIZED);
    let left = app
        .db
        .count(&format!(
            "user_sessions WHERE user_id = '{}'::uuid",
            dora.id
        ))
        .await;
    assert_eq!(left, 0);
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'user.disable'")
            .await,
        1
    );

    // A bound longer than the documented maximum does not start.
    let err = app
        .try_spawn_another(&[("KLEIDIA_SESSION_CACHE_SECS", "11")], &[])
        .await
        .err()
        .expect("a replica with session.cache_secs = 11 must not start");
    let err = format!("{err:#}");
    assert!(
        err.contains("session.cache_secs must be at most 10"),
        "{err}"
    );
}
