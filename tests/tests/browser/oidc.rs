//! OIDC sign-in in Chromium against a real OpenID provider (`oidc-provider`,
//! started by the harness): the button on the sign-in page, the provider's
//! login form, back to Kleidia signed in with the role the person's group
//! maps to; a person in no mapped group sees why they are refused. No card
//! is involved.

use kleidia_tests::browser::Chrome;
use kleidia_tests::oidc::{IdpUser, OidcProvider};
use kleidia_tests::TestApp;

/// From Kleidia's sign-in page through the provider's form, as a person clicks.
async fn sign_in_with_idp(chrome: &Chrome, app: &TestApp, u: &IdpUser) {
    chrome.goto(&app.url("/login")).await.unwrap();
    chrome.click("#oidc-sign-in").await.unwrap();
    chrome.wait_for("#login").await.unwrap();
    chrome.fill("form", "login", &u.username).await.unwrap();
    chrome.fill("form", "password", &u.password).await.unwrap();
    chrome.click("#submit").await.unwrap();
}

#[tokio::test]
async fn people_sign_in_with_the_idp_in_chromium_and_get_the_role_of_their_group() {
    let dir = tempfile::tempdir().unwrap();
    let alice = IdpUser::new("alice", &["kleidia-admins"]);
    let uma = IdpUser::new("uma", &["kleidia-users"]);
    let nora = IdpUser::new("nora", &["marketing"]);
    let idp = OidcProvider::start(dir.path(), &[alice.clone(), uma.clone(), nora.clone()])
        .await
        .unwrap();
    let app = idp.configure(TestApp::builder()).start().await;
    idp.allow_app(app.base_url()).await;

    let chrome = Chrome::start().await.unwrap();
    chrome.goto(&app.url("/login")).await.unwrap();
    let button = chrome.text("#oidc-sign-in").await.unwrap();
    assert_eq!(button, "Sign in with Test IdP");
    chrome.screenshot("oidc-login").await.unwrap();

    // Alice (kleidia-admins) lands signed in as an admin: the Users menu is there.
    sign_in_with_idp(&chrome, &app, &alice).await;
    chrome.wait_for("form[action=\"/logout\"]").await.unwrap();
    let text = chrome.page_text().await;
    assert!(text.contains("alice (IdP)"), "{text}");
    assert!(chrome.exists("a[href=\"/users\"]").await, "{text}");
    chrome.screenshot("oidc-signed-in-admin").await.unwrap();
    chrome.goto(&app.url("/users")).await.unwrap();
    chrome.wait_for("form[action=\"/logout\"]").await.unwrap();
    assert!(chrome.page_text().await.contains("alice"));
    chrome.logout().await.unwrap();
    // Signing out of Kleidia leaves the session at the provider (single
    // sign-on): the next person uses their own browser.
    chrome.close().await;

    // Uma (kleidia-users) is a plain user: no user administration.
    let chrome = Chrome::start().await.unwrap();
    sign_in_with_idp(&chrome, &app, &uma).await;
    chrome.wait_for("form[action=\"/logout\"]").await.unwrap();
    let text = chrome.page_text().await;
    assert!(text.contains("uma (IdP)"), "{text}");
    assert!(!chrome.exists("a[href=\"/users\"]").await, "{text}");
    chrome.logout().await.unwrap();
    chrome.close().await;

    // Nora is in no mapped group: refused with the reason, not signed in.
    let chrome = Chrome::start().await.unwrap();
    sign_in_with_idp(&chrome, &app, &nora).await;
    let err = chrome
        .wait_for("#oidc-error")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(err.contains("no group that has access"), "{err}");
    assert!(!chrome.exists("form[action=\"/logout\"]").await);
    chrome.screenshot("oidc-refused-no-group").await.unwrap();
    chrome.close().await;

    assert_eq!(
        app.db.count("users WHERE oidc_subject IS NOT NULL").await,
        2
    );
    assert_eq!(app.db.count("users WHERE username = 'nora'").await, 0);
}
