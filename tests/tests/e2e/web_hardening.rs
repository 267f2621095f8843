//! The web layer's defences against `kleidia serve`: escaping, CSRF,
//! security headers, htmx answers to refusals, and errors for bad input.

use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

/// The name as text: `<` and `>` as character references (either form).
fn escaped(body: &str) -> bool {
    body.contains("&#60;script&#62;alert(1)") || body.contains("&lt;script&gt;alert(1)")
}

#[tokio::test]
async fn a_display_name_with_a_script_tag_renders_escaped_on_every_page_that_shows_it() {
    let app = TestApp::spawn().await;
    let evil = "<script>alert(1)</script>";
    let mallory = app
        .create_user("mallory", "auditor", evil, "mallory-password-1")
        .await;
    let id = mallory.id.as_str();
    let admin = app.admin_browser().await;
    let own = app.browser();
    own.login("mallory", "mallory-password-1-2").await;
    let pages = [
        (&admin, "/users".to_string()),
        (&admin, format!("/users/{id}")),
        (&admin, "/users?q=mallory".to_string()),
        (&admin, "/audit".to_string()),
        (&own, "/".to_string()),
        (&own, format!("/users/{id}")),
        (&own, "/account/password".to_string()),
        (&own, "/no/such/page".to_string()),
        (&own, "/audit?action=user.*".to_string()),
    ];
    for (b, path) in pages {
        let (_, _, body) = b.get_text(&path).await;
        assert!(
            !body.contains("<script>alert"),
            "{path} shows the raw name:\n{body}"
        );
        assert!(
            escaped(&body),
            "{path} does not show the escaped name:\n{body}"
        );
    }
    // The reset page names the user too.
    let r = admin.reset_password(id).await;
    let body = r.text().await.unwrap();
    assert!(!body.contains("<script>alert") && escaped(&body), "{body}");
}

#[tokio::test]
async fn a_cross_site_post_is_refused_and_a_same_origin_one_is_not() {
    let app = TestApp::spawn().await;
    let b = app.admin_browser().await;
    let cookie = b.cookie_header().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = b.url("/logout");
    let attempts = [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "http://sub.127.0.0.1.nip.example"),
        ],
    ];
    for headers in attempts {
        let mut r = http
            .post(&url)
            .header("cookie", &cookie)
            .form(&[("x", "1")]);
        for (k, v) in &headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{headers:?}");
        // The session survived the attempt.
        assert_eq!(b.me().await.0, StatusCode::OK, "{headers:?}");
    }
    // An htmx request gets the refusal as a toast.
    let resp = http
        .post(b.url("/users"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("hx-request", "true")
        .form(&[("username", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["hx-retarget"], "#toasts");
    assert!(resp.text().await.unwrap().contains("class=\"toast error\""));
    // The login form is protected too (login CSRF).
    let resp = http
        .post(b.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let r = b.logout().await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_page_carries_the_security_headers_and_no_inline_script() {
    let app = TestApp::spawn().await;
    let sam = app
        .create_user("sam", "user", "Sam", "sam-password-1234")
        .await;
    let anon = app.browser();
    let admin = app.admin_browser().await;
    let id = sam.id.as_str();
    let pages = [
        (&anon, "/login".to_string()),
        (&anon, "/".to_string()),
        (&anon, "/healthz".to_string()),
        (&anon, "/no/such/page".to_string()),
        (&admin, "/".to_string()),
        (&admin, "/users".to_string()),
        (&admin, "/users/new".to_string()),
        (&admin, format!("/users/{id}")),
        (&admin, "/lockouts".to_string()),
        (&admin, "/audit".to_string()),
        (&admin, "/account/password".to_string()),
        (&admin, "/api/auth/me".to_string()),
        (&admin, "/audit?from=garbage".to_string()),
    ];
    for (b, path) in pages {
        let (s, h, body) = b.get_text(&path).await;
        let csp = h
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("");
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "{path} ({s}): {csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        assert!(!body.contains("<script>"), "{path} has an inline script");
        assert!(!body.contains(" onclick="), "{path} has an inline handler");
        assert!(
            !body.contains(" style=\""),
            "{path} has an inline style the CSP would block"
        );
    }
    // An error page tells nothing about the internals.
    let (s, _, body) = admin.get_text("/audit?from=garbage").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("expected a time"), "{body}");
}

#[tokio::test]
async fn htmx_requests_get_a_login_redirect_for_401_and_a_toast_for_other_refusals() {
    let app = TestApp::spawn().await;
    let anon = app.browser();
    let r = anon.htmx_get("/users").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["hx-redirect"], "/login");
    // Without htmx the browser is sent to the sign-in page, keeping where it was going.
    let r = anon.get("/users?q=x").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fusers%3Fq%3Dx");
    // …and comes back there after signing in, never to another site.
    let r = app
        .browser()
        .login_to("admin", ADMIN_PASSWORD, "/users?q=x")
        .await;
    assert_eq!(r.headers()["location"], "/users?q=x");
    let r = app
        .browser()
        .login_to("admin", ADMIN_PASSWORD, "//evil.example/")
        .await;
    assert_eq!(r.headers()["location"], "/");

    app.create_user("tim", "user", "Tim", "tim-password-1234")
        .await;
    let tim = app.browser();
    tim.login("tim", "tim-password-1234-2").await;
    let r = tim.htmx_get("/audit").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["hx-retarget"], "#toasts");
    assert_eq!(r.headers()["hx-reswap"], "beforeend");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("<div class=\"toast error\""), "{body}");
    // A 409 from a form becomes a toast too: an admin cannot disable themselves.
    let admin = app.admin_browser().await;
    let (_, me) = admin.me().await;
    let r = admin
        .htmx_post(&format!(
            "/users/{}/disable",
            me["user"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("cannot disable your own account"));
}

#[tokio::test]
async fn malformed_api_input_gets_a_json_error_that_names_the_problem() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let url = app.url("/api/auth/login");
    let cases: [(&str, &str, u16, &str); 3] = [
        (
            "application/json",
            "{\"username\": \"admin\",",
            400,
            "bad_request",
        ),
        ("text/plain", "{}", 415, "unsupported_media_type"),
        (
            "application/json",
            "{\"username\": \"admin\", \"password\": \"x\", \"extra\": 1}",
            422,
            "unprocessable",
        ),
    ];
    for (ct, body, status, code) in cases {
        let r = http
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code, "{v}");
        assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
    }
    let (s, v) = app.admin_api().await.audit("limit=many").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "bad_request", "{v}");
}
