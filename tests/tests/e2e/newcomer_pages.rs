//! What a newcomer tripped over while clicking through the demo (issue 18
//! §7): words people read, a header that knows who is signed in, no menu
//! on the forced password page, audit details as readable lines with the
//! time zone, a favicon, and PEM documents that end with a newline.

use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_pages_say_what_a_newcomer_expects() {
    let app = TestApp::spawn().await;
    let admin_api = app.admin_api().await;

    // One YubiKey is "1 YubiKey", two are "2 YubiKeys".
    let admin = app.admin_browser().await;
    let (s, v) = admin_api.register_device(23_000_001, "5.7.1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, _, page) = admin.get_text("/").await;
    assert!(page.contains("The fleet: 1 YubiKey<"), "{page}");
    let (s, v) = admin_api.register_device(23_000_002, "5.7.1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, _, page) = admin.get_text("/").await;
    assert!(page.contains("The fleet: 2 YubiKeys<"), "{page}");

    // A signed-in user who is refused a page still sees who they are and
    // "Sign out", never "Sign in".
    let plain = app
        .create_user("nora", "user", "Nora Newcomer", "nora-long-password-1")
        .await;
    let nora = app.browser();
    let r = nora.login("nora", &plain.password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (s, _, page) = nora.get_text("/settings").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(page.contains("Nora Newcomer"), "{page}");
    assert!(page.contains("Sign out"), "{page}");
    assert!(!page.contains(">Sign in<"), "{page}");
    // Signed out, the same page offers "Sign in" (through the login redirect).
    let stranger = app.browser();
    let r = stranger.get("/settings").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Someone who must still choose a password gets the form and no menu.
    let (s, v) = admin_api
        .create_user(
            &json!({"username": "otto", "role": "helpdesk", "display_name": "Otto",
                             "email": "otto@corp.example", "password": "chosen-by-admin-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let otto = app.browser();
    let r = otto.login("otto", "chosen-by-admin-1").await;
    assert_eq!(r.headers()["location"], "/account/password");
    let (s, _, page) = otto.get_text("/account/password").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("Choose your own before you go on"), "{page}");
    for link in [
        "href=\"/devices\"",
        "href=\"/audit\"",
        "href=\"/settings\"",
        "href=\"/my/devices\"",
    ] {
        assert!(
            !page.contains(link),
            "{link} offered on the forced page: {page}"
        );
    }
    assert!(page.contains("Sign out"), "{page}");
    // Once the password is changed, the menu is back.
    let r = otto
        .change_password("chosen-by-admin-1", "otto-chose-his-own")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, _, page) = otto.get_text("/").await;
    assert!(page.contains("href=\"/my/devices\""), "{page}");

    // Audit details are lines of key and value, and times say UTC.
    let (s, _, page) = admin.get_text("/audit?action=device.register").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(" UTC</td>"), "{page}");
    assert!(
        page.contains("<span class=\"k\">firmware</span> <code>5.7.1</code>"),
        "{page}"
    );
    assert!(
        !page.contains("{&quot;"),
        "raw JSON on the audit page: {page}"
    );

    // The favicon is an icon, not a 404.
    let r = stranger.get("/favicon.ico").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/x-icon");
    let icon = r.bytes().await.unwrap();
    assert_eq!(&icon[..4], &[0, 0, 1, 0], "an ICO header");

    // PEM documents end with a newline, so they concatenate.
    for path in ["/pki/ca_chain", "/pki/ca.pem"] {
        let (s, _, pem) = stranger.get_text(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "{path}: {pem}"
        );
        assert!(
            pem.ends_with("-----END CERTIFICATE-----\n"),
            "{path}: {pem:?}"
        );
    }
}
