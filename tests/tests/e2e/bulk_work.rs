//! Bulk work (issue 18 §2): CSV imports of users and of device-to-owner
//! assignments with a per-row preview, nothing applied while a row fails
//! unless the admin accepts a partial import; bulk suspend, revoke and
//! mark-lost over the devices page's filters, confirmed by count and by the
//! serials shown, each batch audited as one with its members. And the
//! attacks: non-admins, hostile CSV files, and a bulk action stretched to
//! devices outside the confirmed filter.

use kleidia_tests::client::Api;
use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn set_state(app: &TestApp, serials: &[u32], state: &str) {
    let pool = app.db.pool().await.unwrap();
    for s in serials {
        sqlx::query("UPDATE devices SET state = $2 WHERE serial = $1")
            .bind(i64::from(*s))
            .bind(state)
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn usernames(app: &TestApp) -> Vec<String> {
    let pool = app.db.pool().await.unwrap();
    sqlx::query_scalar("SELECT username FROM users ORDER BY username")
        .fetch_all(&pool)
        .await
        .unwrap()
}

async fn owner(app: &TestApp, serial: u32) -> Option<String> {
    app.device_row(serial).await.2
}

async fn states(app: &TestApp, serials: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    for s in serials {
        out.push(app.device_row(*s).await.0);
    }
    out
}

/// POST a CSV to an import route.
async fn import(api: &Api, path: &str, csv: &str) -> (StatusCode, Value) {
    let r = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn outcomes(v: &Value) -> Vec<(u64, bool, String)> {
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {v}"))
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["ok"].as_bool().unwrap(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const USERS_CSV: &str = "username,display_name,email,role\n\
    dana,Dana Scully,dana@corp.example,user\n\
    erin,Erin,erin@corp.example,helpdesk\n\
    mallory,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",m@corp.example,user\n\
    admin,Second Admin,,admin\n\
    frank,Frank,frank@corp.example,superuser\n\
    dana,Dana Again,dana2@corp.example,user\n\
    gina,Gina\n";

#[tokio::test]
async fn a_users_import_previews_every_row_and_applies_only_when_told() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let before = usernames(&app).await;

    // The preview: every row with its outcome, nothing created.
    let (s, v) = import(&admin, "/api/import/users?dry_run=true", USERS_CSV).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = outcomes(&v);
    assert_eq!(rows.len(), 7, "{v}");
    assert_eq!((rows[0].0, rows[0].1), (2, true));
    assert_eq!(rows[0].2, "create dana (user, Dana Scully)");
    assert!(rows[1].1);
    assert!(
        !rows[2].1 && rows[2].2.contains("starts with '='"),
        "{:?}",
        rows[2]
    );
    assert!(
        !rows[3].1 && rows[3].2.contains("already taken"),
        "{:?}",
        rows[3]
    );
    assert!(
        !rows[4].1 && rows[4].2.contains("role must be"),
        "{:?}",
        rows[4]
    );
    assert!(
        !rows[5].1 && rows[5].2.contains("appears twice"),
        "{:?}",
        rows[5]
    );
    assert_eq!(
        (rows[6].1, rows[6].2.as_str()),
        (false, "expected 4 fields, found 2")
    );
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(2), Some(5)));
    assert_eq!(usernames(&app).await, before);

    // Applying while rows fail: refused with the same report, nothing created, audited.
    let (s, v) = import(&admin, "/api/import/users", USERS_CSV).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "import_refused");
    assert!(
        v["message"].as_str().unwrap().contains("5 of 7 rows"),
        "{v}"
    );
    assert_eq!(outcomes(&v["report"]).len(), 7);
    assert_eq!(usernames(&app).await, before);
    let refused = app.audit_details("import.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["failed"], 5);
    // The file itself is not in the audit log.
    assert!(
        !refused[0].to_string().contains("HYPERLINK"),
        "{}",
        refused[0]
    );

    // Accepting a partial import: the good rows, in one batch.
    let (s, v) = import(&admin, "/api/import/users?accept_partial=true", USERS_CSV).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["applied"], true);
    let mut expected = before.clone();
    expected.extend(["dana".to_string(), "erin".to_string()]);
    expected.sort();
    assert_eq!(usernames(&app).await, expected);
    let otps = v["one_time_passwords"].as_array().unwrap();
    assert_eq!(otps.len(), 2);
    let batch = v["batch"].as_str().unwrap().to_string();
    let imports = app.audit_details("user.import").await;
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0]["batch"], batch.as_str());
    assert_eq!(imports[0]["members"].as_array().unwrap().len(), 2);
    assert_eq!(imports[0]["left_out"].as_array().unwrap().len(), 5);
    let created: Vec<Value> = app
        .audit_details("user.create")
        .await
        .into_iter()
        .filter(|d| d["batch"] == batch.as_str())
        .collect();
    assert_eq!(created.len(), 2);
    // No one-time password reaches the audit log.
    let pw = otps[0]["password"].as_str().unwrap();
    let pool = app.db.pool().await.unwrap();
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE details::text LIKE $1")
            .bind(format!("%{pw}%"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0);

    // The person signs in with it and must choose their own.
    let who = otps[0]["username"].as_str().unwrap();
    let b = app.browser();
    let r = b.login(who, pw).await;
    assert_eq!(r.headers()["location"], "/account/password");
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE username = 'erin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(role, "helpdesk");
}

