//! Reading and changing the stored [`Policy`] (`settings` row `policy`).

use serde_json::json;
use sqlx::PgPool;

use super::policy::Policy;
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::error::AppError;

const KEY: &str = "policy";

/// The policy in force: the stored one, or the defaults when none was saved.
pub async fn policy(db: &PgPool) -> Result<Policy, AppError> {
    let v: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(KEY)
            .fetch_optional(db)
            .await?;
    match v {
        None => Ok(Policy::default()),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("stored policy does not parse: {e}"))),
    }
}

/// Validate and store a new policy, audited with what changed.
pub async fn save(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    new: Policy,
) -> Result<Policy, AppError> {
    new.validate().map_err(AppError::Unprocessable)?;
    let old = policy(db).await?;
    let old_v = serde_json::to_value(&old).map_err(|e| AppError::Internal(e.into()))?;
    let new_v = serde_json::to_value(&new).map_err(|e| AppError::Internal(e.into()))?;
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
