//! Where a browser goes after signing in (`next=`): only back to one of
//! Kleidia's pages, whatever an attacker writes into a link to `/login`.
//! Browsers drop tabs and line breaks and read `\` as `/`, so each of these
//! would otherwise become a redirect to another site (or, with a line
//! break, a 500 after a successful sign-in).

use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;

const HOSTILE: &[&str] = &[
    "//evil.example/",
    "///evil.example/",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\r\nSet-Cookie: kleidia_session=planted",
    "/\\evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "/%2f%2fevil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
    "https://evil.example/",
    "HtTpS://evil.example/",
    "javascript:alert(1)",
    "/USERS",
    "/Users",
    "/users/../..//evil.example",
    "/users#@evil.example",
    "/login?next=//evil.example",
    "/api/users",
];

#[tokio::test]
async fn a_sign_in_link_with_a_hostile_next_signs_in_and_lands_on_the_home_page() {
    let app = TestApp::spawn().await;
    let sessions_before = app.db.count("user_sessions").await;
    for next in HOSTILE {
        // The sign-in page keeps only a safe value in its form…
        let url = format!("/login?next={}", urlencoding(next));
        let (s, _, html) = app.browser().get_text(&url).await;
        assert_eq!(s, StatusCode::OK, "{next:?}");
        assert!(
            html.contains(r#"name="next" value="/""#)
                || html.contains(r#"name="next" value="&#x2f;""#),
            "{next:?} kept in the form"
        );
        assert!(!html.contains("evil.example"), "{next:?}: {html}");
        // …and a form posted with it anyway signs in and goes home.
        let b = app.browser();
        let r = b.login_to("admin", ADMIN_PASSWORD, next).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(r.headers()["location"], "/", "{next:?}");
        assert!(b.cookie_header().is_some(), "{next:?}");
        // Nothing but the one session of this sign-in was created, and no
        // cookie was planted through the header.
        assert!(
            r.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().contains("planted")),
            "{next:?}"
        );
    }
    assert_eq!(
        app.db.count("user_sessions").await,
        sessions_before + HOSTILE.len() as i64
    );
    // The app's own pages still work as places to return to.
    for next in ["/users?q=x", "/devices/12345678", "/audit", "/license"] {
        let r = app.browser().login_to("admin", ADMIN_PASSWORD, next).await;
        assert_eq!(r.headers()["location"], *next);
    }
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// Percent-encode everything but unreserved bytes, as a link would.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