#[tokio::test]
async fn hostile_csv_files_are_refused_whole_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let before = usernames(&app).await;
    let cases: [(&str, String, &str); 4] = [
        (
            "/api/import/users",
            "user,name\nalice,Alice\n".to_string(),
            "first line must be exactly: username,display_name,email,role",
        ),
        (
            "/api/import/users",
            format!(
                "username,display_name,email,role\n{}",
                "x,y,z@corp.example,user\n".repeat(9000)
            ),
            "larger than 200 KiB",
        ),
        (
            "/api/import/assignments",
            format!("serial,owner\n{}", "1,admin\n".repeat(1001)),
            "more than 1000 rows",
        ),
        ("/api/import/users", "".to_string(), "no header line"),
    ];
    for (path, body, why) in cases {
        let (s, v) = import(&admin, path, &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    // Not UTF-8.
    let r = admin
        .http
        .post(format!("{}/api/import/users", admin.base))
        .bearer_auth(admin.token.as_deref().unwrap())
        .body(vec![0xffu8, 0xfe, 0x00, 0x41])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("not UTF-8"));

    // A formula in any cell fails its row, even with a partial import accepted:
    // an all-bad file applies nothing.
    let formulas = "username,display_name,email,role\n\
                    @evil,Eve,e@corp.example,user\n\
                    eve,+cmd|' /C calc'!A0,e@corp.example,user\n\
                    eve2,Eve,-2+3@corp.example,user\n";
    let (s, v) = import(&admin, "/api/import/users?accept_partial=true", formulas).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(outcomes(&v["report"])
        .iter()
        .all(|(_, ok, m)| !ok && m.contains("formula")));
    assert_eq!(usernames(&app).await, before);
    assert_eq!(app.audit_details("import.refused").await.len(), 6);
    assert!(app.audit_details("user.import").await.is_empty());
}

