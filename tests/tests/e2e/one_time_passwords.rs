//! An account whose password an administrator chose (a one-time password)
//! can do nothing but change it, through the API as on the pages: a token
//! obtained with the one-time password opens no other endpoint, whichever
//! way it is used, until `POST /api/auth/password` succeeds.

use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_one_time_password_opens_only_the_password_change_through_the_api() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let one_time = "given-by-the-admin-1";
    let (s, v) = admin
        .create_user(
            &json!({"username": "otto", "role": "helpdesk", "display_name": "Otto",
                             "email": "otto@corp.example", "password": one_time}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let otto_id = v["user"]["id"].as_str().unwrap().to_string();

    let mut otto = app.api();
    otto.login("otto", one_time).await.unwrap();
    let (s, me) = otto.me().await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["must_change_password"], true, "{me}");

    // The whole API is closed: reading, changing, and pages with the token.
    let devices_before = app.db.count("devices").await;
    let serial = 31_000_001;
    let refused = [
        ("GET /api/users", otto.users("").await),
        ("GET /api/devices", otto.devices("").await),
        ("GET /api/my/devices", otto.my_devices("").await),
        (
            "POST /api/devices",
            otto.register_device(serial, "5.7.1").await,
        ),
        (
            "GET /api/settings/policy",
            otto.get("/api/settings/policy").await,
        ),
        ("GET /users (page, Bearer)", otto.get("/users").await),
    ];
    for (what, (s, body)) in &refused {
        assert_eq!(*s, StatusCode::FORBIDDEN, "{what}: {body}");
        if what.contains("/api/") {
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("one-time password"),
                "{what}: {body}"
            );
        }
    }
    assert_eq!(app.db.count("devices").await, devices_before);

    // A browser session with the one-time password gets no API either.
    let b = app.browser();
    let r = b.login("otto", one_time).await;
    assert_eq!(r.headers()["location"], "/account/password");
    let r = b.get("/api/my/devices").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A wrong current password changes nothing and is audited.
    let (s, v) = otto
        .change_password("not-the-password", "otto-chose-this-one")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        app.db
            .count("audit_log WHERE action = 'user.password_change_failed'")
            .await,
        1
    );
    assert_eq!(otto.devices("").await.0, StatusCode::FORBIDDEN);
    // A new password the policy refuses changes nothing either.
    let (s, v) = otto.change_password(one_time, "short").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(otto.devices("").await.0, StatusCode::FORBIDDEN);

    // The change itself: 204, audited, the browser session with the
    // one-time password ends, and the API opens for this session.
    let (s, v) = otto.change_password(one_time, "otto-chose-this-one").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let changes = app.audit_details("user.password_change").await;
    assert!(
        changes
            .iter()
            .any(|d| d["via"] == "api" && d["other_sessions_ended"] == 1),
        "{changes:?}"
    );
    assert_eq!(
        b.get("/api/my/devices").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = otto.devices("").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, me) = otto.me().await;
    assert_eq!(me["user"]["must_change_password"], false, "{me}");
    assert_eq!(
        app.api().post_login("otto", one_time).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = admin.user(&otto_id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["must_change_password"], false, "{v}");
}
