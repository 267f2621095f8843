//! Issue 12, hole 5: the audit chain against whoever owns the database.
//!
//! The head is anchored in OpenBao (transit HMAC + KV v2), and the server runs
//! as a runtime role that cannot touch the append-only triggers. Each test
//! starts its own OpenBao with `kleidia bootstrap`'s layout, gives the app a
//! token with the `kleidia-app` policy only, and plays an insider: the
//! database owner with psql, the runtime role, or the holder of the app's
//! token.

use std::time::Duration;

use kleidia_tests::app::kleidia_command;
use kleidia_tests::{wait_until, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

mod roles;

const ANCHOR: &str = "secret/data/kleidia/audit-anchor";

/// How the server anchors on its own.
enum Anchoring {
    /// Every second (the periodic task).
    EverySecond,
    /// Only after this many events (the append notification).
    EveryEvents(u32),
    /// Only when the test runs `kleidia audit anchor`.
    OnDemand,
}

/// Its own OpenBao (bootstrapped), the server as the runtime role with a
/// `kleidia-app` token, anchoring as asked; the first admin created through
/// the runtime role as an operator would.
async fn start(anchoring: Anchoring) -> TestApp {
    let (interval, every) = match anchoring {
        Anchoring::EverySecond => (1, 100_000),
        Anchoring::EveryEvents(n) => (3600, n),
        Anchoring::OnDemand => (3600, 100_000),
    };
    TestApp::builder()
        .own_openbao()
        .runtime_role()
        .env("KLEIDIA_AUDIT_ANCHOR_INTERVAL_SECS", &interval.to_string())
        .env("KLEIDIA_AUDIT_ANCHOR_EVERY_EVENTS", &every.to_string())
        .start()
        .await
}

/// The audit log and its anchor as the insider and the auditor see them.
trait AuditSite {
    async fn events(&self, n: usize);
    async fn owner(&self) -> PgPool;
    async fn last_id(&self) -> i64;
    async fn row_hash(&self, id: i64) -> String;
    async fn anchor(&self) -> Option<Value>;
    async fn wait_anchored(&self, id: i64);
    fn kleidia(&self, args: &[&str], with_token: bool) -> (bool, String);
    fn verify(&self) -> (bool, String);
    fn verify_chain_only(&self) -> (bool, String);
    fn anchor_now(&self) -> (bool, String);
}

impl AuditSite for TestApp {
    /// `n` sign-ins: one audit event each.
    async fn events(&self, n: usize) {
        let mut api = self.api();
        for _ in 0..n {
            api.login("admin", ADMIN_PASSWORD).await.unwrap();
        }
    }

    async fn owner(&self) -> PgPool {
        self.db.pool().await.unwrap()
    }

    async fn last_id(&self) -> i64 {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_log")
            .fetch_one(&self.owner().await)
            .await
            .unwrap()
    }

    async fn row_hash(&self, id: i64) -> String {
        let h: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
            .bind(id)
            .fetch_one(&self.owner().await)
            .await
            .unwrap();
        hex::encode(h)
    }

    /// The current anchor (`data` and `metadata`), read with the root token.
    async fn anchor(&self) -> Option<Value> {
        let (s, v) = self.root_bao().call("GET", ANCHOR, None).await.unwrap();
        s.is_success().then(|| v["data"].clone())
    }

    async fn wait_anchored(&self, id: i64) {
        let ok = wait_until(Duration::from_secs(20), || async {
            self.anchor()
                .await
                .is_some_and(|a| a["data"]["id"].as_i64() == Some(id))
        })
        .await;
        assert!(
            ok,
            "the head {id} was not anchored; anchor {:?}; log:\n{}",
            self.anchor().await,
            self.log()
        );
    }

    fn kleidia(&self, args: &[&str], with_token: bool) -> (bool, String) {
        let mut c = kleidia_command();
        c.args(args)
            .env("KLEIDIA_DATABASE_URL", self.runtime_url())
            .env("KLEIDIA_OPENBAO_ADDR", &self.root_bao().addr);
        if with_token {
            c.env("KLEIDIA_OPENBAO_TOKEN", self.app_bao_token());
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `kleidia audit verify` as an auditor runs it: the runtime role's URL
    /// and the app's OpenBao token.
    fn verify(&self) -> (bool, String) {
        self.kleidia(&["audit", "verify"], true)
    }

    /// The same without an OpenBao token: the hash chain alone.
    fn verify_chain_only(&self) -> (bool, String) {
        self.kleidia(&["audit", "verify"], false)
    }

    fn anchor_now(&self) -> (bool, String) {
        self.kleidia(&["audit", "anchor"], true)
    }
}

/// The indented problem lines of `audit verify`.
fn problems(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Row n's hash exactly as Kleidia computes it (app/src/audit):
/// SHA-256(prev_hash || compact JSON of [id, created_at (RFC 3339 UTC,
/// shortest fraction), actor_id, actor_name, action, target_type, target_id,
/// details (keys sorted), ip]). What an insider with psql reimplements.
fn chain_hash(prev: &[u8], row: &Value) -> Vec<u8> {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    canonical(&m[*k], out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    canonical(row, &mut s);
    let mut h = Sha256::new();
    h.update(prev);
    h.update(s.as_bytes());
    h.finalize().to_vec()
}

/// As the owner: rewrite row `from` (a new actor name) and recompute the hash
/// of it and of every later row, then fix `audit_head`. One transaction, the
/// triggers switched off and on again around it.
async fn rehash_from(owner: &PgPool, from: i64) {
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut prev: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
        .bind(from - 1)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let rows: Vec<(i64, String, Value)> = sqlx::query_as(
        "SELECT id, \
                rtrim(rtrim(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.') || 'Z', \
                json_build_array(id, NULL, actor_id::text, actor_name, action, target_type, target_id, details, ip) \
           FROM audit_log WHERE id >= $1 ORDER BY id",
    )
    .bind(from)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    for (id, time, mut row) in rows {
        row[1] = json!(time);
        if id == from {
            row[3] = json!("nobody-was-here");
        }
        let hash = chain_hash(&prev, &row);
        sqlx::query(
            "UPDATE audit_log SET actor_name = $2, prev_hash = $3, hash = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(row[3].as_str().unwrap())
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE audit_head SET last_id = $1, last_hash = $2")
            .bind(id)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .unwrap();
        prev = hash;
    }
    sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_server_anchors_the_head_every_n_events_and_verify_checks_it_through_openbao() {
    let site = start(Anchoring::EveryEvents(5)).await;
    site.events(6).await;
    // The append notification, not the hourly timer, anchors at 5 or more.
    let ok = wait_until(Duration::from_secs(20), || async {
        site.anchor()
            .await
            .is_some_and(|a| a["data"]["id"].as_i64().unwrap_or(0) >= 5)
    })
    .await;
    assert!(ok, "no anchor after 6 events; log:\n{}", site.log());
    // Let a wake-up that was already pending settle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a = site.anchor().await.unwrap()["data"].clone();
    let id = a["id"].as_i64().unwrap();
    assert_eq!(a["hash"].as_str().unwrap(), site.row_hash(id).await);
    assert!(a["hmac"].as_str().unwrap().starts_with("vault:v1:"), "{a}");

    site.events(2).await;
    let last = site.last_id().await;
    assert!(last > id);
    let (ok, out) = site.verify();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{last} rows, chain intact")), "{out}");
    assert!(
        out.contains(&format!("anchor: rows 1 to {id} anchored in OpenBao")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "after the anchor: rows {} to {last} covered by the hash chain only",
            id + 1
        )),
        "{out}"
    );
    // Without a token the chain is checked and the blind spot is named.
    let (ok, out) = site.verify_chain_only();
    assert!(ok, "{out}");
    assert!(out.contains("anchor: not checked"), "{out}");
}

#[tokio::test]
async fn the_owner_cutting_the_tail_and_fixing_the_head_is_reported_as_truncation() {
    let site = start(Anchoring::EverySecond).await;
    site.events(8).await;
    let head = site.last_id().await;
    site.wait_anchored(head).await;
    let (ok, out) = site.verify();
    assert!(ok, "{out}");

    // The owner deletes the last three rows and points audit_head at the
    // new last row, so the chain and its head agree again.
    let keep = head - 3;
    let owner = site.owner().await;
    let mut tx = owner.begin().await.unwrap();
    for sql in [
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
        "DELETE FROM audit_log WHERE id > $1",
        "UPDATE audit_head SET last_id = l.id, last_hash = l.hash FROM audit_log l WHERE l.id = $1",
        "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(keep) } else { q };
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    // The chain alone cannot tell.
    let (ok, out) = site.verify_chain_only();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{keep} rows, chain intact")), "{out}");

    let (ok, out) = site.verify();
    assert!(!ok, "{out}");
    assert_eq!(
        problems(&out),
        vec![format!(
            "truncated: the log ends at row {keep} but the anchor in OpenBao covers rows up to {head}: rows {} to {head} are gone",
            keep + 1
        )],
        "{out}"
    );

    // The server keeps appending, but never moves the anchor back over the cut.
    site.events(1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = site.anchor().await.unwrap();
    assert_eq!(a["data"]["id"].as_i64(), Some(head), "{a}");
    assert!(
        site.log().contains("audit anchor NOT moved"),
        "{}",
        site.log()
    );
    // Once the log grows past the anchored id again, the anchored rows exist
    // with other hashes: the same cut now shows as rewriting (at the oldest
    // anchored row after the cut).
    site.events(3).await;
    let (ok, out) = site.verify();
    assert!(!ok, "{out}");
    let rewritten: Vec<i64> = problems(&out)
        .iter()
        .filter_map(|p| {
            p.strip_prefix("row ")?
                .split_once(" was rewritten")?
                .0
                .parse()
                .ok()
        })
        .collect();
    assert!(
        rewritten.len() == 1 && rewritten[0] > keep && rewritten[0] <= head,
        "{out}"
    );
    assert_eq!(
        site.anchor().await.unwrap()["data"]["id"].as_i64(),
        Some(head)
    );
}

#[tokio::test]
async fn the_owner_rehashing_the_chain_from_a_row_onward_is_reported_as_rewritten() {
    let site = start(Anchoring::OnDemand).await;
    site.events(4).await;
    let first = site.last_id().await;
    let (ok, out) = site.anchor_now();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("rows 1 to {first} anchored")),
        "{out}"
    );
    site.events(4).await;
    let second = site.last_id().await;
    let (ok, out) = site.anchor_now();
    assert!(ok, "{out}");
    site.wait_anchored(second).await;
    site.events(2).await;
    let last = site.last_id().await;

    // Rewrite a row between the two anchors and re-hash everything after it.
    let from = first + 2;
    rehash_from(&site.owner().await, from).await;
    let actor: String = sqlx::query_scalar("SELECT actor_name FROM audit_log WHERE id = $1")
        .bind(from)
        .fetch_one(&site.owner().await)
        .await
        .unwrap();
    assert_eq!(actor, "nobody-was-here");

    // The re-hashed chain is consistent: the chain alone passes.
    let (ok, out) = site.verify_chain_only();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{last} rows, chain intact")), "{out}");

    let (ok, out) = site.verify();
    assert!(!ok, "{out}");
    assert_eq!(
        problems(&out),
        vec![format!(
            "row {second} was rewritten: its hash is not the one anchored in OpenBao, so the chain was re-hashed at or before row {second} (after row {first}, which still matches an earlier anchor)"
        )],
        "{out}"
    );

    // Anchoring now is refused and leaves the evidence in OpenBao.
    let before = site.anchor().await.unwrap();
    let (ok, out) = site.anchor_now();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("row {second} no longer has the anchored hash")),
        "{out}"
    );
    assert_eq!(site.anchor().await.unwrap(), before);
}

#[tokio::test]
async fn an_anchor_forged_with_the_apps_token_is_reported_and_never_built_upon() {
    let site = start(Anchoring::OnDemand).await;
    site.events(3).await;
    let (ok, out) = site.anchor_now();
    assert!(ok, "{out}");
    let genuine = site.anchor().await.unwrap();
    let version = genuine["metadata"]["version"].as_u64().unwrap();

    // The app's token may MAC with the key, but never read, export,
    // reconfigure or delete it, nor delete the anchor.
    let app = site.root_bao().with_token(site.app_bao_token());
    for (method, path, body) in [
        ("GET", "transit/keys/kleidia-audit", None),
        ("GET", "transit/export/hmac-key/kleidia-audit", None),
        ("GET", "transit/backup/kleidia-audit", None),
        (
            "POST",
            "transit/keys/kleidia-audit/config",
            Some(json!({"exportable": true, "deletion_allowed": true})),
        ),
        ("DELETE", "transit/keys/kleidia-audit", None),
        ("DELETE", ANCHOR, None),
        ("DELETE", "secret/metadata/kleidia/audit-anchor", None),
        (
            "POST",
            "secret/destroy/kleidia/audit-anchor",
            Some(json!({"versions": [version]})),
        ),
    ] {
        let (s, v) = app.call(method, path, body.as_ref()).await.unwrap();
        assert_eq!(s, 403, "{method} {path}: {s} {v}");
    }
    let key = site
        .root_bao()
        .get("transit/keys/kleidia-audit")
        .await
        .unwrap();
    assert_eq!(key["data"]["exportable"], false, "{key}");
    assert_eq!(key["data"]["type"], "hmac", "{key}");

    // A forged anchor over the real head, written with the app's token.
    let head = site.last_id().await;
    let forged = json!({
        "id": head,
        "hash": site.row_hash(head).await,
        "hmac": "vault:v1:bm90IGFuIEhNQUMgYnkgT3BlbkJhbyBhdCBhbGwhISE=",
        "at": "2026-01-01T00:00:00Z",
    });
    app.post(
        ANCHOR,
        &json!({"options": {"cas": version}, "data": forged}),
    )
    .await
    .unwrap();

    let (ok, out) = site.verify();
    assert!(!ok, "{out}");
    assert_eq!(
        problems(&out),
        vec![format!(
            "the anchor in OpenBao is forged (version {}): its HMAC over row {head} does not verify",
            version + 1
        )],
        "{out}"
    );

    // Nothing builds on it: anchoring is refused and the forgery stays.
    site.events(2).await;
    let (ok, out) = site.anchor_now();
    assert!(!ok, "{out}");
    assert!(out.contains("is forged"), "{out}");
    assert_eq!(site.anchor().await.unwrap()["data"], forged);
}
