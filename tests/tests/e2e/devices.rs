//! Who may see and operate which YubiKey, device states, and the fleet
//! lists with their filters and pages.

use kleidia_tests::pki::random_serial;
use kleidia_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn helpdesk_may_operate_someone_elses_key_a_user_may_not_and_nobody_may_on_a_lost_key() {
    let f = TestApp::builder().own_openbao().start().await;
    let erin = f.person("erin", "user", "Erin").await;
    let frank = f.person("frank", "user", "Frank").await;
    let help = f.person("helen", "helpdesk", "Helen Helpdesk").await;
    let auditor = f.person("otto", "auditor", "Otto Auditor").await;
    let serial = random_serial();
    erin.register_ok(serial).await;

    // Someone else's key is, to a plain user, a key nobody has.
    let (s, _) = frank
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = frank.api.device(serial).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = frank.api.devices("").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = auditor
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Helpdesk: the secrets are encrypted to helpdesk's own agent key.
    let (s, op) = help
        .authorize(serial, json!({"operation": "set_puk"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(
        help.decrypt(&op["request"]["params"]["current_puk"]),
        "12345678"
    );
    assert_eq!(
        help.report(serial, op["operation_id"].as_str().unwrap(), true)
            .await
            .0,
        StatusCode::OK
    );

    // By policy, owners may not unblock their own PIN; helpdesk may.
    let (s, v) = erin
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("policy"), "{v}");
    let (s, op) = help
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(
        help.report(serial, op["operation_id"].as_str().unwrap(), false)
            .await
            .0,
        StatusCode::OK
    );

    // The owner reports the key lost: no operation is authorised any more.
    let (s, v) = erin
        .api
        .set_device_state(serial, "lost", "left on a train")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for who in [&erin, &help] {
        let (s, v) = who.authorize(serial, json!({"operation": "set_pin"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    // …and a lost key does not come back to active.
    let admin = f.admin_api().await;
    let (s, _) = admin.set_device_state(serial, "active", "found").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(f.device_row(serial).await.0, "lost");
}

#[tokio::test]
async fn staff_list_and_filter_the_fleet_with_keyset_pages_and_users_see_only_their_own() {
    let f = TestApp::builder().own_openbao().start().await;
    let lea = f.person("lea", "user", "Lea").await;
    let admin = f.admin_api().await;
    let pool = f.db.pool().await.unwrap();
    let lea_id = uuid::Uuid::parse_str(&lea.user_id).unwrap();
    // 120 devices straight into the database: 40 of them Lea's, 30 suspended.
    sqlx::query(
        "INSERT INTO devices (serial, firmware, owner_id, state) \
         SELECT 1000 + g, CASE WHEN g % 2 = 0 THEN '5.7.1' ELSE '5.4.3' END, \
                CASE WHEN g % 3 = 0 THEN $1 END, CASE WHEN g % 4 = 0 THEN 'suspended' ELSE 'active' END \
         FROM generate_series(1, 120) g",
    )
    .bind(lea_id)
    .execute(&pool)
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let query = match after {
            Some(a) => format!("limit=50&after={a}"),
            None => "limit=50".to_string(),
        };
        let (s, v) = admin.devices(&query).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen.extend(
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["serial"].as_i64().unwrap()),
        );
        match v["next_after"].as_i64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1001..=1120).collect::<Vec<_>>());
    let (_, v) = admin
        .devices("state=suspended&firmware=5.7.1&limit=200")
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 30);
    let (_, v) = admin.devices("owner=lea&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 40);
    // Search: digits are a serial prefix, anything else a person.
    let (_, v) = admin.devices("q=100&limit=200").await;
    let found: Vec<i64> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(found, (1001..=1009).collect::<Vec<_>>());
    let (_, v) = admin.devices("q=LEA&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 40);
    let (_, v) = admin.devices("q=%25&limit=200").await;
    assert_eq!(
        v["devices"].as_array().unwrap().len(),
        120,
        "a bare wildcard filters nothing out and matches nothing special"
    );
    let (s, _) = admin.devices("state=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, mine) = lea.api.my_devices("limit=200").await;
    let mine = mine["devices"].as_array().unwrap();
    assert_eq!(mine.len(), 40);
    assert!(mine.iter().all(|d| d["owner_username"] == "lea"));
    // The pages render the same lists.
    let b = f.admin_browser().await;
    let (s, _, html) = b.get_text("/devices?state=suspended").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("/devices/1004") && !html.contains("/devices/1001\""),
        "{html}"
    );

    // The dashboard counts what the filtered lists show, and links to them.
    let (s, _, home) = b.get_text("/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        home.contains(r#"href="/devices?state=suspended"><span class="stat">30</span>"#),
        "{home}"
    );
    assert!(
        home.contains(r#"href="/devices?state=active"><span class="stat">90</span>"#),
        "{home}"
    );
    // None of these has escrowed credentials yet: all 120 are on factory values.
    assert!(
        home.contains(r#"href="/devices?factory=true"><span class="stat">120</span>"#),
        "{home}"
    );
    let (_, v) = admin.devices("factory=true&limit=200").await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 120);
    assert!(home.contains("Recent events"), "{home}");
}

/// The insider's attempt on a key whose owner stopped half-way through
/// enrolling it: the owner has chosen a PIN, and helpdesk asks for a key
/// that needs it. The PIN the owner chose is released to nobody else.
#[tokio::test]
async fn helpdesk_gets_no_pin_an_owner_chose_on_a_key_still_being_enrolled() {
    let f = TestApp::builder().own_openbao().start().await;
    let erin = f.person("erin", "user", "Erin").await;
    let help = f.person("helen", "helpdesk", "Helen Helpdesk").await;
    // Certificate approvals (a separate gate, tested in certificate_approval)
    // are off, so what is refused here is the PIN alone.
    let admin = f.admin_api().await;
    let (_, mut p) = admin.policy().await;
    p["certificate_approval"] = json!("off");
    let (s, v) = admin.set_policy(&p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // 9a allows PIN policies once and always; 9e (card authentication) also never.
    let csr = |pin_policy: &str| {
        let slot = if pin_policy == "never" { "9e" } else { "9a" };
        json!({"operation": "generate_csr", "slot": slot, "algorithm": "ecc_p256",
               "pin_policy": pin_policy, "touch_policy": "never"})
    };

    // Erin's enrollment sets her PIN and stops before the certificates.
    let serial = random_serial();
    erin.register_ok(serial).await;
    let (s, op) = erin
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "480159"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let (s, _) = erin
        .report(serial, op["operation_id"].as_str().unwrap(), true)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (state, version, _) = f.device_row(serial).await;
    assert_eq!((state.as_str(), version.is_some()), ("registered", true));

    // Helpdesk asks for a key that needs the PIN: refused, nothing written,
    // the refusal audited.
    let pool = f.db.pool().await.unwrap();
    let ops = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM operations WHERE device_serial = $1")
            .bind(i64::from(serial))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = ops(pool.clone()).await;
    let escrow_before = f.escrow_version(serial).await;
    for policy in ["once", "always"] {
        let (s, v) = help.authorize(serial, csr(policy)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{policy}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("its owner chose this one"), "{msg}");
        assert!(v.get("request").is_none(), "no secret in a refusal: {v}");
    }
    assert_eq!(ops(pool.clone()).await, before);
    assert_eq!(f.escrow_version(serial).await, escrow_before);
    let audited = f.audit_details("operation.pin_withheld").await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0]["operation"], "generate_csr");
    assert_eq!(audited[0]["pin_policy"], "once");

    // A key without a PIN policy needs no PIN: helpdesk may make it, and
    // gets the management key only.
    let (s, op) = help.authorize(serial, csr("never")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert!(op["request"]["params"]["pin"].is_null(), "{op}");
    assert!(!op["request"]["params"]["management_key"].is_null(), "{op}");
    help.report(serial, op["operation_id"].as_str().unwrap(), false)
        .await;

    // On a factory key helpdesk enrolls for Erin, helpdesk sets the PIN and
    // may then make a key that needs it: that PIN is the one they chose.
    let other = random_serial();
    erin.register_ok(other).await;
    let (s, op) = help
        .authorize(other, json!({"operation": "set_pin", "new_pin": "739204"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    help.report(other, op["operation_id"].as_str().unwrap(), true)
        .await;
    let (s, op) = help.authorize(other, csr("once")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(help.decrypt(&op["request"]["params"]["pin"]), "739204");
}
