//! Exports of the inventory and the audit log (issue 18 §3): CSV and JSON
//! lines with the same filters as the pages, every matching row across the
//! server's keyset batches, formula cells defused in CSV, the export itself
//! audited, and nothing exported to someone who may not read the rows.

use std::collections::BTreeSet;

use kleidia_tests::client::Api;
use kleidia_tests::license::DAY;
use kleidia_tests::{unix_now, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEVICE_HEADER: [&str; 12] = [
    "serial",
    "model",
    "firmware",
    "form_factor",
    "owner_username",
    "owner_display_name",
    "state",
    "secrets_version",
    "enrolled_at",
    "last_seen_at",
    "created_at",
    "updated_at",
];

/// GET with the client's token: status, content type, disposition, body.
async fn fetch(api: &Api, path: &str) -> (StatusCode, String, String, String) {
    let r = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let h = |k: &str| {
        r.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (ct, cd) = (h("content-type"), h("content-disposition"));
    (r.status(), ct, cd, r.text().await.unwrap())
}

fn csv_rows(body: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body.as_bytes());
    let header = rd.headers().unwrap().iter().map(String::from).collect();
    let rows = rd
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Every device the list API returns for `query`, page after page.
async fn listed(api: &Api, query: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (s, v) = api
            .get(&format!("/api/devices?limit=200&{query}{after}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        out.extend(
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["serial"].as_u64().unwrap()),
        );
        match v["next_after"].as_u64() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}

#[tokio::test]
async fn exports_carry_every_matching_row_with_the_pages_filters() {
    let app = TestApp::builder().license_service().start().await;
    let admin = app.admin_api().await;
    let license = app
        .issue_license("L-exports", unix_now() + 30 * DAY, 10, 1000)
        .await;
    let (s, v) = admin.upload_license(license).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // 450 devices on two firmwares: the CSV crosses the server's batches of 200.
    for i in 0..450u32 {
        let fw = if i % 3 == 0 { "5.4.3" } else { "5.7.1" };
        let (s, v) = admin.register_device(24_000_000 + i, fw).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // Someone whose display name a spreadsheet would run as a formula.
    let (s, v) = admin
        .create_user(&json!({"username": "mallory", "role": "user",
                             "display_name": "=HYPERLINK(\"http://evil.example\",\"x\")",
                             "email": "mallory@corp.example", "password": "mallory-long-password-1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mallory_id = v["user"]["id"].as_str().unwrap().to_string();
    let (s, v) = admin
        .register_device_for(24_999_999, "5.7.1", &mallory_id)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // CSV with a filter: exactly the rows the list API pages through.
    let (s, ct, cd, body) = fetch(&admin, "/api/export/devices.csv?firmware=5.4.3").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(ct, "text/csv; charset=utf-8");
    assert!(
        cd.starts_with("attachment; filename=\"kleidia-devices-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    let (header, rows) = csv_rows(&body);
    assert_eq!(header, DEVICE_HEADER);
    assert_eq!(rows.len(), 150);
    assert!(
        rows.iter().all(|r| r[2] == "5.4.3" && r[6] == "registered"),
        "{body}"
    );
    let exported: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(exported, listed(&admin, "firmware=5.4.3").await);

    // JSON lines, unfiltered: every device once, in serial order.
    let (s, ct, cd, body) = fetch(&admin, "/api/export/devices.jsonl").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(ct, "application/x-ndjson");
    assert!(cd.ends_with(".jsonl\""), "{cd}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 451);
    let serials: Vec<u64> = lines
        .iter()
        .map(|d| d["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, listed(&admin, "").await);
    assert_eq!(
        serials.iter().collect::<BTreeSet<_>>().len(),
        451,
        "no row twice"
    );

    // The formula is defused in CSV and kept as it is in JSON lines.
    let (_, _, _, body) = fetch(&admin, "/api/export/devices.csv?owner=mallory").await;
    let (_, rows) = csv_rows(&body);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][5], "'=HYPERLINK(\"http://evil.example\",\"x\")");
    let mallory_line = lines.iter().find(|d| d["serial"] == 24_999_999).unwrap();
    assert_eq!(
        mallory_line["owner_display_name"],
        "=HYPERLINK(\"http://evil.example\",\"x\")"
    );

    // The audit log: every matching entry, newest first, past a batch of 500.
    let registered = app
        .db
        .count("audit_log WHERE action = 'device.register'")
        .await;
    assert_eq!(registered, 451);
    let (s, ct, _, body) = fetch(
        &admin,
        "/api/export/audit.csv?action=device.register&limit=5",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(ct, "text/csv; charset=utf-8");
    let (header, rows) = csv_rows(&body);
    assert_eq!(
        header,
        [
            "id",
            "created_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "ip",
            "details"
        ]
    );
    assert_eq!(
        rows.len() as i64,
        registered,
        "the page size does not cut an export"
    );
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    assert!(rows
        .iter()
        .all(|r| r[3] == "device.register" && r[2] == "admin"));
    let (_, first_page) = admin
        .get("/api/audit?action=device.register&limit=50")
        .await;
    let page_ids: Vec<i64> = first_page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(&ids[..50], &page_ids[..]);
    let (s, _, _, body) = fetch(
        &admin,
        "/api/export/audit.jsonl?action=device.*&target_id=24999999",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let entries: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{body}");
    assert_eq!(entries[0]["details"]["owner"], "mallory");

    // Each export is audited with its format and filters.
    let audited = app.audit_details("export.devices").await;
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(
        audited
            .iter()
            .any(|d| d["format"] == "csv" && d["filters"]["firmware"] == "5.4.3"),
        "{audited:?}"
    );
    assert_eq!(app.audit_details("export.audit").await.len(), 2);

    // A bad filter is a clear error and exports (and audits) nothing.
    let (s, ct, _, body) = fetch(&admin, "/api/export/audit.csv?from=yesterday").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        ct.starts_with("application/json") && body.contains("from"),
        "{ct} {body}"
    );
    let (s, _, _, body) = fetch(&admin, "/api/export/devices.csv?state=misplaced").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("misplaced"), "{body}");
    assert_eq!(app.audit_details("export.audit").await.len(), 2);
    assert_eq!(app.audit_details("export.devices").await.len(), 3);

    // Who may not read the rows gets none of them.
    let user = app.person("ulla", "user", "Ulla User").await;
    let helpdesk = app.person("hank", "helpdesk", "Hank Helpdesk").await;
    for path in [
        "/api/export/devices.csv",
        "/api/export/devices.jsonl",
        "/api/export/audit.csv",
        "/api/export/audit.jsonl",
    ] {
        let (s, _, _, body) = fetch(&user.api, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(!body.contains("24000000"), "{path}");
    }
    let (s, _, _, _) = fetch(&helpdesk.api, "/api/export/devices.csv").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _, body) = fetch(&helpdesk.api, "/api/export/audit.csv").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(app.audit_details("export.audit").await.len(), 2);
}

#[tokio::test]
async fn the_pages_link_their_exports_with_the_filters_in_use() {
    let app = TestApp::spawn().await;
    let admin = app.admin_browser().await;
    let (s, _, page) = admin
        .get_text("/devices?firmware=5.4.3&state=registered")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("href=\"/api/export/devices.csv?state=registered&#38;firmware=5.4.3\""),
        "{page}"
    );
    let (_, _, page) = admin.get_text("/audit?action=login.*&limit=20").await;
    assert!(
        page.contains("href=\"/api/export/audit.jsonl?action=login.*\""),
        "{page}"
    );
    // The browser's session cookie opens the export the link names.
    let r = admin.get("/api/export/audit.csv?action=login.*").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.lines().nth(1).unwrap().contains("login.ok"), "{body}");
}
