//! KV v2 helpers for Kleidia's own secrets (`secret/data/kleidia/…`).

use serde_json::Value;

use super::{Bao, BaoError};

/// The current version's `data` of `{mount}/data/{path}`, or `None`.
pub async fn read(bao: &Bao, mount: &str, path: &str) -> Result<Option<Value>, BaoError> {
    Ok(bao
        .kv2(mount)
        .read::<Value>(path)
        .await?
        .map(|v| v.data)
        .filter(|d| !d.is_null()))
}

/// Write `data` only if the secret does not exist yet (check-and-set 0).
/// Returns the secret as stored afterwards: ours, or the one a concurrent
/// replica wrote first, so every replica ends up with the same value.
pub async fn get_or_create(
    bao: &Bao,
    mount: &str,
    path: &str,
    data: Value,
) -> Result<Value, BaoError> {
    bao.kv2(mount).get_or_create(path, &data).await
}
