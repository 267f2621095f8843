//! KV v2 helpers for Kleidia's own secrets (`secret/data/kleidia/…`).

use serde_json::{json, Value};

use super::{Bao, BaoError};

/// The current version's `data` of `{mount}/data/{path}`, or `None`.
pub async fn read(bao: &Bao, mount: &str, path: &str) -> Result<Option<Value>, BaoError> {
    Ok(bao
        .read(&format!("{mount}/data/{path}"))
        .await?
        .and_then(|v| v.pointer("/data/data").cloned())
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
    if let Some(v) = read(bao, mount, path).await? {
        return Ok(v);
    }
    let res = bao
        .write(
            &format!("{mount}/data/{path}"),
            &json!({"options": {"cas": 0}, "data": data}),
        )
        .await;
    match res {
        Ok(_) => {}
        // Someone else created it between our read and write.
        Err(BaoError::Api {
            status: 400,
            ref message,
            ..
        }) if message.contains("check-and-set") => {}
        Err(e) => return Err(e),
    }
    read(bao, mount, path)
        .await?
        .ok_or_else(|| BaoError::Unexpected {
            path: format!("{mount}/data/{path}"),
            message: "secret missing right after it was written".into(),
        })
}
