//! The `certificates` table: every certificate Kleidia had OpenBao issue, and
//! whether it is revoked.

use std::fmt;

use kleidia_protocol::agent::PivSlot;
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::fmt_time;
use crate::domain::{ProtocolName, Serial};

/// The `certificates.status` text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum CertificateStatus {
    Issued,
    Revoked,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Issued => "issued",
            CertificateStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct CertificateRow {
    pub id: Uuid,
    #[sqlx(try_from = "i64")]
    pub device_serial: Serial,
    #[sqlx(try_from = "ProtocolName")]
    pub slot: PivSlot,
    pub serial_number: String,
    pub subject: String,
    pub key_algorithm: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub status: CertificateStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
    pub pem: String,
    pub operation_id: Option<Uuid>,
    pub issued_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl CertificateRow {
    pub fn not_after_str(&self) -> String {
        fmt_time(&self.not_after)
    }
    pub fn not_before_str(&self) -> String {
        fmt_time(&self.not_before)
    }
    pub fn is_issued(&self) -> bool {
        self.status == CertificateStatus::Issued
    }
}

pub async fn certificates_of(
    db: impl PgExecutor<'_>,
    serial: Serial,
) -> Result<Vec<CertificateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM certificates WHERE device_serial = $1 ORDER BY created_at DESC, id",
    )
    .bind(serial.as_i64())
    .fetch_all(db)
    .await
}

pub async fn certificate(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<CertificateRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM certificates WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Whether a certificate was issued for the key generation `operation_id`.
pub async fn issued_for_operation(
    db: impl PgExecutor<'_>,
    operation_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM certificates WHERE operation_id = $1")
            .bind(operation_id)
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

pub struct NewCertificate<'a> {
    pub id: Uuid,
    pub serial: Serial,
    pub slot: PivSlot,
    pub serial_number: &'a str,
    pub subject: &'a str,
    pub key_algorithm: &'a str,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub pem: &'a str,
    pub operation_id: Uuid,
    pub issued_by: Uuid,
}

pub async fn insert_certificate(
    conn: &mut PgConnection,
    c: &NewCertificate<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificates (id, device_serial, slot, serial_number, subject, key_algorithm, \
             not_before, not_after, pem, operation_id, issued_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(c.id)
    .bind(c.serial.as_i64())
    .bind(c.slot.as_str())
    .bind(c.serial_number)
    .bind(c.subject)
    .bind(c.key_algorithm)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(c.pem)
    .bind(c.operation_id)
    .bind(c.issued_by)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn mark_certificate_revoked(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE certificates SET status = $3, revoked_at = now(), revocation_reason = $2 \
         WHERE id = $1 AND status = $4",
    )
    .bind(id)
    .bind(reason)
    .bind(CertificateStatus::Revoked)
    .bind(CertificateStatus::Issued)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Devices with an issued certificate that expires within `days`.
pub async fn devices_with_expiring_certificates(
    db: &PgPool,
    days: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT device_serial) FROM certificates WHERE status = $2 \
         AND not_after < now() + make_interval(days => $1)",
    )
    .bind(days)
    .bind(CertificateStatus::Issued)
    .fetch_one(db)
    .await
}
