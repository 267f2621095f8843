//! tower-sessions store on `user_sessions`.
//!
//! Kleidia creates the row itself at sign-in (in the same transaction as the
//! audit entry) and puts its id into the session data under
//! [`super::SESSION_KEY`]; when tower-sessions then stores the record, this
//! store binds the cookie's id to that row by its SHA-256 (`token_hash`), so a
//! database dump holds no usable cookie. A record without that key (an
//! anonymous visitor) is never stored. Every lookup checks both expiries, so
//! an expired row is dead even before the sweeper deletes it.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result};
use tower_sessions::SessionStore;
use uuid::Uuid;

use super::SESSION_KEY;

#[derive(Clone, Debug)]
pub struct PgSessionStore {
    db: PgPool,
}

impl PgSessionStore {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

pub fn token_hash(id: &Id) -> Vec<u8> {
    Sha256::digest(id.0.to_le_bytes()).to_vec()
}

fn backend(e: sqlx::Error) -> Error {
    Error::Backend(e.to_string())
}

fn kleidia_sid(record: &Record) -> Option<Uuid> {
    record
        .data
        .get(SESSION_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, record: &mut Record) -> Result<()> {
        let Some(sid) = kleidia_sid(record) else {
            return Ok(());
        };
        let data = serde_json::to_value(&record.data).map_err(|e| Error::Encode(e.to_string()))?;
        loop {
            let res = sqlx::query(
                "UPDATE user_sessions SET token_hash = $2, data = $3 \
                 WHERE id = $1 AND kind = 'browser' AND token_hash IS NULL",
            )
            .bind(sid)
            .bind(token_hash(&record.id))
            .bind(&data)
            .execute(&self.db)
            .await;
            match res {
                Ok(r) if r.rows_affected() == 1 => return Ok(()),
                Ok(_) => {
                    return Err(Error::Backend(
                        "the session row is gone or already bound".into(),
                    ))
                }
                // A 128-bit collision: draw another id.
                Err(sqlx::Error::Database(e))
                    if e.constraint() == Some("user_sessions_token_hash_key") =>
                {
                    record.id = Id::default();
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }

    async fn save(&self, record: &Record) -> Result<()> {
        let data = serde_json::to_value(&record.data).map_err(|e| Error::Encode(e.to_string()))?;
        sqlx::query("UPDATE user_sessions SET data = $2 WHERE token_hash = $1")
            .bind(token_hash(&record.id))
            .bind(&data)
            .execute(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        let row: Option<(serde_json::Value, OffsetDateTime)> = sqlx::query_as(
            "SELECT s.data, s.expires_at FROM user_sessions s \
             WHERE s.token_hash = $1 AND s.kind = 'browser' \
               AND s.expires_at > now() AND s.absolute_expires_at > now()",
        )
        .bind(token_hash(id))
        .fetch_optional(&self.db)
        .await
        .map_err(backend)?;
        let Some((data, expiry_date)) = row else {
            return Ok(None);
        };
        let data = serde_json::from_value(data).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> Result<()> {
        sqlx::query("DELETE FROM user_sessions WHERE token_hash = $1")
            .bind(token_hash(id))
            .execute(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