#[tokio::test]
async fn assignments_import_moves_devices_in_one_audited_batch() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let alice = app
        .create_user("alice", "user", "Alice", "alice-long-password-1")
        .await;
    app.create_user("bob", "user", "Bob", "bob-long-password-1")
        .await;
    for serial in [64_001, 64_002, 64_003] {
        let (s, v) = admin.register_device(serial, "5.7.1").await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let csv = "serial,owner\n64001,alice\n64002,bob\n64003,nobody\n64999,alice\nabc,bob\n";
    let (s, v) = import(&admin, "/api/import/assignments?dry_run=true", csv).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = outcomes(&v);
    assert!(
        rows[0].1 && rows[0].2.starts_with("assign 64001 to alice"),
        "{rows:?}"
    );
    assert!(rows[1].1);
    assert_eq!(rows[2].2, "no user named nobody");
    assert_eq!(rows[3].2, "no device with serial 64999");
    assert!(rows[4].2.starts_with("serial:"), "{rows:?}");
    let admin_id = owner(&app, 64_001).await;

    // Rows fail: nothing moves.
    let (s, _) = import(&admin, "/api/import/assignments", csv).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(owner(&app, 64_001).await, admin_id);

    // Only the good rows, all applied together.
    let good = "serial,owner\n64001,alice\n64002,bob\n";
    let (s, v) = import(&admin, "/api/import/assignments", good).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        owner(&app, 64_001).await.as_deref(),
        Some(alice.id.as_str())
    );
    assert_ne!(owner(&app, 64_002).await, admin_id);
    assert_eq!(owner(&app, 64_003).await, admin_id);
    let batch = app.audit_details("device.import_assignments").await;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0]["members"].as_array().unwrap().len(), 2);
    let assigned: Vec<Value> = app
        .audit_details("device.assign")
        .await
        .into_iter()
        .filter(|d| d["batch"] == batch[0]["batch"])
        .collect();
    assert_eq!(assigned.len(), 2);

    // The same file again: already so, nothing to change.
    let (s, v) = import(&admin, "/api/import/assignments?dry_run=true", good).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(outcomes(&v)
        .iter()
        .all(|(_, ok, m)| *ok && m.contains("no change")));
}

