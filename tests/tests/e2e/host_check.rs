//! DNS rebinding: an outside page points its own name at Kleidia's address
//! and talks to it from the victim's browser, with its own name in `Host`
//! and `Origin`. Kleidia answers only for its public URL's host (and the
//! extra names configured), so such requests get 421 and change nothing;
//! `/metrics` needs its own token whatever the Host.

use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::{redirect, StatusCode};
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_rebound_host_can_neither_sign_in_nor_read_pages_nor_metrics() {
    let app = TestApp::builder()
        .env(
            "KLEIDIA_SERVER_METRICS_TOKEN",
            "scrape-token-for-prometheus",
        )
        .start()
        .await;
    let port = reqwest::Url::parse(app.base_url()).unwrap().port().unwrap();
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil_host}");
    let http = client();
    let sessions = app.db.count("user_sessions").await;
    let logins = app.db.count("audit_log WHERE action LIKE 'login.%'").await;

    // What the rebinding page's script sends: same-origin from the
    // browser's point of view.
    let r = http
        .post(app.url("/api/auth/login"))
        .header("host", &evil_host)
        .header("origin", &evil_origin)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let r = http
        .post(app.url("/login"))
        .header("host", &evil_host)
        .header("origin", &evil_origin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert!(r.headers().get("set-cookie").is_none());
    for path in ["/", "/login", "/api/auth/me", "/api/openapi.json"] {
        let r = http
            .get(app.url(path))
            .header("host", &evil_host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    // Nothing happened: no session, no sign-in attempt at all.
    assert_eq!(app.db.count("user_sessions").await, sessions);
    assert_eq!(
        app.db.count("audit_log WHERE action LIKE 'login.%'").await,
        logins
    );

    // /metrics answers any Host (Prometheus scrapes the pod), but only with
    // the token, which a page cannot know.
    for host in [evil_host.as_str(), &format!("127.0.0.1:{port}")] {
        let r = http
            .get(app.url("/metrics"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{host}");
        let r = http
            .get(app.url("/metrics"))
            .header("host", host)
            .bearer_auth("a guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{host}");
    }
    let r = http
        .get(app.url("/metrics"))
        .bearer_auth("scrape-token-for-prometheus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The probes answer any Host.
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(app.url(path))
            .header("host", &evil_host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // The app's own host still works.
    assert_eq!(
        app.browser().login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn an_extra_configured_name_is_served_and_its_own_origin_may_post_forms() {
    let app = TestApp::builder()
        .env("KLEIDIA_SERVER_ALLOWED_HOSTS", "[\"kleidia.internal\"]")
        .start()
        .await;
    let port = reqwest::Url::parse(app.base_url()).unwrap().port().unwrap();
    let host = format!("kleidia.internal:{port}");
    let http = client();
    let r = http
        .post(app.url("/login"))
        .header("host", &host)
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers().get("set-cookie").is_some());
    // A form from another name that rebinds to the same address is refused
    // at the door, even with a matching Origin.
    let r = http
        .post(app.url("/login"))
        .header("host", format!("kleidia.internal.evil.example:{port}"))
        .header(
            "origin",
            format!("http://kleidia.internal.evil.example:{port}"),
        )
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    // …and on an allowed Host, an Origin naming another site is still a
    // cross-site request.
    let r = http
        .post(app.url("/login"))
        .header("host", &host)
        .header("origin", "http://evil.example")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
