//! The chain head anchored outside PostgreSQL.
//!
//! The hash chain alone proves nothing to someone who can rewrite the whole
//! table: the database owner deletes the tail and fixes `audit_head`, or
//! re-hashes every row from some point on. So the server regularly writes the
//! head `(id, hash)` to OpenBao as an *anchor*, MACed with the transit key
//! `kleidia-audit` that never leaves OpenBao (non-exportable; the app's policy
//! may only `hmac` and `verify` with it):
//!
//! `{app_mount}/data/kleidia/audit-anchor` = `{id, hash, hmac, at}`
//!
//! The anchor is written with check-and-set and never moves backwards: a
//! writer refuses to replace an anchor whose id is not below the new head, whose
//! row no longer has the anchored hash, or whose HMAC does not verify, so the
//! evidence of tampering stays in OpenBao for `kleidia audit verify`.
//!
//! Every OpenBao call of the anchor is in [`AnchorStore`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::{AuditConfig, Config, OpenBaoConfig};
use crate::vault::{Bao, BaoError};

/// The transit key (HMAC type, non-exportable) created by `kleidia bootstrap`.
pub const KEY_NAME: &str = crate::vault::layout::AUDIT_KEY;
/// The anchor's path in the app's KV v2 mount.
pub const ANCHOR_PATH: &str = "kleidia/audit-anchor";

/// One anchor as stored in OpenBao.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The last audit row covered.
    pub id: i64,
    /// That row's hash, lower-case hex.
    pub hash: String,
    /// Transit HMAC (`vault:vN:…`) over [`Anchor::message`].
    pub hmac: String,
    /// When it was written (RFC 3339, UTC).
    pub at: String,
}

impl Anchor {
    /// The bytes the HMAC covers: every field but the HMAC, versioned.
    pub fn message(id: i64, hash_hex: &str, at: &str) -> String {
        format!("kleidia-audit-anchor/v1\nid={id}\nhash={hash_hex}\nat={at}\n")
    }

    fn signed_message(&self) -> String {
        Self::message(self.id, &self.hash, &self.at)
    }

    fn parse(v: Value) -> Result<Self, AnchorError> {
        let a: Anchor =
            serde_json::from_value(v).map_err(|e| AnchorError::Malformed(e.to_string()))?;
        let hex_ok = a.hash.len() == 64
            && a.hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if a.id < 1 || !hex_ok {
            return Err(AnchorError::Malformed(format!(
                "id {} / hash {:?} is not a row id and a SHA-256 hash",
                a.id, a.hash
            )));
        }
        Ok(a)
    }
}

/// An anchor and its KV v2 version.
#[derive(Debug, Clone)]
pub struct Stored {
    pub anchor: Anchor,
    pub version: u64,
}

/// Why the anchor writer left the stored anchor alone: each is a sign of
/// tampering, kept in OpenBao for `audit verify` to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the anchor covers row {anchored} but the log ends at row {last}: rows were cut off")]
    AheadOfDatabase { anchored: i64, last: i64 },
    #[error("row {id} no longer has the anchored hash: the log was rewritten")]
    RowChanged { id: i64 },
    #[error("row {id}, which the anchor covers, is gone")]
    RowGone { id: i64 },
    #[error("the stored anchor (row {id}) is forged: its HMAC does not verify")]
    Forged { id: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("reading the audit head: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the audit anchor in OpenBao is malformed: {0}")]
    Malformed(String),
    #[error("not anchoring the audit log: {0}")]
    Refused(#[from] Refusal),
}

/// What one anchoring pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The log is empty.
    Empty,
    /// The stored anchor already covers the head.
    UpToDate { id: i64 },
    /// A new anchor was written.
    Anchored { id: i64 },
    /// Other writers kept moving the anchor; try again later.
    Contended,
}

/// The anchor's OpenBao calls: transit HMAC/verify and the KV v2 entry.
#[derive(Clone, Debug)]
pub struct AnchorStore {
    bao: Bao,
    transit_mount: String,
    app_mount: String,
}

impl AnchorStore {
    pub fn new(bao: Bao, cfg: &OpenBaoConfig) -> Self {
        Self {
            bao,
            transit_mount: cfg.transit_mount.clone(),
            app_mount: cfg.app_mount.clone(),
        }
    }

    /// With the app's configured login (`openbao.auth`); `None` without one.
    pub fn from_config(config: &Config) -> Result<Option<Self>, BaoError> {
        let bao = crate::vault::client(&config.openbao)?;
        if bao.auth_method() == "none" {
            return Ok(None);
        }
        Ok(Some(Self::new(bao, &config.openbao)))
    }

    fn data_path(&self) -> String {
        format!("{}/data/{ANCHOR_PATH}", self.app_mount)
    }

