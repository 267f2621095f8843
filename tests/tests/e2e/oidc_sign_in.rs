//! OIDC sign-in (issue 18 §1) against a real OpenID provider
//! (`oidc-provider`, started by the harness): users made at the first
//! sign-in with the role their group maps to, and the attacks: a wrong
//! state, a callback in another browser, a nonce from another sign-in, an
//! expired or badly signed id_token, a person in no mapped group, a person
//! disabled at the provider (refused, and their session ended at the next
//! re-check), key rotation, and the break-glass admin while the provider is
//! down. Every refusal leaves nothing behind and is audited.

use std::time::Duration;

use kleidia_tests::oidc::{self, IdpUser, OidcProvider};
use kleidia_tests::{wait_until, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

struct Setup {
    app: TestApp,
    idp: OidcProvider,
    _dir: tempfile::TempDir,
}

async fn setup(users: &[IdpUser], extra: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let idp = OidcProvider::start(dir.path(), users)
        .await
        .expect("start the OpenID provider");
    let mut b = idp.configure(TestApp::builder());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    let app = b.start().await;
    idp.allow_app(app.base_url()).await;
    Setup {
        app,
        idp,
        _dir: dir,
    }
}

/// The `login.failed` rows of OIDC sign-ins: their reasons, in order.
async fn oidc_refusals(app: &TestApp) -> Vec<String> {
    app.audit_details("login.failed")
        .await
        .into_iter()
        .filter(|d| d["via"] == "oidc")
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    oidc::AtCallback { url: url.into() }.with_param(name, value)
}

#[tokio::test]
async fn people_in_mapped_groups_are_created_at_first_sign_in_with_their_role_which_follows_the_idp(
) {
    let alice = IdpUser::new("alice", &["kleidia-admins", "staff"]);
    let harry = IdpUser::new("harry", &["kleidia-helpdesk"]);
    let s = setup(&[alice.clone(), harry.clone()], &[]).await;
    let app = &s.app;

    // The login page offers the provider.
    let (st, _, page) = app.browser().get_text("/login").await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("Sign in with Test IdP"), "{page}");

    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, &alice.username, &alice.password).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert!(page.contains("You are signed in"), "{page}");
    let (st, me) = b.me().await;
    assert_eq!(st, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["user"]["role"], "admin");
    assert_eq!(me["user"]["display_name"], "alice (IdP)");
    assert_eq!(me["user"]["email"], "alice@idp.example");
    // An admin page opens.
    assert_eq!(b.get("/users").await.status(), StatusCode::OK);

    let h = app.browser();
    assert_eq!(
        oidc::sign_in(&h, &harry.username, &harry.password).await.0,
        StatusCode::OK
    );
    let (_, me) = h.me().await;
    assert_eq!(me["user"]["role"], "helpdesk");
    assert_eq!(h.get("/users/new").await.status(), StatusCode::FORBIDDEN);

    // The accounts are tied to the provider's subject and have no password.
    assert_eq!(
        app.db
            .count("users WHERE oidc_subject IN ('alice', 'harry') AND password_hash = '!oidc'")
            .await,
        2
    );
    let pw = app.browser().login("alice", "!oidc").await;
    assert_eq!(pw.status(), StatusCode::UNAUTHORIZED);
    // The refresh token is stored sealed, never in clear.
    let pool = app.db.pool().await.unwrap();
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT refresh_token FROM oidc_sessions WHERE refresh_token IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(sealed.len() >= 2);

    // Harry moves to the admins at the IdP: his next sign-in follows.
    s.idp
        .add_user(&IdpUser {
            groups: vec!["kleidia-admins".into()],
            ..harry.clone()
        })
        .await;
    let h2 = app.browser();
    assert_eq!(
        oidc::sign_in(&h2, &harry.username, &harry.password).await.0,
        StatusCode::OK
    );
    assert_eq!(h2.me().await.1["user"]["role"], "admin");
    assert_eq!(app.db.count("users WHERE username = 'harry'").await, 1);

    let created = app.audit_details("user.created").await;
    assert_eq!(created.iter().filter(|d| d["via"] == "oidc").count(), 2);
    let ok: Vec<Value> = app
        .audit_details("login.ok")
        .await
        .into_iter()
        .filter(|d| d["via"] == "oidc")
        .collect();
    assert_eq!(ok.len(), 3, "{ok:?}");
    assert_eq!(app.audit_details("user.role_changed").await.len(), 1);
    assert!(oidc_refusals(app).await.is_empty());
}

