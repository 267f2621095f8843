//! The audit log: append-only, hash-chained, written in the caller's
//! transaction so an event exists exactly when the change it records does.
//!
//! Row n: `hash = SHA-256(prev_hash || canonical(n))`, `prev_hash` = row
//! n-1's hash (32 zero bytes for row 1). `canonical` is compact JSON of
//! `[id, created_at, actor_id, actor_name, action, target_type, target_id,
//! details, ip]` with object keys sorted and the time as RFC 3339 UTC with
//! microseconds (what PostgreSQL stores). `audit_head` holds the last id and
//! hash; writers lock it `FOR UPDATE`, which serialises appends (no forks, no
//! id gaps) and lets `verify` notice a deleted last row.
//!
//! Whoever owns the table could still cut the tail or re-hash the chain, so
//! the head is also anchored in OpenBao ([`anchor`]) and the server's
//! database role may only read and append ([`crate::db::roles`]).

pub mod anchor;
pub mod query;
pub mod verify;

pub use verify::{verify, Problem, VerifyReport};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// Who did something, for the audit log (the signed-in `auth::CurrentUser`).
pub trait Actor {
    fn actor_id(&self) -> Uuid;
    fn actor_name(&self) -> &str;
}

/// Where a request comes from, for the audit log and sign-in throttling
/// (filled in by `web::extract`).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One event to record. Build with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor_id: Option<Uuid>,
    /// The actor's username at the time (or "system", "cli", or the name a
    /// failed sign-in typed).
    pub actor_name: String,
    /// Dotted verb, e.g. `login.ok`, `user.disable`, `device.suspend`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Never a secret: no PIN, PUK, key or password goes here.
    pub details: Value,
    pub ip: Option<String>,
}

impl AuditEvent {
    pub fn new(action: &str) -> Self {
        Self {
            actor_id: None,
            actor_name: "system".into(),
            action: action.into(),
            target_type: None,
            target_id: None,
            details: Value::Object(Default::default()),
            ip: None,
        }
    }

    /// The signed-in user as the actor.
    pub fn actor(mut self, who: &impl Actor) -> Self {
        self.actor_id = Some(who.actor_id());
        self.actor_name = who.actor_name().to_string();
        self
    }

    pub fn actor_named(mut self, id: Option<Uuid>, name: &str) -> Self {
        self.actor_id = id;
        self.actor_name = name.chars().take(200).collect();
        self
    }

    pub fn target(mut self, kind: &str, id: impl ToString) -> Self {
        self.target_type = Some(kind.into());
        self.target_id = Some(id.to_string());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn from_client(mut self, meta: &ClientMeta) -> Self {
        self.ip = meta.ip.clone();
        self
    }
}

/// Append `event` in the caller's transaction; returns its id. Pass
/// `&mut *tx` for a `Transaction`. The chain head stays locked until that
/// transaction ends, so keep the transaction short.
pub async fn record(conn: &mut PgConnection, event: AuditEvent) -> Result<i64, sqlx::Error> {
    // Two round trips, the head locked from the first: lock the head and
    // normalise the details through jsonb (so the hash covers exactly what
    // is stored) in one statement, then write the row and move the head in
    // another. Fewer round trips under the lock, shorter waits behind it.
    let (last_id, last_hash, details): (i64, Vec<u8>, Value) = sqlx::query_as(
        "SELECT last_id, last_hash, $1::jsonb FROM audit_head WHERE singleton FOR UPDATE",
    )
    .bind(&event.details)
    .fetch_one(&mut *conn)
    .await?;
    let row = ChainRow {
        id: last_id + 1,
        created_at: now_micros(),
        actor_id: event.actor_id,
        actor_name: event.actor_name,
        action: event.action,
        target_type: event.target_type,
        target_id: event.target_id,
        details,
        ip: event.ip,
        prev_hash: last_hash,
        hash: Vec::new(),
    };
    let hash = row.compute_hash();
    let moved = sqlx::query(
        "WITH appended AS ( \
           INSERT INTO audit_log (id, created_at, actor_id, actor_name, action, target_type, \
                                  target_id, details, ip, prev_hash, hash) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id) \
         UPDATE audit_head SET last_id = (SELECT id FROM appended), last_hash = $11 \
         WHERE singleton",
    )
    .bind(row.id)
    .bind(row.created_at)
    .bind(row.actor_id)
    .bind(&row.actor_name)
    .bind(&row.action)
    .bind(&row.target_type)
    .bind(&row.target_id)
    .bind(&row.details)
    .bind(&row.ip)
    .bind(&row.prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(sqlx::Error::RowNotFound);
    }
    anchor::note_appended(row.id);
    Ok(row.id)
}

/// Record one event in a transaction of its own (events with no other change,
/// such as a failed sign-in).
pub async fn record_alone(db: &PgPool, event: AuditEvent) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let id = record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(id)
}

fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1000 * 1000;
    now.replace_nanosecond(micros).unwrap_or(now)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainRow {
    pub id: i64,
    pub created_at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub details: Value,
    pub ip: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl ChainRow {
    pub fn canonical(&self) -> String {
        let time = self
            .created_at
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
        let items = [
            Value::from(self.id),
            Value::from(time),
            self.actor_id
                .map(|u| Value::from(u.to_string()))
                .unwrap_or(Value::Null),
            Value::from(self.actor_name.clone()),
            Value::from(self.action.clone()),
            self.target_type
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
            self.target_id
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
            self.details.clone(),
            self.ip.clone().map(Value::from).unwrap_or(Value::Null),
        ];
        let mut out = String::new();
        canonical_json(&Value::Array(items.to_vec()), &mut out);
        out
    }

    pub fn compute_hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(&self.prev_hash);
        h.update(self.canonical().as_bytes());
        h.finalize().to_vec()
    }
}

/// Compact JSON with object keys sorted, whatever serde_json's map order.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
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
                if let Some(x) = m.get(*k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlx::PgPool;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"d": [1, {"z": 1, "y": "é"}], "c": null}}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,{"y":"é","z":1}]},"b":1}"#);
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let row = ChainRow {
            id: 1,
            created_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            actor_id: None,
            actor_name: "alice".into(),
            action: "login.ok".into(),
            target_type: Some("user".into()),
            target_id: Some("x".into()),
            details: json!({"k": "v"}),
            ip: Some("127.0.0.1".into()),
            prev_hash: vec![0; 32],
            hash: vec![],
        };
        let h = row.compute_hash();
        let mut changed = vec![];
        let mut r = row.clone();
        r.actor_name = "mallory".into();
        changed.push(r);
        let mut r = row.clone();
        r.details = json!({"k": "w"});
        changed.push(r);
        let mut r = row.clone();
        r.prev_hash = vec![1; 32];
        changed.push(r);
        let mut r = row.clone();
        r.ip = None;
        changed.push(r);
        for r in changed {
            assert_ne!(r.compute_hash(), h, "{}", r.canonical());
        }
        assert_eq!(row.compute_hash(), h);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn concurrent_writers_extend_one_chain_without_forks_or_gaps(db: PgPool) {
        let mut tasks = Vec::new();
        for i in 0..24 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                record_alone(
                    &db,
                    AuditEvent::new("test.concurrent").details(json!({"n": i})),
                )
                .await
                .unwrap()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, (1..=24).collect::<Vec<i64>>());
        let report = verify(&db).await.unwrap();
        assert_eq!(report.rows, 24);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn an_event_in_a_rolled_back_transaction_leaves_no_trace(db: PgPool) {
        record_alone(&db, AuditEvent::new("test.kept"))
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        record(&mut tx, AuditEvent::new("test.rolled_back"))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let id = record_alone(&db, AuditEvent::new("test.after"))
            .await
            .unwrap();
        assert_eq!(id, 2, "the rolled-back event's id is reused: no gap");
        let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(actions, vec!["test.kept", "test.after"]);
        assert!(verify(&db).await.unwrap().problems.is_empty());
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn a_row_rewritten_with_a_recomputed_hash_is_still_found(db: PgPool) {
        for i in 0..4 {
            record_alone(&db, AuditEvent::new("test.row").details(json!({"n": i})))
                .await
                .unwrap();
        }
        // Rewrite row 2 and recompute its own hash: the next row's link breaks.
        let mut row: ChainRow = sqlx::query_as(
            "SELECT id, created_at, actor_id, actor_name, action, target_type, target_id, details, ip, \
                    prev_hash, hash FROM audit_log WHERE id = 2",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        row.actor_name = "someone else".into();
        let h = row.compute_hash();
        sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
            .execute(&db)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET actor_name = $1, hash = $2 WHERE id = 2")
            .bind(&row.actor_name)
            .bind(&h)
            .execute(&db)
            .await
            .unwrap();
        let report = verify(&db).await.unwrap();
        assert_eq!(report.problems, vec![Problem::Altered { id: 2 }]);
    }
}