#[tokio::test]
async fn non_admins_can_neither_import_nor_bulk_act_and_are_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let h = app
        .create_user("harry", "helpdesk", "Harry", "harry-long-password-1")
        .await;
    let mut helpdesk = app.api();
    helpdesk.login("harry", &h.password).await.unwrap();
    let (s, v) = admin.register_device(65_001, "5.7.1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    set_state(&app, &[65_001], "active").await;
    let before = usernames(&app).await;

    let (s, _) = import(
        &helpdesk,
        "/api/import/users?accept_partial=true",
        "username,display_name,email,role\nzed,Zed,,admin\n",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = helpdesk
        .post_json(
            "/api/devices/bulk/preview",
            &json!({"action": "suspend", "filter": {"firmware": "5.7.1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = helpdesk
        .post_json(
            "/api/devices/bulk",
            &json!({"action": "suspend", "reason": "r", "filter": {"firmware": "5.7.1"},
                    "serials": [65001], "count": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(usernames(&app).await, before);
    assert_eq!(states(&app, &[65_001]).await, ["active"]);
    let refused = app.audit_details("request.role_refused").await;
    let paths: Vec<&str> = refused
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/import/users",
            "/api/devices/bulk/preview",
            "/api/devices/bulk"
        ]
    );
}

#[tokio::test]
async fn a_bulk_action_reaches_exactly_the_confirmed_devices_of_the_filter() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    let old = [66_001, 66_002, 66_003];
    let new = [66_101, 66_102];
    for s in old {
        admin.register_device(s, "5.4.3").await;
    }
    for s in new {
        admin.register_device(s, "5.7.1").await;
    }
    set_state(&app, &[66_001, 66_002, 66_101, 66_102], "active").await;
    set_state(&app, &[66_003], "suspended").await;

    // No filter is no selection.
    let (s, v) = admin
        .post_json(
            "/api/devices/bulk/preview",
            &json!({"action": "suspend", "filter": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let filter = json!({"firmware": "5.4.3"});
    let (s, p) = admin
        .post_json(
            "/api/devices/bulk/preview",
            &json!({"action": "suspend", "filter": filter}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (p["count"].as_u64(), p["changing"].as_u64()),
        (Some(3), Some(2))
    );
    let serials: Vec<u64> = p["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, [66_001, 66_002, 66_003]);

    // The attacker's request: the filter's serials plus one outside it.
    let (s, v) = admin
        .post_json(
            "/api/devices/bulk",
            &json!({"action": "suspend", "reason": "stolen batch", "filter": filter,
                    "serials": [66_001, 66_002, 66_003, 66_101], "count": 4}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("1 listed serial(s) outside it"),
        "{v}"
    );
    // A count that is not the list's.
    let (s, v) = admin
        .post_json(
            "/api/devices/bulk",
            &json!({"action": "suspend", "reason": "r", "filter": filter,
                    "serials": [66_001, 66_002, 66_003], "count": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A device that entered the filter after the preview.
    admin.register_device(66_004, "5.4.3").await;
    let (s, v) = admin
        .post_json(
            "/api/devices/bulk",
            &json!({"action": "suspend", "reason": "r", "filter": filter,
                    "serials": serials, "count": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        states(&app, &[66_001, 66_002, 66_003, 66_004, 66_101, 66_102]).await,
        [
            "active",
            "active",
            "suspended",
            "registered",
            "active",
            "active"
        ]
    );
    let refused = app.audit_details("device.bulk_refused").await;
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(app.audit_details("device.bulk_suspend").await.is_empty());

    // Confirmed as previewed (again, with the new device): done, one batch.
    let (_, p) = admin
        .post_json(
            "/api/devices/bulk/preview",
            &json!({"action": "suspend", "filter": filter}),
        )
        .await;
    let serials: Vec<u64> = p["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_u64().unwrap())
        .collect();
    let (s, r) = admin
        .post_json(
            "/api/devices/bulk",
            &json!({"action": "suspend", "reason": "firmware 5.4.3 recall", "filter": filter,
                    "serials": serials, "count": p["count"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["changed"].as_u64(),
            r["skipped"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(
        states(&app, &[66_001, 66_002, 66_003, 66_004, 66_101, 66_102]).await,
        [
            "suspended",
            "suspended",
            "suspended",
            "registered",
            "active",
            "active"
        ]
    );
    let batches = app.audit_details("device.bulk_suspend").await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["members"].as_array().unwrap().len(), 4);
    assert_eq!(batches[0]["reason"], "firmware 5.4.3 recall");
    let members: Vec<Value> = app
        .audit_details("device.suspended")
        .await
        .into_iter()
        .filter(|d| d["batch"] == r["batch"])
        .collect();
    assert_eq!(members.len(), 2);
}

#[tokio::test]
async fn the_bulk_page_names_the_count_and_reports_each_device() {
    let app = TestApp::spawn().await;
    let admin = app.admin_api().await;
    for s in [67_001, 67_002] {
        admin.register_device(s, "5.7.1").await;
    }
    admin.register_device(67_003, "5.4.3").await;
    let b = app.admin_browser().await;
    let (s, _, html) = b.get_text("/devices?firmware=5.7.1").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("/devices/bulk?action=suspend&firmware=5.7.1"),
        "{html}"
    );

    let (s, _, html) = b.get_text("/devices/bulk?action=lost&firmware=5.7.1").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("2 devices match; 2 will change"), "{html}");
    assert!(html.contains("Mark lost 2 devices"), "{html}");
    assert!(
        html.contains("name=\"serials\" value=\"67001,67002\""),
        "{html}"
    );

    let r = b
        .post_form(
            "/devices/bulk",
            &[
                ("action", "lost"),
                ("firmware", "5.7.1"),
                ("q", ""),
                ("state", ""),
                ("owner", ""),
                ("expiring_days", ""),
                ("factory", ""),
                ("serials", "67001,67002"),
                ("count", "2"),
                ("reason", "left in a taxi"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Batch done: 2 changed, 0 skipped, 0 failed"),
        "{html}"
    );
    assert_eq!(
        states(&app, &[67_001, 67_002, 67_003]).await,
        ["lost", "lost", "registered"]
    );

    // The import page previews a pasted file row by row.
    let (s, _, html) = b.get_text("/import").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("username,display_name,email,role"));
}