#[tokio::test]
async fn a_wrong_state_a_callback_in_another_browser_and_a_nonce_of_another_sign_in_are_refused() {
    let mallory = IdpUser::new("mallory", &["kleidia-admins"]);
    let s = setup(std::slice::from_ref(&mallory), &[]).await;
    let app = &s.app;

    // Wrong state: the answer does not belong to this browser's sign-in.
    let b = app.browser();
    let auth = oidc::start(&b).await.unwrap();
    let at = oidc::at_provider(&b, &auth, "mallory", &mallory.password)
        .await
        .unwrap();
    let (st, page) = oidc::callback(&b, &at.with_param("state", "forged-state")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("does not belong"), "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    let (code, state) = (at.param("code").unwrap(), at.param("state").unwrap());

    // A code carried to another browser (no pending sign-in there) opens nothing.
    let b = app.browser();
    let auth = oidc::start(&b).await.unwrap();
    let at = oidc::at_provider(&b, &auth, "mallory", &mallory.password)
        .await
        .unwrap();
    let other = app.browser();
    let (st, _) = oidc::callback(&other, &at.url).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(other.me().await.0, StatusCode::UNAUTHORIZED);

    // A nonce of another sign-in put into this one's authorization request
    // (PKCE and state still match): the id_token carries the other nonce.
    let victim = app.browser();
    let victim_auth = oidc::start(&victim).await.unwrap();
    let other_nonce = oidc::AtCallback { url: victim_auth }
        .param("nonce")
        .unwrap();
    let b = app.browser();
    let auth = oidc::start(&b).await.unwrap();
    let at = oidc::at_provider(
        &b,
        &with_param(&auth, "nonce", &other_nonce),
        "mallory",
        &mallory.password,
    )
    .await
    .unwrap();
    let (st, page) = oidc::callback(&b, &at.url).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("not issued for this sign-in"), "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);

    // Nothing was created, no session exists, and the refusals in a browser
    // with a pending sign-in are audited.
    assert_eq!(app.db.count("users WHERE username = 'mallory'").await, 0);
    assert_eq!(app.db.count("oidc_sessions").await, 0);
    assert_eq!(
        oidc_refusals(app).await,
        vec!["state_mismatch", "nonce_mismatch"]
    );
    // The code, the state and the client secret reach neither the log nor
    // the audit log.
    let log = app.log();
    for secret in [code.as_str(), state.as_str(), oidc::CLIENT_SECRET] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} in the log: {leaks:#?}");
        assert_eq!(
            app.db
                .count(&format!("audit_log WHERE details::text LIKE '%{secret}%'"))
                .await,
            0
        );
    }
    // The legitimate flow still works afterwards.
    let b = app.browser();
    assert_eq!(
        oidc::sign_in(&b, "mallory", &mallory.password).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_expired_or_badly_signed_id_token_is_refused_and_audited() {
    let eve = IdpUser::new("eve", &["kleidia-admins"]);
    let s = setup(std::slice::from_ref(&eve), &[]).await;
    let app = &s.app;

    s.idp.expire_next_token().await;
    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, "eve", &eve.password).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("has expired"), "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);

    s.idp.tamper_next_token().await;
    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, "eve", &eve.password).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("not validly signed"), "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(app.db.count("users WHERE username = 'eve'").await, 0);
    assert_eq!(app.db.count("user_sessions").await, 0);
    assert_eq!(
        oidc_refusals(app).await,
        vec!["id_token_expired", "bad_signature"]
    );
}

#[tokio::test]
async fn a_person_in_no_mapped_group_is_refused_nothing_is_created_and_it_is_audited() {
    let nora = IdpUser::new("nora", &["marketing", "everyone"]);
    let s = setup(std::slice::from_ref(&nora), &[]).await;
    let app = &s.app;
    let users_before = app.db.count("users").await;

    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, "nora", &nora.password).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("no group that has access"), "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.count("users").await, users_before);
    assert_eq!(app.db.count("user_sessions").await, 0);
    let refusals: Vec<Value> = app
        .audit_details("login.failed")
        .await
        .into_iter()
        .filter(|d| d["via"] == "oidc")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["reason"], "no_mapped_group");
    assert_eq!(
        refusals[0]["groups"],
        serde_json::json!(["marketing", "everyone"])
    );
}

