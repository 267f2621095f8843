//! What an operation does when OpenBao or PostgreSQL fails under it: refuse
//! before any ticket exists, and never lose the secret the key holds.

use kleidia_tests::pki::random_serial;
use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn openbao_down_refuses_with_503_before_any_ticket_exists() {
    let mut f = TestApp::builder().own_openbao().start().await;
    let jack = f.person("jack", "user", "Jack").await;
    let serial = random_serial();
    jack.register_ok(serial).await;
    f.stop_openbao();
    let (s, v) = jack
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("OpenBao"), "{v}");
    assert!(v.get("request").is_none());
    let pool = f.db.pool().await.unwrap();
    let (state, hash): (String, Option<String>) =
        sqlx::query_as("SELECT state, params_hash FROM operations")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(hash, None, "no ticket was issued");
    assert_eq!(f.device_row(serial).await.1, None);

    // The owner still sees the device, its state and the refused operation,
    // with a sentence where the escrow history would be.
    let (s, v) = jack.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["serial"], serial, "{v}");
    assert_eq!(v["operations"][0]["state"], "failed", "{v}");
    assert!(
        v["escrow_unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("unavailable")),
        "{v}"
    );
}

#[tokio::test]
async fn a_database_failure_after_the_escrow_write_leaves_the_operation_pending_and_the_old_secret_readable(
) {
    let f = TestApp::builder().own_openbao().start().await;
    let kim = f.person("kim", "user", "Kim").await;
    let serial = random_serial();
    kim.register_ok(serial).await;
    let (_, op) = kim.authorize(serial, json!({"operation": "set_pin"})).await;
    let first_pin = kim.decrypt(&op["request"]["params"]["new_pin"]);
    kim.report(serial, op["operation_id"].as_str().unwrap(), true)
        .await;

    // The commit that records the new version fails (as if PostgreSQL went away
    // right after OpenBao accepted the write).
    let pool = f.db.pool().await.unwrap();
    sqlx::query(
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.secrets_version_new IS NOT NULL THEN RAISE EXCEPTION 'simulated failure'; END IF; \
           RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER fail_commit BEFORE UPDATE ON operations FOR EACH ROW EXECUTE FUNCTION fail_commit()")
        .execute(&pool)
        .await
        .unwrap();
    let (s, v) = kim.authorize(serial, json!({"operation": "set_pin"})).await;
    assert!(s.is_server_error(), "{s} {v}");
    assert!(v.get("request").is_none(), "no ticket may leave: {v}");

    // The operation stays pending; the device still holds version 1, which
    // is readable; the orphan version 2 exists but nothing points to it.
    let pending: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT state, secrets_version_new FROM operations WHERE state = 'pending'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(pending, vec![("pending".to_string(), None)]);
    assert_eq!(f.device_row(serial).await.1, Some(1));
    assert_eq!(f.escrow(serial, 1).await["pin"], first_pin);
    assert_eq!(f.escrow_version(serial).await, 2);
}

#[tokio::test]
async fn postgresql_refusing_connections_gives_503_and_writes_nothing_to_the_escrow() {
    let f = TestApp::builder().own_openbao().start().await;
    let mia = f.person("mia", "user", "Mia").await;
    let serial = random_serial();
    mia.register_ok(serial).await;
    let pool = f.db.pool().await.unwrap();
    let mut own = pool.acquire().await.unwrap();
    // The app's connections are cut and no new one is accepted.
    sqlx::query(&format!("ALTER DATABASE {} CONNECTION LIMIT 0", f.db.name))
        .execute(&mut *own)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&f.db.name)
        .execute(&mut *own)
        .await
        .unwrap();
    let (s, v) = mia.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("database"), "{v}");
    assert_eq!(
        f.api().get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        f.escrow_version(serial).await,
        0,
        "nothing may reach OpenBao"
    );

    sqlx::query(&format!("ALTER DATABASE {} CONNECTION LIMIT -1", f.db.name))
        .execute(&mut *own)
        .await
        .unwrap();
    let (s, v) = mia.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
