//! The audit log is hash-chained: `kleidia audit verify` passes on an
//! untouched log and names exactly the rows altered or deleted with SQL.

use kleidia_tests::{TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn audit_verify_names_exactly_the_altered_and_the_deleted_row() {
    let app = TestApp::spawn().await;
    // Some history: sign-ins, a failure, a user, a logout.
    let mut api = app.api();
    for _ in 0..3 {
        api.login("admin", ADMIN_PASSWORD).await.unwrap();
    }
    let (s, _) = app.api().post_login("admin", "wrong").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .create_user(&json!({"username": "bob", "display_name": "Bob", "role": "user"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    api.logout().await;

    let rows = app.db.count("audit_log").await;
    assert!(rows >= 7, "{rows}");
    let (ok, out) = app.audit_verify();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{rows} rows, chain intact")), "{out}");

    // The application can neither update nor delete audit rows.
    let pool = app.db.pool().await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET actor_name = 'x' WHERE id = 2")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // Someone with the owner's rights tampers anyway: alters row 3, deletes row 5.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET details = '{\"via\": \"nothing to see\"}' WHERE id = 3")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE id = 5")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let (ok, out) = app.audit_verify();
    assert!(!ok, "{out}");
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(
        problems,
        vec!["row 3 was altered", "row 5 was deleted"],
        "{out}"
    );
}

#[tokio::test]
async fn deleting_the_newest_rows_is_noticed_through_the_chain_head() {
    let app = TestApp::spawn().await;
    let mut api = app.api();
    api.login("admin", ADMIN_PASSWORD).await.unwrap();
    api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let pool = app.db.pool().await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE id = $1")
        .bind(last)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let (ok, out) = app.audit_verify();
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("row {last} was deleted")), "{out}");
}

#[tokio::test]
async fn the_audit_api_filters_and_pages_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let mut api = app.api();
    for _ in 0..7 {
        api.login("admin", ADMIN_PASSWORD).await.unwrap();
    }
    for _ in 0..2 {
        app.api().post_login("admin", "nope").await;
    }
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let q = match before {
            Some(b) => format!("action=login.ok&limit=3&before={b}"),
            None => "action=login.ok&limit=3".to_string(),
        };
        let (s, page) = api.audit(&q).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["action"], "login.ok");
            seen.push(e["id"].as_i64().unwrap());
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seen:?}"
    );
    let (_, failed) = api.audit("action=login.*&actor=admin").await;
    assert_eq!(failed["entries"].as_array().unwrap().len(), 9);
    let (_, none) = api
        .audit("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z")
        .await;
    assert_eq!(none["entries"].as_array().unwrap().len(), 0);
    let (_, today) = api
        .audit("from=2000-01-01T00:00:00Z&action=login.failed")
        .await;
    assert_eq!(today["entries"].as_array().unwrap().len(), 2);
    let (s, _) = api.audit("frm=x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown query keys are refused");
}
