//! The owner/runtime database role split: what the server's own role cannot do
//! to the audit log, and the single-URL development setup.

use super::*;

#[tokio::test]
async fn the_runtime_role_cannot_disable_the_triggers_truncate_update_or_delete_the_log() {
    let site = start(Anchoring::OnDemand).await;
    site.events(3).await;
    let (ok, out) = site.anchor_now();
    assert!(ok, "{out}");
    let rows = site.last_id().await;
    let snapshot = || async {
        let v: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT id, actor_name, hash FROM audit_log ORDER BY id")
                .fetch_all(&site.owner().await)
                .await
                .unwrap();
        v
    };
    let before = snapshot().await;

    let runtime = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(site.runtime_url())
        .await
        .unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user")
        .fetch_one(&runtime)
        .await
        .unwrap();
    assert_ne!(user, "kleidia", "the runtime URL must not be the owner");
    let attempts = [
        ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update", "must be owner"),
        ("ALTER TABLE audit_log DISABLE TRIGGER ALL", "must be owner"),
        ("DROP TRIGGER audit_log_no_update ON audit_log", "must be owner"),
        ("CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$", "permission denied for schema public"),
        ("TRUNCATE audit_log", "permission denied"),
        ("UPDATE audit_log SET actor_name = 'x' WHERE id = 1", "permission denied"),
        ("DELETE FROM audit_log WHERE id = 1", "permission denied"),
        ("DELETE FROM audit_head", "permission denied"),
        ("DROP TABLE audit_log", "must be owner"),
        ("ALTER TABLE audit_log RENAME TO old_log", "must be owner"),
        ("CREATE TABLE audit_log_copy (id bigint)", "permission denied"),
    ];
    for (sql, why) in attempts {
        let err = sqlx::query(sql)
            .execute(&runtime)
            .await
            .expect_err(&format!("the runtime role may run: {sql}"));
        assert!(err.to_string().contains(why), "{sql}: {err}");
    }
    // What it needs still works: reading, and appending through the server.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&runtime)
        .await
        .unwrap();
    assert_eq!(n, rows);
    assert_eq!(snapshot().await, before, "nothing changed");
    site.events(1).await;
    let (ok, out) = site.verify();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{} rows, chain intact", rows + 1)),
        "{out}"
    );
    assert!(!site.log().contains("owns audit_log"), "{}", site.log());

    // `kleidia migrate` re-grants as the owner and is refused to the runtime role.
    let out = kleidia_command()
        .arg("migrate")
        .env("KLEIDIA_DATABASE_URL", site.runtime_url())
        .env("KLEIDIA_DATABASE_OWNER_URL", &site.db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("runtime role {user} granted its rights")),
        "{stdout}"
    );
    let out = kleidia_command()
        .arg("migrate")
        .env("KLEIDIA_DATABASE_URL", site.runtime_url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not own the schema"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_single_database_url_still_works_and_warns_that_it_owns_the_audit_log() {
    let app = TestApp::builder()
        .own_openbao()
        .single_database_url()
        .start()
        .await;
    app.admin_api().await;
    assert!(
        app.log().contains("owns audit_log"),
        "no warning about the single URL:\n{}",
        app.log()
    );
}

#[tokio::test]
async fn bootstrap_refuses_an_audit_key_that_could_leave_openbao() {
    // An OpenBao nobody bootstrapped yet, where someone made the key first.
    let app = TestApp::builder()
        .bare_openbao()
        .without_admin()
        .start()
        .await;
    let root = app.root_bao();
    root.post("sys/mounts/transit", &json!({"type": "transit"}))
        .await
        .unwrap();
    root.post(
        "transit/keys/kleidia-audit",
        &json!({"type": "hmac", "key_size": 32, "exportable": true}),
    )
    .await
    .unwrap();
    let (ok, out, err) = app.bootstrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains("transit/keys/kleidia-audit is exportable"),
        "{out}\n{err}"
    );
}
