//! The `certificate_approvals` table: requests for a certificate in another
//! person's name, and their approval, rejection and single use. The table's
//! trigger lets a row only move forward; these queries add the expiry and
//! status conditions so a stale decision or use changes nothing.

use std::fmt;

use kleidia_protocol::agent::PivSlot;
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::fmt_time;
use crate::domain::{ProtocolName, Serial};

/// The `certificate_approvals.status` text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Used,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Used => "used",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct ApprovalRow {
    pub id: Uuid,
    #[sqlx(try_from = "i64")]
    pub device_serial: Serial,
    #[sqlx(try_from = "ProtocolName")]
    pub slot: PivSlot,
    pub requester_id: Uuid,
    pub requester_name: String,
    pub owner_id: Uuid,
    /// The owner's display name now (empty if the account is gone).
    pub owner_name: String,
    pub status: ApprovalStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub decided_by: Option<Uuid>,
    pub decided_by_name: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub operation_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
}

impl ApprovalRow {
    /// Pending or approved, but past its expiry: it can no longer be decided or used.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        matches!(
            self.status,
            ApprovalStatus::Pending | ApprovalStatus::Approved
        ) && self.expires_at <= now
    }

    /// The status as a person reads it: `expired` for an open request past its expiry.
    pub fn shown_status(&self, now: OffsetDateTime) -> &'static str {
        if self.is_expired(now) {
            "expired"
        } else {
            self.status.as_str()
        }
    }

    pub fn created_str(&self) -> String {
        fmt_time(&self.created_at)
    }

    pub fn expires_str(&self) -> String {
        fmt_time(&self.expires_at)
    }
}

const SELECT: &str = "SELECT a.id, a.device_serial, a.slot, a.requester_id, a.requester_name, \
     a.owner_id, COALESCE(u.display_name, '') AS owner_name, a.status, a.created_at, \
     a.expires_at, a.decided_by, a.decided_by_name, a.decided_at, a.operation_id, a.used_at \
     FROM certificate_approvals a LEFT JOIN users u ON u.id = a.owner_id";

pub struct NewApproval<'a> {
    pub id: Uuid,
    pub serial: Serial,
    pub slot: PivSlot,
    pub requester_id: Uuid,
    pub requester_name: &'a str,
    pub owner_id: Uuid,
    pub expires_at: OffsetDateTime,
}

pub async fn insert(conn: &mut PgConnection, a: &NewApproval<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificate_approvals \
             (id, device_serial, slot, requester_id, requester_name, owner_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.id)
    .bind(a.serial.as_i64())
    .bind(a.slot.as_str())
    .bind(a.requester_id)
    .bind(a.requester_name)
    .bind(a.owner_id)
    .bind(a.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn approval(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<ApprovalRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The newest open (pending or approved, unexpired) request of `requester`
/// for `slot` of the device while `owner` owns it.
pub async fn open_request(
    db: impl PgExecutor<'_>,
    serial: Serial,
    requester: Uuid,
    slot: PivSlot,
    owner: Uuid,
) -> Result<Option<ApprovalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE a.device_serial = $1 AND a.requester_id = $2 AND a.slot = $3 \
           AND a.owner_id = $4 AND a.status IN ('pending', 'approved') AND a.expires_at > now() \
         ORDER BY a.created_at DESC LIMIT 1"
    ))
    .bind(serial.as_i64())
    .bind(requester)
    .bind(slot.as_str())
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// Requests, newest first: all of them, or those `user` made or owns the device of.
pub async fn list(
    db: impl PgExecutor<'_>,
    user: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ApprovalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE $1::uuid IS NULL OR a.owner_id = $1 OR a.requester_id = $1 \
         ORDER BY a.created_at DESC LIMIT $2"
    ))
    .bind(user)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Record the decision on a pending, unexpired request; false if it was
/// not (any more) pending or has expired.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    status: ApprovalStatus,
    by: Uuid,
    by_name: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE certificate_approvals \
         SET status = $2, decided_by = $3, decided_by_name = $4, decided_at = now() \
         WHERE id = $1 AND status = 'pending' AND expires_at > now()",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(by)
    .bind(by_name)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Spend an approved, unexpired approval on key generation `operation`;