    async fn hmac(&self, message: &str) -> Result<String, AnchorError> {
        let path = format!("{}/hmac/{KEY_NAME}", self.transit_mount);
        let resp = self
            .bao
            .write(&path, &json!({"input": STANDARD.encode(message)}))
            .await?;
        resp.pointer("/data/hmac")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| {
                AnchorError::Bao(BaoError::Unexpected {
                    path,
                    message: "no hmac in the answer".into(),
                })
            })
    }

    /// Whether OpenBao confirms the anchor's HMAC. A value that is not an
    /// HMAC at all is simply not valid.
    pub async fn verify(&self, anchor: &Anchor) -> Result<bool, AnchorError> {
        if !anchor.hmac.starts_with("vault:v") {
            return Ok(false);
        }
        let path = format!("{}/verify/{KEY_NAME}", self.transit_mount);
        let body = json!({
            "input": STANDARD.encode(anchor.signed_message()),
            "hmac": anchor.hmac,
        });
        match self.bao.write(&path, &body).await {
            Ok(v) => Ok(v.pointer("/data/valid").and_then(Value::as_bool) == Some(true)),
            Err(BaoError::Other {
                status: 400,
                ref message,
                ..
            }) if message.to_ascii_lowercase().contains("hmac") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The current anchor; `Malformed` when the entry is not an anchor.
    pub async fn read(&self) -> Result<Option<Stored>, AnchorError> {
        self.read_version(None).await
    }

    async fn read_version(&self, version: Option<u64>) -> Result<Option<Stored>, AnchorError> {
        let path = match version {
            Some(v) => format!("{}?version={v}", self.data_path()),
            None => self.data_path(),
        };
        let Some(resp) = self.bao.read(&path).await? else {
            return Ok(None);
        };
        let data = resp.pointer("/data/data").cloned().unwrap_or(Value::Null);
        if data.is_null() {
            // Deleted or destroyed version.
            return Ok(None);
        }
        let version = resp
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Some(Stored {
            anchor: Anchor::parse(data)?,
            version,
        }))
    }

    /// Every retained version, oldest first (malformed ones as errors).
    pub async fn history(&self) -> Result<Vec<(u64, Result<Anchor, String>)>, AnchorError> {
        let meta = self
            .bao
            .read(&format!("{}/metadata/{ANCHOR_PATH}", self.app_mount))
            .await?;
        let Some(meta) = meta else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u64> = meta
            .pointer("/data/versions")
            .and_then(Value::as_object)
            .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        versions.sort_unstable();
        let mut out = Vec::new();
        for v in versions {
            match self.read_version(Some(v)).await {
                Ok(Some(s)) => out.push((v, Ok(s.anchor))),
                Ok(None) => {}
                Err(AnchorError::Malformed(m)) => out.push((v, Err(m))),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Write with check-and-set `cas` (0: only if there is none). `false`
    /// when someone else wrote first.
    async fn write(&self, anchor: &Anchor, cas: u64) -> Result<bool, AnchorError> {
        let body = json!({"options": {"cas": cas}, "data": anchor});
        match self.bao.write(&self.data_path(), &body).await {
            Ok(_) => Ok(true),
            Err(BaoError::CasConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The chain head as the database says.
async fn head(db: &PgPool) -> Result<(i64, Vec<u8>), sqlx::Error> {
    sqlx::query_as("SELECT last_id, last_hash FROM audit_head WHERE singleton")
        .fetch_one(db)
        .await
}

/// Anchor the current head unless the stored anchor covers it already.
/// Refuses (and leaves the stored anchor as it is) when the database
/// contradicts the stored anchor.
pub async fn anchor_once(
    db: &PgPool,
    store: &AnchorStore,
    now: OffsetDateTime,
) -> Result<Outcome, AnchorError> {
    let (last_id, last_hash) = head(db).await?;
    if last_id == 0 {
        return Ok(Outcome::Empty);
    }
    let hash = hex::encode(&last_hash);
    for _ in 0..3 {
        let cas = match store.read().await? {
            None => 0,
            Some(Stored { anchor: a, version }) => {
                if a.id == last_id && a.hash == hash {
                    return Ok(Outcome::UpToDate { id: a.id });
                }
                if a.id > last_id {
                    return Err(Refusal::AheadOfDatabase {
                        anchored: a.id,
                        last: last_id,
                    }
                    .into());
                }
                let row: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
                        .bind(a.id)
                        .fetch_optional(db)
                        .await?;
                match row {
                    None => return Err(Refusal::RowGone { id: a.id }.into()),
                    Some(h) if hex::encode(&h) != a.hash => {
                        return Err(Refusal::RowChanged { id: a.id }.into())
                    }
                    Some(_) => {}
                }
                if !store.verify(&a).await? {
                    return Err(Refusal::Forged { id: a.id }.into());
                }
                version
            }
        };
        let at = now
            .format(&Rfc3339)
            .map_err(|e| AnchorError::Malformed(e.to_string()))?;
        let hmac = store.hmac(&Anchor::message(last_id, &hash, &at)).await?;
        let anchor = Anchor {
            id: last_id,
            hash: hash.clone(),
            hmac,
            at,
        };
        if store.write(&anchor, cas).await? {
            return Ok(Outcome::Anchored { id: last_id });
        }
    }
    Ok(Outcome::Contended)
}

// Appends tell the anchor task about themselves without waiting on OpenBao:
// an atomic store and, every `anchor_every_events`, a wake-up.
static LATEST: AtomicI64 = AtomicI64::new(0);
static ANCHORED: AtomicI64 = AtomicI64::new(0);
static EVERY: AtomicI64 = AtomicI64::new(i64::MAX);
static WAKE: Notify = Notify::const_new();

/// Called by [`super::record`] for each appended row (before its transaction
/// commits; the task waits a moment and anchors what is committed by then).
pub(crate) fn note_appended(id: i64) {
    LATEST.fetch_max(id, Ordering::Relaxed);
    if id.saturating_sub(ANCHORED.load(Ordering::Relaxed)) >= EVERY.load(Ordering::Relaxed) {
        WAKE.notify_one();
    }
}

/// One pass, logged; used by the background task and at shutdown.
pub async fn anchor_logged(db: &PgPool, store: &AnchorStore) {
    match anchor_once(db, store, OffsetDateTime::now_utc()).await {
        Ok(Outcome::Anchored { id }) => {
            ANCHORED.fetch_max(id, Ordering::Relaxed);
            tracing::debug!(id, "audit chain head anchored in OpenBao");
        }
        Ok(Outcome::UpToDate { id }) => {
            ANCHORED.fetch_max(id, Ordering::Relaxed);
        }
        Ok(Outcome::Empty | Outcome::Contended) => {}
        Err(AnchorError::Refused(r)) => {
            tracing::error!(problem = %r, "audit anchor NOT moved: the database contradicts the anchor in OpenBao; run `kleidia audit verify`");
        }
        Err(e) => {
            tracing::warn!(error = %e, "anchoring the audit chain head in OpenBao failed (is `kleidia bootstrap` up to date?); will retry");
        }
    }
}

/// The background task: anchor every `anchor_interval_secs` (if the head
/// moved) and as soon as `anchor_every_events` events were appended.
pub async fn run(db: PgPool, store: AnchorStore, cfg: AuditConfig) {
    EVERY.store(
        i64::try_from(cfg.anchor_every_events).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.anchor_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = WAKE.notified() => {
                // Let the appending transaction commit.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        anchor_logged(&db, &store).await;
    }
}

/// `kleidia audit anchor`: one pass now, with the app's token.
pub async fn command(config: &Config) -> anyhow::Result<()> {
    let Some(store) = AnchorStore::from_config(config)? else {
        anyhow::bail!("no OpenBao login: set openbao.auth and its keys (the app's own login)");
    };
    let pool = crate::db::connect(&config.database).await?;
    match anchor_once(&pool, &store, OffsetDateTime::now_utc()).await? {
        Outcome::Empty => println!("audit anchor: the log is empty, nothing to anchor"),
        Outcome::UpToDate { id } => println!("audit anchor: rows 1 to {id} were anchored already"),
        Outcome::Anchored { id } => println!("audit anchor: rows 1 to {id} anchored"),
        Outcome::Contended => {
            anyhow::bail!("other writers kept moving the anchor; try again")
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn anchor() -> Anchor {
        Anchor {
            id: 7,
            hash: "ab".repeat(32),
            hmac: "vault:v1:x".into(),
            at: "2026-11-30T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_hmac_covers_id_hash_and_time() {
        let a = anchor();
        let m = a.signed_message();
        for other in [
            Anchor::message(8, &a.hash, &a.at),
            Anchor::message(7, &"cd".repeat(32), &a.at),
            Anchor::message(7, &a.hash, "2026-11-30T00:00:01Z"),
        ] {
            assert_ne!(m, other);
        }
        assert_eq!(m, Anchor::message(7, &a.hash, &a.at));
    }

    #[test]
    fn a_stored_anchor_must_name_a_row_and_a_sha256_hash() {
        let ok = serde_json::to_value(anchor()).unwrap();
        assert_eq!(Anchor::parse(ok.clone()).unwrap(), anchor());
        let mut bad = ok.clone();
        bad["hash"] = json!("AB".repeat(32));
        assert!(Anchor::parse(bad).is_err());
        let mut bad = ok.clone();
        bad["id"] = json!(0);
        assert!(Anchor::parse(bad).is_err());
        let mut bad = ok.clone();
        bad["extra"] = json!(1);
        assert!(Anchor::parse(bad).is_err());
        assert!(Anchor::parse(json!({"id": 1})).is_err());
    }
}
