//! Operations whose answer was lost (issue 16 §1): the server closes a
//! non-secret operation whose ticket expired with no result as `expired`
//! (`outcome_unknown`), audited, and refuses a late result for it; a secret
//! change is never closed this way, it stays pending for its resume. Real
//! `kleidia serve`, PostgreSQL and OpenBao; the agent is played by the test
//! ([`kleidia_tests::Person`]), which never reports.

use std::time::{Duration, Instant};

use kleidia_tests::pki::random_serial;
use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Short tickets so that the test waits seconds, not minutes.
const TICKET_SECS: i64 = 10;
const GRACE_SECS: i64 = 2;

/// (state, error, whether the ticket and the grace are over by the
/// database's clock).
async fn row(pool: &PgPool, id: &str) -> (String, Option<String>, bool) {
    sqlx::query_as(
        "SELECT state, error, ticket_expires_at + make_interval(secs => $2) < now() \
         FROM operations WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(GRACE_SECS as f64)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn expired_events(pool: &PgPool, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT actor_name, details FROM audit_log \
         WHERE action = 'operation.expired' AND details->>'operation_id' = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_lost_answer_is_closed_as_expired_after_its_ticket_a_late_result_is_refused_and_a_secret_change_waits_for_its_resume(
) {
    let f = TestApp::builder()
        .env(
            "KLEIDIA_OPERATIONS_TICKET_LIFETIME_SECS",
            &TICKET_SECS.to_string(),
        )
        .env(
            "KLEIDIA_OPERATIONS_RESULT_GRACE_SECS",
            &GRACE_SECS.to_string(),
        )
        .env("KLEIDIA_OPERATIONS_SWEEP_INTERVAL_SECS", "1")
        .start()
        .await;
    let alice = f.person("alice", "user", "Alice Example").await;
    let serial = random_serial();
    alice.register_ok(serial).await;
    let pool = f.db.pool().await.unwrap();

    // A roll back (reset) whose answer is lost: the agent got its ticket,
    // nothing is ever reported.
    let (s, reset) = alice.authorize(serial, json!({"operation": "reset"})).await;
    assert_eq!(s, StatusCode::CREATED, "{reset}");
    let reset_id = reset["operation_id"].as_str().unwrap().to_string();
    let claims = f
        .ticket_verifying_key()
        .await
        .verify(reset["request"]["ticket"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.expires_at - claims.issued_at,
        TICKET_SECS,
        "operations.ticket_lifetime_secs"
    );
    // A PIN change whose answer is lost too: a secret change.
    let (s, pin) = alice
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pin}");
    let pin_id = pin["operation_id"].as_str().unwrap().to_string();

    // The proofs of those two are answered; make them look a day and more
    // past their expiry: the sweep removes challenges that old.
    let aged = sqlx::query(
        "UPDATE presence_challenges SET expires_at = now() - interval '2 days' \
         WHERE device_serial = $1 AND used_at IS NOT NULL",
    )
    .bind(i64::from(serial))
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(aged > 0, "the operations went through presence challenges");

    // While the ticket (and the grace) lasts, nothing is closed.
    let (state, _, over) = row(&pool, &reset_id).await;
    if !over {
        assert_eq!(state, "pending");
    }

    // The sweep closes the reset once its ticket has expired. (A bound for a
    // loaded machine, not a speed check: the sweep runs every second.)
    let deadline = Instant::now() + Duration::from_secs(90);
    let (state, error) = loop {
        let (state, error, _) = row(&pool, &reset_id).await;
        if state != "pending" || Instant::now() > deadline {
            break (state, error);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(state, "expired");
    assert_eq!(error.as_deref(), Some("outcome_unknown"));
    let old_challenges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM presence_challenges \
         WHERE device_serial = $1 AND expires_at < now() - interval '1 day'",
    )
    .bind(i64::from(serial))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(old_challenges, 0, "the sweep prunes old challenges");
    let events = expired_events(&pool, &reset_id).await;
    assert_eq!(events.len(), 1, "audited once: {events:?}");
    assert_eq!(events[0].0, "kleidia");
    assert_eq!(events[0].1["operation"], "reset");
    assert_eq!(events[0].1["started_by"], "alice");

    // The secret change is past its ticket and grace as well, and the sweep
    // has run since (a second more): it is still pending, not audited as
    // expired, and the device still waits for it to be settled.
    loop {
        let (_, _, over) = row(&pool, &pin_id).await;
        if over {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (state, error, _) = row(&pool, &pin_id).await;
    assert_eq!((state.as_str(), error), ("pending", None));
    assert!(expired_events(&pool, &pin_id).await.is_empty());

    // A late success for the reset is refused and changes nothing: the
    // device is still registered to alice, the row still expired.
    let before = f.device_row(serial).await;
    let (s, v) = alice.report(serial, &reset_id, true).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("expired"), "{v}");
    assert_eq!(f.device_row(serial).await, before);
    assert_eq!(before.0, "registered");
    assert_eq!(row(&pool, &reset_id).await.0, "expired");

    // The device (API and page) shows it as expired with its reason.
    let (s, d) = alice.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let shown = d["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == reset_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the reset is listed: {d}"));
    assert_eq!(shown["state"], "expired");
    assert_eq!(shown["error"], "outcome_unknown");
    let (s, _, page) = f
        .admin_browser()
        .await
        .get_text(&format!("/devices/{serial}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("<td>reset</td><td>alice</td><td>expired</td><td>outcome_unknown</td>"),
        "{page}"
    );

    // The PIN change keeps its settle path: its resume gets a new ticket.
    let (s, again) = alice.resume(serial, &pin_id).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["operation_id"], pin_id.as_str());
    assert_eq!(again["request"]["params"]["settle"], true, "{again}");

    pool.close().await;
    let (ok, out) = f.audit_verify();
    assert!(ok, "audit verify: {out}");
}
