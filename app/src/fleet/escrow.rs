//! The escrow: `{kv_mount}/data/{serial}/secrets` in OpenBao KV v2. Every
//! change is a new version written with check-and-set, so two writers can
//! never overwrite each other and no rotation replaces the only copy. The app's
//! policy has no delete or destroy rights: old versions stay retrievable.
//!
//! OpenBao keeps a bounded window of versions per secret (bootstrap sets
//! `max_versions`, see `vault::bootstrap::KV_MAX_VERSIONS`). Authorising a
//! secret change first re-escrows the confirmed values as the latest version
//! when abandoned attempts sit above it ([`Escrow::recopy`]), so at most one
//! attempt is ever newer than the confirmed version and it never leaves the window.

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::secrets::DeviceSecrets;
use crate::domain::Serial;
use crate::vault::{Bao, BaoError};

#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("the escrow of device {0} changed concurrently; try again")]
    Conflict(Serial),
    #[error("escrow version {version} of device {serial} is missing or unreadable")]
    Missing { serial: Serial, version: u64 },
}

/// One version's metadata (dates only; never values).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub destroyed: bool,
    /// Soft-deleted (`deletion_time` set): unreadable until undeleted.
    pub deleted: bool,
}

impl VersionInfo {
    pub fn readable(&self) -> bool {
        !self.destroyed && !self.deleted
    }
}

#[derive(Clone, Copy)]
pub struct Escrow<'a> {
    pub bao: &'a Bao,
    pub mount: &'a str,
}

impl Escrow<'_> {
    fn data_path(&self, serial: Serial) -> String {
        format!("{}/data/{serial}/secrets", self.mount)
    }

    /// Versions, oldest first, and the latest version number (0 = none yet).
    pub async fn versions(&self, serial: Serial) -> Result<(u64, Vec<VersionInfo>), EscrowError> {
        let Some(meta) = self
            .bao
            .read(&format!("{}/metadata/{serial}/secrets", self.mount))
            .await?
        else {
            return Ok((0, Vec::new()));
        };
        let current = meta
            .pointer("/data/current_version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut out: Vec<VersionInfo> = meta
            .pointer("/data/versions")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some(VersionInfo {
                            version: k.parse().ok()?,
                            created_at: v.get("created_time").and_then(Value::as_str).and_then(
                                |t| {
                                    OffsetDateTime::parse(
                                        t,
                                        &time::format_description::well_known::Rfc3339,
                                    )
                                    .ok()
                                },
                            ),
                            destroyed: v.get("destroyed").and_then(Value::as_bool).unwrap_or(false),
                            deleted: v
                                .get("deletion_time")
                                .and_then(Value::as_str)
                                .is_some_and(|t| !t.is_empty()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|v| v.version);
        Ok((current, out))
    }

    /// The values of one version.
    pub async fn read(&self, serial: Serial, version: u64) -> Result<DeviceSecrets, EscrowError> {
        let v = self
            .bao
            .read(&format!("{}?version={version}", self.data_path(serial)))
            .await?
            .ok_or(EscrowError::Missing { serial, version })?;
        let data = v.pointer("/data/data").cloned().unwrap_or(Value::Null);
        serde_json::from_value::<StoredSecrets>(data)
            .map(|s| s.secrets)
            .map_err(|_| EscrowError::Missing { serial, version })
    }

    /// Write `secrets` as the next version, only if the latest version is
    /// still `expected_latest` (0 = nothing written yet). Returns the new version.
    pub async fn write_next(
        &self,
        serial: Serial,
        expected_latest: u64,
        secrets: &DeviceSecrets,
        operation_id: uuid::Uuid,
    ) -> Result<u64, EscrowError> {
        let stored = StoredSecrets {
            secrets: secrets.clone(),
            operation_id: Some(operation_id),
            recopy_of: None,
        };
        self.write_cas(serial, expected_latest, stored).await
    }

    /// Re-escrow the confirmed values (`secrets`, read from version `of`) as
    /// the next version, only if the latest is still `expected_latest`.
    /// Returns the new version, which then becomes the confirmed one.
    pub async fn recopy(
        &self,
        serial: Serial,
        expected_latest: u64,
        secrets: &DeviceSecrets,
        of: u64,
    ) -> Result<u64, EscrowError> {
        let stored = StoredSecrets {
            secrets: secrets.clone(),
            operation_id: None,
            recopy_of: Some(of),
        };
        self.write_cas(serial, expected_latest, stored).await
    }

    async fn write_cas(
        &self,
        serial: Serial,
        expected_latest: u64,
        stored: StoredSecrets,
    ) -> Result<u64, EscrowError> {
        let body = json!({
            "options": {"cas": expected_latest},
            "data": stored,
        });
        match self.bao.write(&self.data_path(serial), &body).await {
            Ok(v) => v
                .pointer("/data/version")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    EscrowError::Bao(BaoError::Unexpected {
                        path: self.data_path(serial),
                        message: "no version in the write response".into(),
                    })
                }),
            Err(BaoError::CasConflict { .. }) => Err(EscrowError::Conflict(serial)),
            Err(e) => Err(e.into()),
        }
    }
}

/// What one KV version holds: the secrets and the operation that wrote them.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecrets {
    #[serde(flatten)]
    secrets: DeviceSecrets,
    #[serde(default)]
    operation_id: Option<uuid::Uuid>,
    /// Set on a re-escrow: the confirmed version whose values this copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recopy_of: Option<u64>,
}