/// false if it was not (any more) approved or has expired.
pub async fn mark_used(
    conn: &mut PgConnection,
    id: Uuid,
    operation: Uuid,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE certificate_approvals SET status = 'used', operation_id = $2, used_at = now() \
         WHERE id = $1 AND status = 'approved' AND expires_at > now()",
    )
    .bind(id)
    .bind(operation)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sqlx::PgPool;

    use super::*;
    use crate::fleet::db::devices::{self, NewDevice};

    /// The table lets a request only move forward, whatever SQL the
    /// runtime role sends: no deleting, no rewriting the request, no going
    /// back, no second decision or use, no extension, no self-approval.
    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn an_approval_only_moves_forward_and_is_used_once(db: PgPool) {
        let serial = Serial::new(4343).unwrap();
        let mut conn = db.acquire().await.unwrap();
        devices::insert_device(
            &mut conn,
            &NewDevice {
                serial,
                model: "YubiKey 5",
                firmware: Some("5.7.1"),
                form_factor: None,
                owner_id: None,
            },
        )
        .await
        .unwrap();
        let (id, requester, owner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        insert(
            &mut conn,
            &NewApproval {
                id,
                serial,
                slot: PivSlot::Authentication,
                requester_id: requester,
                requester_name: "hugo",
                owner_id: owner,
                expires_at: OffsetDateTime::now_utc() + time::Duration::hours(24),
            },
        )
        .await
        .unwrap();
        let found = open_request(&db, serial, requester, PivSlot::Authentication, owner)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.status, ApprovalStatus::Pending);
        // Not yet approved: it cannot be used.
        assert!(!mark_used(&mut conn, id, Uuid::new_v4()).await.unwrap());
        // The requester never decides (CHECK), whatever the caller did.
        assert!(
            decide(&mut conn, id, ApprovalStatus::Approved, requester, "hugo")
                .await
                .is_err()
        );
        let admin = Uuid::new_v4();
        assert!(
            decide(&mut conn, id, ApprovalStatus::Approved, admin, "bea")
                .await
                .unwrap()
        );
        assert!(
            !decide(&mut conn, id, ApprovalStatus::Rejected, admin, "bea")
                .await
                .unwrap()
        );
        let op = Uuid::new_v4();
        assert!(mark_used(&mut conn, id, op).await.unwrap());
        assert!(!mark_used(&mut conn, id, Uuid::new_v4()).await.unwrap());
        let a = approval(&db, id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Used);
        assert_eq!(a.operation_id, Some(op));

        for (what, sql) in [
            ("delete", "DELETE FROM certificate_approvals WHERE id = $1"),
            ("truncate", "TRUNCATE certificate_approvals"),
            (
                "go back",
                "UPDATE certificate_approvals SET status = 'approved', operation_id = NULL, \
                 used_at = NULL WHERE id = $1",
            ),
            (
                "use again",
                "UPDATE certificate_approvals SET operation_id = gen_random_uuid() WHERE id = $1",
            ),
            (
                "redecide",
                "UPDATE certificate_approvals SET decided_by = gen_random_uuid() WHERE id = $1",
            ),
            (
                "rewrite",
                "UPDATE certificate_approvals SET requester_id = gen_random_uuid() WHERE id = $1",
            ),
            (
                "extend",
                "UPDATE certificate_approvals SET expires_at = expires_at + interval '1 day' \
                 WHERE id = $1",
            ),
        ] {
            let q = sqlx::query(sql);
            let q = if sql.contains("$1") { q.bind(id) } else { q };
            let e = q.execute(&db).await.err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.to_string().contains("certificate approval")),
                "{what}: {e:?}"
            );
        }
        let after = approval(&db, id).await.unwrap().unwrap();
        assert_eq!(after.status, ApprovalStatus::Used);
        assert_eq!(after.requester_id, requester);
        assert_eq!(after.expires_at, a.expires_at);
    }
}
