//! User administration over HTTP against `kleidia serve`: what each role
//! may see, disabling accounts, profiles by id, and the paged user list.

use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn an_admin_creates_a_helpdesk_and_a_plain_user_who_each_see_what_their_role_allows() {
    let app = TestApp::spawn().await;
    let admin = app.browser();
    let r = admin.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/");

    let mut one_time = Vec::new();
    for (name, role) in [("helen", "helpdesk"), ("ulla", "user"), ("otto", "auditor")] {
        let r = admin
            .create_user(name, &format!("{name} Example"), "", role)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let page = r.text().await.unwrap();
        let pw = page
            .split("id=\"one-time-password\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap()
            .to_string();
        assert_eq!(pw.len(), 20, "{page}");
        one_time.push((name, pw));
    }

    // What each role gets, page by page: (path, admin, helpdesk, user, auditor).
    let expect: &[(&str, [u16; 4])] = &[
        ("/", [200, 200, 200, 200]),
        ("/users", [200, 200, 403, 200]),
        ("/users/new", [200, 403, 403, 403]),
        ("/audit", [200, 403, 403, 200]),
        ("/lockouts", [200, 403, 403, 403]),
    ];
    let mut browsers = vec![("admin", admin)];
    for (name, pw) in &one_time {
        let b = app.browser();
        // The one-time password works once, to choose a new one.
        let r = b.login(name, pw).await;
        assert_eq!(r.headers()["location"], "/account/password", "{name}");
        let (s, h, _) = b.get_text("/").await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (StatusCode::SEE_OTHER, "/account/password")
        );
        let new_pw = format!("{name}-chosen-password");
        let r = b.change_password(pw, &new_pw).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // The one-time password no longer signs in; the chosen one does.
        assert_eq!(
            app.browser().login(name, pw).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.browser().login(name, &new_pw).await.status(),
            StatusCode::SEE_OTHER
        );
        browsers.push((name, b));
    }
    for (path, codes) in expect {
        for (i, (name, b)) in browsers.iter().enumerate() {
            let (s, _, body) = b.get_text(path).await;
            assert_eq!(s.as_u16(), codes[i], "{name} GET {path}: {body}");
        }
    }
    // Navigation by role.
    let (_, _, home) = browsers[2].1.get_text("/").await;
    assert!(
        home.contains("My profile")
            && !home.contains("href=\"/users\"")
            && !home.contains("/audit"),
        "{home}"
    );
    let (_, _, home) = browsers[3].1.get_text("/").await;
    assert!(
        home.contains("href=\"/audit\"") && !home.contains("/lockouts"),
        "{home}"
    );

    // The same through the API with a JWT.
    let mut user_api = app.api();
    user_api
        .login("ulla", "ulla-chosen-password")
        .await
        .unwrap();
    assert_eq!(user_api.me().await.1["user"]["role"], "user");
    assert_eq!(user_api.users("").await.0, StatusCode::FORBIDDEN);
    let mut helpdesk_api = app.api();
    helpdesk_api
        .login("helen", "helen-chosen-password")
        .await
        .unwrap();
    let (s, list) = helpdesk_api.users("q=example").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["users"].as_array().unwrap().len(), 3, "{list}");
    let (s, _) = helpdesk_api
        .create_user(&json!({"username": "x", "display_name": "x", "role": "admin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "helpdesk cannot administer users");
}

#[tokio::test]
async fn disabling_an_account_ends_its_browser_sessions_and_tokens_at_once() {
    let app = TestApp::spawn().await;
    let dora = app
        .create_user("dora", "user", "Dora", "dora-password-123")
        .await;
    let id = dora.id.as_str();
    let b = app.browser();
    assert_eq!(
        b.login("dora", "dora-password-123-2").await.status(),
        StatusCode::SEE_OTHER
    );
    let mut api = app.api();
    api.login("dora", "dora-password-123-2").await.unwrap();
    assert_eq!(b.me().await.0, StatusCode::OK);

    let admin = app.admin_api().await;
    let (s, v) = admin.disable_user(id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["disabled"], true);
    assert_eq!(b.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.me().await.0, StatusCode::UNAUTHORIZED);
    let left = app
        .db
        .count(&format!("user_sessions WHERE user_id = '{id}'::uuid"))
        .await;
    assert_eq!(left, 0);
    // A disabled account cannot sign in, with the usual answer.
    assert_eq!(
        app.browser()
            .login("dora", "dora-password-123-2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let (s, _) = admin.enable_user(id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b.me().await.0,
        StatusCode::UNAUTHORIZED,
        "old sessions stay dead"
    );
    assert_eq!(
        app.browser()
            .login("dora", "dora-password-123-2")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    // The last admin can neither be disabled nor demoted.
    let (_, me) = admin.me().await;
    let admin_id = me["user"]["id"].as_str().unwrap();
    let (s, _) = admin.update_user(admin_id, &json!({"role": "user"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_user_cannot_read_another_users_profile_by_changing_the_id() {
    let app = TestApp::spawn().await;
    let anna = app
        .create_user("anna", "user", "Anna", "anna-password-123")
        .await;
    let zoe = app
        .create_user("zoe", "user", "Zoe Secret", "zoe-password-1234")
        .await;
    let mut api = app.api();
    api.login("anna", "anna-password-123-2").await.unwrap();
    let (s, mine) = api.user(&anna.id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["username"], "anna");
    let (s, other) = api.user(&zoe.id).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{other}");
    assert!(!other.to_string().contains("Zoe"), "{other}");
    // The same answer as for an id that does not exist.
    let (s, _) = api.user(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let b = app.browser();
    b.login("anna", "anna-password-123-2").await;
    let (s, _, body) = b.get_text(&format!("/users/{}", zoe.id)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!body.contains("Zoe Secret"));
}

#[tokio::test]
async fn the_user_list_pages_by_username_without_gaps() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    for i in 0..17 {
        let (s, v) = admin
            .create_user(&json!({"username": format!("p{i:02}"), "display_name": format!("Person {i}"), "role": "user"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["one_time_password"].as_str().unwrap().len(), 20);
    }
    let (_, first) = admin.users("limit=7").await;
    let names = |v: &Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    };
    let mut all = names(&first);
    assert_eq!(all.len(), 7);
    let mut next = first["next_after"].as_str().map(String::from);
    let mut pages = 1;
    while let Some(after) = next {
        let (_, page) = admin.users(&format!("limit=7&after={after}")).await;
        assert!(names(&page).len() <= 7);
        all.extend(names(&page));
        next = page["next_after"].as_str().map(String::from);
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (0..17).map(|i| format!("p{i:02}")).collect();
    expected.insert(0, "admin".into());
    assert_eq!(all, expected);
}