#[tokio::test]
async fn a_person_disabled_at_the_idp_cannot_sign_in_and_their_session_ends_at_the_next_recheck() {
    let dana = IdpUser::new("dana", &["kleidia-users"]);
    let rob = IdpUser::new("rob", &["kleidia-users"]);
    let s = setup(
        &[dana.clone(), rob.clone()],
        &[("KLEIDIA_OIDC_RECHECK_SECS", "1")],
    )
    .await;
    let app = &s.app;

    let b = app.browser();
    assert_eq!(
        oidc::sign_in(&b, "dana", &dana.password).await.0,
        StatusCode::OK
    );
    let r = app.browser();
    assert_eq!(
        oidc::sign_in(&r, "rob", &rob.password).await.0,
        StatusCode::OK
    );
    // Re-checks pass while the accounts are fine: sessions stay.
    let pool = app.db.pool().await.unwrap();
    let pool = &pool;
    assert!(
        wait_until(Duration::from_secs(30), || async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM oidc_sessions WHERE last_checked_at IS NOT NULL",
            )
            .fetch_one(pool)
            .await
            .unwrap()
                >= 2
        })
        .await,
        "the sessions were re-checked"
    );
    assert_eq!(b.me().await.0, StatusCode::OK);

    // Dana is disabled and Rob removed at the IdP.
    s.idp.disable("dana").await;
    s.idp.remove("rob").await;
    let (bb, rr) = (&b, &r);
    assert!(
        wait_until(Duration::from_secs(30), || async move {
            bb.me().await.0 == StatusCode::UNAUTHORIZED
                && rr.me().await.0 == StatusCode::UNAUTHORIZED
        })
        .await,
        "the sessions end at the next re-check"
    );
    let ended = app.audit_details("session.ended_by_idp").await;
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(ended.iter().all(|d| d["reason"] == "refresh_refused"));
    assert_eq!(app.db.count("user_sessions").await, 0);

    // And Dana cannot sign in again: the provider refuses her.
    let b = app.browser();
    let auth = oidc::start(&b).await.unwrap();
    assert!(oidc::at_provider(&b, &auth, "dana", &dana.password)
        .await
        .is_err());
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    // Her Kleidia account stays (its devices and history matter) but holds
    // no session.
    assert_eq!(app.db.count("users WHERE username = 'dana'").await, 1);
}

#[tokio::test]
async fn an_id_token_signed_with_a_rotated_key_is_accepted() {
    let kim = IdpUser::new("kim", &["kleidia-users"]);
    let s = setup(
        std::slice::from_ref(&kim),
        &[("KLEIDIA_OIDC_JWKS_REFRESH_MIN_SECS", "0")],
    )
    .await;
    let app = &s.app;
    let b = app.browser();
    assert_eq!(
        oidc::sign_in(&b, "kim", &kim.password).await.0,
        StatusCode::OK
    );

    // The app holds the provider's first key set; the provider now signs
    // with a new key.
    let kid = s.idp.rotate_key().await;
    assert!(!kid.is_empty());
    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, "kim", &kim.password).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(b.me().await.1["user"]["username"], "kim");
    assert!(oidc_refusals(app).await.is_empty());
    assert!(
        app.log().contains("fetching the provider's keys again"),
        "{}",
        app.log()
    );
}

#[tokio::test]
async fn with_the_idp_down_oidc_sign_in_says_so_and_the_break_glass_admin_still_signs_in() {
    let kim = IdpUser::new("kim", &["kleidia-users"]);
    let mut s = setup(std::slice::from_ref(&kim), &[]).await;
    s.idp.stop();
    let app = &s.app;

    let b = app.browser();
    let r = b.get("/auth/oidc/start").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let page = r.text().await.unwrap();
    assert!(page.contains("cannot be reached"), "{page}");
    assert!(page.contains("sign in with a local account"), "{page}");
    assert_eq!(
        app.db.count("users WHERE oidc_subject IS NOT NULL").await,
        0
    );

    // The local admin needs nothing from the provider.
    let r = b.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (st, me) = b.me().await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["user"]["role"], "admin");
    assert_eq!(b.get("/users").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idp_account_named_like_the_local_admin_does_not_take_it_over() {
    let fake_admin = IdpUser::new("admin", &["kleidia-admins"]);
    let s = setup(std::slice::from_ref(&fake_admin), &[]).await;
    let app = &s.app;
    let b = app.browser();
    let (st, page) = oidc::sign_in(&b, "admin", &fake_admin.password).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.db.count("users WHERE oidc_subject IS NOT NULL").await,
        0
    );
    assert_eq!(oidc_refusals(app).await, vec!["username_taken"]);
    // The local admin is untouched.
    assert_eq!(
        app.browser().login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
}
