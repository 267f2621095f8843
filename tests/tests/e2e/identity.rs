//! People and access over HTTP against `kleidia serve`: sign-in, roles,
//! user administration, JWTs, throttling, CSRF and page hardening.

use kleidia_tests::bao::BaoClient;
use kleidia_tests::client::{b64_decode, forge_jwt, Api, Browser, Env, ADMIN_PASSWORD};
use kleidia_tests::shared_bao;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn an_admin_creates_a_helpdesk_and_a_plain_user_who_each_see_what_their_role_allows() {
    let env = Env::start(&[]).await.unwrap();
    let admin = env.browser();
    let r = admin.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/");

    let mut one_time = Vec::new();
    for (name, role) in [("helen", "helpdesk"), ("ulla", "user"), ("otto", "auditor")] {
        let r = admin
            .post_form(
                "/users",
                &[
                    ("username", name),
                    ("display_name", &format!("{name} Example")),
                    ("email", ""),
                    ("role", role),
                ],
            )
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
        let b = env.browser();
        // The one-time password works once, to choose a new one.
        let r = b.login(name, pw).await;
        assert_eq!(r.headers()["location"], "/account/password", "{name}");
        let (s, h, _) = b.get_text("/").await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (StatusCode::SEE_OTHER, "/account/password")
        );
        let new_pw = format!("{name}-chosen-password");
        let r = b
            .post_form(
                "/account/password",
                &[("current", pw), ("new", &new_pw), ("confirm", &new_pw)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // The one-time password no longer signs in; the chosen one does.
        assert_eq!(
            env.browser().login(name, pw).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            env.browser().login(name, &new_pw).await.status(),
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
    let mut user_api = env.api();
    user_api
        .login("ulla", "ulla-chosen-password")
        .await
        .unwrap();
    assert_eq!(user_api.get("/api/auth/me").await.1["user"]["role"], "user");
    assert_eq!(user_api.get("/api/users").await.0, StatusCode::FORBIDDEN);
    let mut helpdesk_api = env.api();
    helpdesk_api
        .login("helen", "helen-chosen-password")
        .await
        .unwrap();
    let (s, list) = helpdesk_api.get("/api/users?q=example").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["users"].as_array().unwrap().len(), 3, "{list}");
    let (s, _) = helpdesk_api
        .post_json(
            "/api/users",
            &json!({"username": "x", "display_name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "helpdesk cannot administer users");
}

#[tokio::test]
async fn a_cookie_from_before_sign_in_is_useless_after_it() {
    let env = Env::start(&[]).await.unwrap();
    env.create_user("eve", "user", "Eve", "eve-password-123")
        .await;
    // An attacker signs in and plants their session cookie in the victim's browser.
    let attacker = env.browser();
    assert_eq!(
        attacker.login("eve", "eve-password-123-2").await.status(),
        StatusCode::SEE_OTHER
    );
    let planted = attacker.cookie_header().unwrap();
    let victim = env.browser();
    victim.set_cookie(&format!("{planted}; Path=/"));
    // A made-up session id is no better.
    let forged = env.browser();
    forged.set_cookie("kleidia_session=AAAAAAAAAAAAAAAAAAAAAA; Path=/");
    assert_eq!(
        forged.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        victim.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let after = victim.cookie_header().unwrap();
    assert_ne!(after, planted, "the session id must change at sign-in");
    let (s, me) = {
        let r = victim.get("/api/auth/me").await;
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["username"], "admin");
    // The planted cookie was ended by the sign-in: it opens nothing now,
    // in particular not the admin's session.
    let replay = Browser::new(&env.app.base_url);
    replay.set_cookie(&format!("{planted}; Path=/"));
    assert_eq!(
        replay.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = replay.get("/users").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}

#[tokio::test]
async fn tokens_with_alg_none_another_algorithm_expired_wrong_audience_or_after_logout_are_refused()
{
    let env = Env::start(&[]).await.unwrap();
    let mut api = env.api();
    let login = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(api.get("/api/auth/me").await.0, StatusCode::OK);

    let (addr, token) = shared_bao();
    let secret = BaoClient::new(&addr, &token)
        .get("secret/data/kleidia/jwt")
        .await
        .unwrap();
    assert_eq!(secret["data"]["data"]["algorithm"], "HS256");
    let key = b64_decode(secret["data"]["data"]["key"].as_str().unwrap());
    assert_eq!(key.len(), 32);

    let base = &env.app.base_url;
    let good = json!({
        "iss": base, "aud": "kleidia-api", "sub": login["user"]["id"], "sid": login["session_id"],
        "iat": now(), "exp": now() + 300,
    });
    // The control: a token we forge correctly is accepted, so the refusals
    // below are about what we changed.
    let control = forge_jwt("HS256", &key, &good);
    assert_eq!(
        Api::with_token(base, &control).get("/api/auth/me").await.0,
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = vec![
        ("alg none", forge_jwt("none", &key, &good)),
        ("HS512 with the right key", forge_jwt("HS512", &key, &good)),
        (
            "wrong key",
            forge_jwt("HS256", b"another key, 32 bytes long......", &good),
        ),
    ];
    let mut c = good.clone();
    c["exp"] = json!(now() - 3600);
    c["iat"] = json!(now() - 7200);
    cases.push(("expired", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    cases.push(("wrong audience", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["iss"] = json!("https://evil.example");
    cases.push(("wrong issuer", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", forge_jwt("HS256", &key, &c)));
    let mut c = good.clone();
    c["sid"] = json!(uuid::Uuid::new_v4());
    cases.push(("unknown session", forge_jwt("HS256", &key, &c)));
    for (what, t) in &cases {
        let (s, body) = Api::with_token(base, t).get("/api/auth/me").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }

    // Logout revokes the issued token and our forged twin at once.
    let (s, _) = api.post_json("/api/auth/logout", &json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        Api::with_token(base, &control).get("/api/auth/me").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn disabling_an_account_ends_its_browser_sessions_and_tokens_at_once() {
    let env = Env::start(&[]).await.unwrap();
    let user = env
        .create_user("dora", "user", "Dora", "dora-password-123")
        .await;
    let id = user["id"].as_str().unwrap();
    let b = env.browser();
    assert_eq!(
        b.login("dora", "dora-password-123-2").await.status(),
        StatusCode::SEE_OTHER
    );
    let mut api = env.api();
    api.login("dora", "dora-password-123-2").await.unwrap();
    assert_eq!(b.get("/api/auth/me").await.status(), StatusCode::OK);

    let admin = env.admin_api().await;
    let (s, v) = admin
        .post_json(&format!("/api/users/{id}/disable"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["disabled"], true);
    assert_eq!(
        b.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    let pool = env.db.pool().await.unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_sessions WHERE user_id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
    // A disabled account cannot sign in, with the usual answer.
    assert_eq!(
        env.browser()
            .login("dora", "dora-password-123-2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let (s, _) = admin
        .post_json(&format!("/api/users/{id}/enable"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED,
        "old sessions stay dead"
    );
    assert_eq!(
        env.browser()
            .login("dora", "dora-password-123-2")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    // The last admin can neither be disabled nor demoted.
    let (_, me) = admin.get("/api/auth/me").await;
    let admin_id = me["user"]["id"].as_str().unwrap();
    let (s, _) = admin
        .patch_json(&format!("/api/users/{admin_id}"), &json!({"role": "user"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_user_cannot_read_another_users_profile_by_changing_the_id() {
    let env = Env::start(&[]).await.unwrap();
    let a = env
        .create_user("anna", "user", "Anna", "anna-password-123")
        .await;
    let z = env
        .create_user("zoe", "user", "Zoe Secret", "zoe-password-1234")
        .await;
    let mut api = env.api();
    api.login("anna", "anna-password-123-2").await.unwrap();
    let (s, mine) = api
        .get(&format!("/api/users/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["username"], "anna");
    let (s, other) = api
        .get(&format!("/api/users/{}", z["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{other}");
    assert!(!other.to_string().contains("Zoe"), "{other}");
    // The same answer as for an id that does not exist.
    let (s, _) = api
        .get(&format!("/api/users/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let b = env.browser();
    b.login("anna", "anna-password-123-2").await;
    let (s, _, body) = b
        .get_text(&format!("/users/{}", z["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!body.contains("Zoe Secret"));
}

/// The name as text: `<` and `>` as character references (either form).
fn escaped(body: &str) -> bool {
    body.contains("&#60;script&#62;alert(1)") || body.contains("&lt;script&gt;alert(1)")
}

#[tokio::test]
async fn a_display_name_with_a_script_tag_renders_escaped_on_every_page_that_shows_it() {
    let env = Env::start(&[]).await.unwrap();
    let evil = "<script>alert(1)</script>";
    let u = env
        .create_user("mallory", "auditor", evil, "mallory-password-1")
        .await;
    let id = u["id"].as_str().unwrap();
    let admin = env.browser();
    admin.login("admin", ADMIN_PASSWORD).await;
    let own = env.browser();
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
    let r = admin
        .post_form(&format!("/users/{id}/reset-password"), &[])
        .await;
    let body = r.text().await.unwrap();
    assert!(!body.contains("<script>alert") && escaped(&body), "{body}");
}

#[tokio::test]
async fn a_cross_site_post_is_refused_and_a_same_origin_one_is_not() {
    let env = Env::start(&[]).await.unwrap();
    let b = env.browser();
    b.login("admin", ADMIN_PASSWORD).await;
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
        assert_eq!(
            b.get("/api/auth/me").await.status(),
            StatusCode::OK,
            "{headers:?}"
        );
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

    let r = b.post_form("/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        b.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn every_page_carries_the_security_headers_and_no_inline_script() {
    let env = Env::start(&[]).await.unwrap();
    let u = env
        .create_user("sam", "user", "Sam", "sam-password-1234")
        .await;
    let anon = env.browser();
    let admin = env.browser();
    admin.login("admin", ADMIN_PASSWORD).await;
    let id = u["id"].as_str().unwrap();
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
async fn failed_sign_ins_lock_the_name_and_the_admin_sees_and_clears_the_lock() {
    let env = Env::start(&[
        ("KLEIDIA_THROTTLE_ACCOUNT_FREE_FAILURES", "3"),
        ("KLEIDIA_THROTTLE_BASE_DELAY_SECS", "600"),
    ])
    .await
    .unwrap();
    env.create_user("kim", "user", "Kim", "kim-password-1234")
        .await;
    let api = env.api();
    let try_login = |user: &'static str, pw: &'static str| {
        let api = &api;
        async move {
            api.post_json(
                "/api/auth/login",
                &json!({"username": user, "password": pw}),
            )
            .await
        }
    };
    // A real name with a wrong password and a name that does not exist get
    // the same answers, failure by failure.
    for i in 0..3 {
        let real = try_login("kim", "wrong-password").await;
        let ghost = try_login("nobody-here", "wrong-password").await;
        assert_eq!(real.0, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(real, ghost, "attempt {i}");
    }
    // Locked now: even the right password waits.
    let locked = try_login("kim", "kim-password-1234-2").await;
    assert_eq!(locked.0, StatusCode::TOO_MANY_REQUESTS, "{:?}", locked.1);
    assert_eq!(locked, try_login("nobody-here", "whatever").await);

    let admin = env.admin_api().await;
    let (s, list) = admin.get("/api/lockouts").await;
    assert_eq!(s, StatusCode::OK);
    let kim = list
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["scope"] == "account" && l["key"] == "kim")
        .unwrap_or_else(|| panic!("{list}"));
    assert!(kim["locked_until"].is_string(), "{kim}");
    let pool = env.db.pool().await.unwrap();
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'login.failed' AND actor_name IN ('kim', 'nobody-here')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failed, 8, "every failed or throttled attempt is audited");

    let (s, _) = admin.delete("/api/lockouts/account/kim").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let ok = try_login("kim", "kim-password-1234-2").await;
    assert_eq!(ok.0, StatusCode::OK, "{:?}", ok.1);
    let cleared: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'login.lockout_clear'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cleared, 1);
}

#[tokio::test]
async fn htmx_requests_get_a_login_redirect_for_401_and_a_toast_for_other_refusals() {
    let env = Env::start(&[]).await.unwrap();
    let anon = env.browser();
    let r = anon
        .http
        .get(anon.url("/users"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["hx-redirect"], "/login");
    // Without htmx the browser is sent to the sign-in page, keeping where it was going.
    let r = anon.get("/users?q=x").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fusers%3Fq%3Dx");
    // …and comes back there after signing in, never to another site.
    let b = env.browser();
    let r = b
        .post_form(
            "/login",
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "/users?q=x"),
            ],
        )
        .await;
    assert_eq!(r.headers()["location"], "/users?q=x");
    let r = env
        .browser()
        .post_form(
            "/login",
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.headers()["location"], "/");

    env.create_user("tim", "user", "Tim", "tim-password-1234")
        .await;
    let tim = env.browser();
    tim.login("tim", "tim-password-1234-2").await;
    let r = tim
        .http
        .get(tim.url("/audit"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["hx-retarget"], "#toasts");
    assert_eq!(r.headers()["hx-reswap"], "beforeend");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("<div class=\"toast error\""), "{body}");
    // A 409 from a form becomes a toast too: an admin cannot disable themselves.
    let admin = env.browser();
    admin.login("admin", ADMIN_PASSWORD).await;
    let (_, me) = {
        let r = admin.get("/api/auth/me").await;
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let r = admin
        .http
        .post(admin.url(&format!(
            "/users/{}/disable",
            me["user"]["id"].as_str().unwrap()
        )))
        .header("origin", &admin.base)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("cannot disable your own account"));
}

#[tokio::test]
async fn the_user_list_pages_by_username_without_gaps() {
    let env = Env::start(&[]).await.unwrap();
    let admin = env.admin_api().await;
    for i in 0..17 {
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": format!("p{i:02}"), "display_name": format!("Person {i}"), "role": "user"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["one_time_password"].as_str().unwrap().len(), 20);
    }
    let (_, first) = admin.get("/api/users?limit=7").await;
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
        let (_, page) = admin
            .get(&format!("/api/users?limit=7&after={after}"))
            .await;
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

#[tokio::test]
async fn malformed_api_input_gets_a_json_error_that_names_the_problem() {
    let env = Env::start(&[]).await.unwrap();
    let http = reqwest::Client::new();
    let url = env.app.url("/api/auth/login");
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
    let (s, v) = env.admin_api().await.get("/api/audit?limit=many").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "bad_request", "{v}");
}

#[tokio::test]
async fn the_cli_resets_a_forgotten_password_ends_sessions_and_prints_a_one_time_password() {
    let env = Env::start(&[]).await.unwrap();
    let b = env.browser();
    b.login("admin", ADMIN_PASSWORD).await;
    let out = kleidia_tests::app::kleidia_command()
        .args([
            "user",
            "reset-password",
            "--username",
            "admin",
            "--generate-password",
        ])
        .env("KLEIDIA_DATABASE_URL", &env.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pw = stdout.trim();
    assert_eq!(pw.len(), 20, "stdout is exactly the password: {stdout:?}");
    assert_eq!(
        b.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.browser().login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = env.browser().login("admin", pw).await;
    assert_eq!(r.headers()["location"], "/account/password");
    let out = kleidia_tests::app::kleidia_command()
        .args([
            "user",
            "reset-password",
            "--username",
            "nobody",
            "--generate-password",
        ])
        .env("KLEIDIA_DATABASE_URL", &env.db.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user \"nobody\""));
}
