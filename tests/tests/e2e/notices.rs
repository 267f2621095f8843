//! Expiry notices (issue 18 §4) against a real SMTP server (aiosmtpd) and a
//! webhook receiver: owners hear about their own keys, admins about all,
//! each recipient once however many replicas run the job, with a link to
//! the device's page; a second run in the same period sends nothing new,
//! and only an admin may press "Send now".

use std::time::Duration;

use kleidia_tests::client::Api;
use kleidia_tests::mail::{SmtpServer, WebhookReceiver};
use kleidia_tests::{wait_until, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

/// A certificate row as the issuing code writes it, expiring in `days`.
async fn certificate(app: &TestApp, serial: u32, slot: &str, days: i64) {
    let pool = app.db.pool().await.unwrap();
    sqlx::query(
        "INSERT INTO certificates (id, device_serial, slot, serial_number, subject, key_algorithm, \
         not_before, not_after, pem) VALUES ($1, $2, $3, $4, 'CN=test', 'ecc_p256', \
         now() - interval '300 days', now() + make_interval(days => $5), 'pem')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(i64::from(serial))
    .bind(slot)
    .bind(format!("{serial}:{slot}"))
    .bind(i32::try_from(days).unwrap())
    .execute(&pool)
    .await
    .unwrap();
}

/// The device's secrets are escrowed (no longer factory credentials).
async fn escrowed(app: &TestApp, serial: u32) {
    let pool = app.db.pool().await.unwrap();
    sqlx::query("UPDATE devices SET secrets_version = 1, state = 'active' WHERE serial = $1")
        .bind(i64::from(serial))
        .execute(&pool)
        .await
        .unwrap();
}

fn count_to(mails: &[kleidia_tests::mail::Mail], addr: &str) -> usize {
    mails.iter().filter(|m| m.rcpt_to.contains(addr)).count()
}

#[tokio::test]
async fn two_replicas_mail_each_owner_and_admin_once_with_links_and_the_webhook_once() {
    let scratch = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(scratch.path()).await.unwrap();
    let hook = WebhookReceiver::start().await.unwrap();
    let port = smtp.port.to_string();
    let hook_url = hook.url();
    let app = TestApp::builder()
        .env("KLEIDIA_NOTICES_ENABLED", "false")
        .env("KLEIDIA_NOTICES_SMTP_HOST", "127.0.0.1")
        .env("KLEIDIA_NOTICES_SMTP_PORT", &port)
        .env("KLEIDIA_NOTICES_SMTP_TLS", "none")
        .env("KLEIDIA_NOTICES_FROM", "Kleidia <kleidia@corp.example>")
        .env("KLEIDIA_NOTICES_WARNING_DAYS", "30")
        .env("KLEIDIA_NOTICES_WEBHOOK_URL", &hook_url)
        .start()
        .await;
    let admin = app.admin_api().await;
    let alice = app
        .create_user("alice", "user", "Alice", "alice-long-password-1")
        .await;
    let bob = app
        .create_user("bob", "user", "Bob", "bob-long-password-1")
        .await;
    app.create_user("carol", "admin", "Carol", "carol-long-password-1")
        .await;

    // alice: 61001 on factory credentials; 61002 escrowed with a certificate
    // expiring in 5 days (and one in 200 days, not announced); 61004 lost
    // (out of service: nobody is told). bob: 61003 escrowed, its certificate
    // good for 90 days: nothing to say.
    for (serial, owner) in [
        (61_001, &alice.id),
        (61_002, &alice.id),
        (61_003, &bob.id),
        (61_004, &alice.id),
    ] {
        let (s, v) = admin.register_device_for(serial, "5.7.1", owner).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    escrowed(&app, 61_002).await;
    escrowed(&app, 61_003).await;
    certificate(&app, 61_002, "9a", 5).await;
    certificate(&app, 61_002, "9c", 200).await;
    certificate(&app, 61_003, "9a", 90).await;
    let pool = app.db.pool().await.unwrap();
    sqlx::query("UPDATE devices SET state = 'lost' WHERE serial = 61004")
        .execute(&pool)
        .await
        .unwrap();

    // Two more replicas on the same database, started at the same instant
    // (their runtime-role GRANTs take turns), both told to send at the
    // same moment.
    let (r1, r2) = tokio::join!(app.spawn_another(&[]), app.spawn_another(&[]));
    // API tokens name their replica's origin: one sign-in on each.
    let (mut a1, mut a2) = (Api::new(&r1.base_url), Api::new(&r2.base_url));
    a1.login("admin", ADMIN_PASSWORD).await.unwrap();
    a2.login("admin", ADMIN_PASSWORD).await.unwrap();
    let ((s1, v1), (s2, v2)) = tokio::join!(
        a1.post_json("/api/notices/run", &Value::Null),
        a2.post_json("/api/notices/run", &Value::Null)
    );
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{v1} {v2}");
    let sent = v1["emails_sent"].as_u64().unwrap() + v2["emails_sent"].as_u64().unwrap();
    assert_eq!(sent, 2, "{v1} {v2}");
    // The loser either found the lock taken or nothing left to tell.
    for v in [&v1, &v2] {
        assert!(
            v["ran"] == false || v["emails_sent"] == 2 || v["emails_sent"] == 0,
            "{v}"
        );
    }

    let mails = smtp.mails();
    assert_eq!(count_to(&mails, "alice@corp.example"), 1, "{mails:#?}");
    assert_eq!(count_to(&mails, "carol@corp.example"), 1, "{mails:#?}");
    assert_eq!(count_to(&mails, "bob@corp.example"), 0, "{mails:#?}");
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let to_alice = mails.iter().find(|m| m.rcpt_to.contains("alice")).unwrap();
    assert_eq!(
        to_alice.subject,
        "Kleidia: 1 certificate expiring, 1 YubiKey on factory credentials"
    );
    // The link is the sending replica's public URL.
    for serial in [61_001, 61_002] {
        let linked = [&r1, &r2]
            .iter()
            .any(|r| to_alice.raw.contains(&r.url(&format!("/devices/{serial}"))));
        assert!(linked, "a link to {serial} in {}", to_alice.raw);
    }
    assert!(to_alice.raw.contains("slot 9a expires"), "{}", to_alice.raw);
    assert!(!to_alice.raw.contains("slot 9c"), "{}", to_alice.raw);
    for other in ["61003", "61004"] {
        assert!(!to_alice.raw.contains(other), "{}", to_alice.raw);
    }
    // The admin hears about the whole fleet; the first admin has no address.
    let to_carol = mails.iter().find(|m| m.rcpt_to.contains("carol")).unwrap();
    assert!(to_carol.raw.contains("YubiKey 61001 (owner: alice)"));
    assert!(to_carol.raw.contains("YubiKey 61002 (owner: alice)"));
    assert!(!to_carol.raw.contains("61003"));

    let hooks = hook.bodies();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let h: Value = serde_json::from_str(&hooks[0]).unwrap();
    assert_eq!(h["event"], "kleidia.notices");
    let mut items: Vec<(i64, String)> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["serial"].as_i64().unwrap(),
                i["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    items.sort();
    assert_eq!(
        items,
        vec![
            (61_001, "factory_credentials".to_string()),
            (61_002, "certificate_expiring".to_string()),
        ]
    );
    let runs = app.audit_details("notices.sent").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["emails_sent"], 2);

    // A replica with the schedule on runs at start: nothing new to tell.
    let r3 = app
        .spawn_another(&[("KLEIDIA_NOTICES_ENABLED", "true")])
        .await;
    let done = wait_until(Duration::from_secs(60), || async {
        r3.log().contains("notices: run finished")
    })
    .await;
    assert!(done, "the schedule never ran:\n{}", r3.log());
    assert_eq!(smtp.mails().len(), 2);

    // "Send now" in the same period: nobody is told the same thing twice.
    let (s, v) = admin.post_json("/api/notices/run", &Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ran"].as_bool(), v["emails_sent"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(smtp.mails().len(), 2);
    assert_eq!(hook.bodies().len(), 1);

    // Something new: only that is sent, to its owner and the admin.
    certificate(&app, 61_001, "9d", 2).await;
    let (s, v) = admin.post_json("/api/notices/run", &Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["emails_sent"], 2, "{v}");
    let mails = smtp.mails();
    assert_eq!(count_to(&mails, "alice@corp.example"), 2);
    let newest: Vec<_> = mails
        .iter()
        .filter(|m| m.rcpt_to.contains("alice") && m.raw.contains("slot 9d"))
        .collect();
    assert_eq!(newest.len(), 1, "{mails:#?}");
    assert!(!newest[0].raw.contains("factory PIN"), "{}", newest[0].raw);
    assert_eq!(hook.bodies().len(), 2);
}

#[tokio::test]
async fn only_an_admin_may_send_notices_now_and_a_refusal_sends_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(scratch.path()).await.unwrap();
    let port = smtp.port.to_string();
    let app = TestApp::builder()
        .env("KLEIDIA_NOTICES_SMTP_HOST", "127.0.0.1")
        .env("KLEIDIA_NOTICES_SMTP_PORT", &port)
        .env("KLEIDIA_NOTICES_SMTP_TLS", "none")
        .start()
        .await;
    let admin = app.admin_api().await;
    let harry = app
        .create_user(
            "harry",
            "helpdesk",
            "Harry Helpdesk",
            "harry-long-password-1",
        )
        .await;
    let (s, v) = admin.register_device_for(62_001, "5.7.1", &harry.id).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let mut helpdesk = app.api();
    helpdesk.login("harry", &harry.password).await.unwrap();
    let (s, v) = helpdesk.post_json("/api/notices/run", &Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(smtp.mails().is_empty());
    assert!(app.audit_details("notices.sent").await.is_empty());
    let refused = app.audit_details("request.role_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["path"], "/api/notices/run");
    assert_eq!(refused[0]["role"], "helpdesk");

    // The admin's press reaches harry (his key is on factory credentials).
    let (s, v) = admin.post_json("/api/notices/run", &Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["recipients"], serde_json::json!(["harry"]));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].rcpt_to.contains("harry@corp.example"));
    assert!(mails[0].raw.contains(&app.url("/devices/62001")));
}
