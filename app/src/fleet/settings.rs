//! Reading and changing the stored [`Policy`] (`settings` row `policy`).

use serde_json::json;
use sqlx::PgPool;

use super::policy::Policy;
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};

const KEY: &str = "policy";

/// The stored policy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("stored policy does not parse: {0}")]
    Corrupt(serde_json::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum SavePolicyError {
    /// The rule the new policy breaks.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Read(#[from] PolicyError),
    #[error("policy as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The policy in force: the stored one, or the defaults when none was saved.
pub async fn policy(db: &PgPool) -> Result<Policy, PolicyError> {
    let v: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(KEY)
            .fetch_optional(db)
            .await?;
    match v {
        None => Ok(Policy::default()),
        Some(v) => serde_json::from_value(v).map_err(PolicyError::Corrupt),
    }
}

/// Validate and store a new policy, audited with what changed.
pub async fn save(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    new: Policy,
) -> Result<Policy, SavePolicyError> {
    new.validate().map_err(SavePolicyError::Invalid)?;
    let old = policy(db).await?;
    let old_v = serde_json::to_value(&old)?;
    let new_v = serde_json::to_value(&new)?;
    let changed: Vec<String> = new_v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| old_v.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(KEY)
    .bind(&new_v)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("settings.policy")
            .actor(u)
            .from_client(meta)
            .target("settings", KEY)
            .details(json!({"changed": changed, "old": old_v, "new": new_v})),
    )
    .await?;
    tx.commit().await?;
    Ok(new)
}
