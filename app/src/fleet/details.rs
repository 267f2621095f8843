//! Everything a device's page shows (and `GET /api/devices/{serial}`
//! returns): the device, its escrow history without values, certificates,
//! operations and, for staff, its audit trail.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::access::{self, LookupError};
use super::db::{self, certificates, devices, operations, CertificateRow, DeviceRow, OperationRow};
use super::escrow::{Escrow, EscrowError, VersionInfo};
use crate::auth::{CurrentUser, Role};
use crate::domain::Serial;
use crate::vault::BaoError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceDetails {
    pub device: DeviceRow,
    /// Escrow history: dates and versions, never values.
    pub secret_versions: Vec<SecretVersion>,
    pub certificates: Vec<CertificateRow>,
    pub operations: Vec<OperationRow>,
    pub audit: Vec<Value>,
    /// The confirmed escrow version, when OpenBao's metadata says it is
    /// destroyed, deleted or gone: the key's secrets are lost (a wipe still works).
    pub escrow_damaged: Option<i64>,
    /// Why the escrow history could not be read (OpenBao sealed or down):
    /// the rest of the page comes from PostgreSQL and is still shown, and
    /// `secret_versions` is empty. Never set when the history was read.
    pub escrow_unavailable: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretVersion {
    #[serde(flatten)]
    pub info: VersionInfo,
    /// Who wrote it and for what (from the operation that wrote it).
    pub operation: Option<String>,
    pub by: Option<String>,
    pub current: bool,
}

impl SecretVersion {
    pub fn created_str(&self) -> String {
        self.info
            .created_at
            .as_ref()
            .map(db::fmt_time)
            .unwrap_or_default()
    }
    pub fn by_str(&self) -> &str {
        self.by.as_deref().unwrap_or("")
    }
    pub fn operation_str(&self) -> &str {
        self.operation.as_deref().unwrap_or("")
    }
}

impl DeviceDetails {
    pub fn credentials_str(&self) -> String {
        match self.escrow_damaged {
            Some(v) => format!("escrow damaged (version {v} unreadable)"),
            None => self.device.credentials_str().to_string(),
        }
    }

    /// The unconfirmed secret change, if any (at most one per device).
    pub fn unconfirmed_change(&self) -> Option<&OperationRow> {
        self.operations
            .iter()
            .find(|o| o.is_unconfirmed_secret_change())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetailsError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn device_details(
    db: &PgPool,
    escrow: &Escrow<'_>,
    me: &CurrentUser,
    serial: Serial,
) -> Result<DeviceDetails, DetailsError> {
    let device = access::load_visible(db, me, serial).await?;
    // One metadata read: it says whether the confirmed version is still
    // readable, without reading any secret value. While OpenBao is sealed or
    // down the page still shows what PostgreSQL knows, and says why the
    // history is missing (an answer of 503 would hide the device's state
    // and operations exactly when someone needs them).
    let (versions, escrow_unavailable) = match escrow.versions(serial).await {
        Ok((_, v)) => (v, None),
        Err(EscrowError::Bao(BaoError::Sealed)) => (
            Vec::new(),
            Some("the secret store (OpenBao) is sealed: the escrow history is shown again once an operator unseals it".to_string()),
        ),
        Err(EscrowError::Bao(BaoError::Down { .. })) => (
            Vec::new(),
            Some("the secret store (OpenBao) is unavailable: the escrow history is shown again once it is back".to_string()),
        ),
        Err(e) => return Err(e.into()),
    };
    let escrow_damaged = device.secrets_version.filter(|&c| {
        !versions
            .iter()
            .any(|v| i64::try_from(v.version).ok() == Some(c) && v.readable())
    });
    let operations = operations::operations_of(db, serial, 50).await?;
    let secret_versions = versions
        .into_iter()
        .map(|info| {
            let version = i64::try_from(info.version).ok();
            let op = operations.iter().find(|o| o.secrets_version_new == version);
            SecretVersion {
                current: device.secrets_version == version,
                operation: op.map(|o| format!("{} ({})", o.kind.as_str(), o.state)),
                by: op.map(|o| o.actor_name.clone()),
                info,
            }
        })
        .collect();
    let certificates = certificates::certificates_of(db, serial).await?;
    let audit = if me.role == Role::User {
        Vec::new()
    } else {
        devices::audit_trail(db, serial, 50).await?
    };
    Ok(DeviceDetails {
        device,
        secret_versions,
        certificates,
        operations,
        audit,
        escrow_damaged,
        escrow_unavailable,
    })
}
