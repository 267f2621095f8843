//! The fleet's SQL, one module per table: devices, operations, certificates,
//! and the agent key registered on a session. Functions take an executor or
//! the transaction of a multi-step write; nothing here decides who may do what.

pub mod agent_keys;
pub mod approvals;
pub mod certificates;
pub mod devices;
pub mod operations;

use time::OffsetDateTime;

pub use certificates::{CertificateRow, CertificateStatus};
pub use devices::{DeviceFilter, DeviceRow};
pub use operations::OperationRow;

/// `2026-11-28 13:45 UTC`, for pages.
pub fn fmt_time(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kleidia_protocol::agent::PivSlot;
    use kleidia_protocol::ticket::Operation;
    use serde_json::json;
    use sqlx::PgPool;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::certificates::{self, NewCertificate};
    use super::devices::{self, NewDevice};
    use super::operations::{self, NewOperation};
    use super::*;
    use crate::domain::{DeviceState, OperationState, Serial};

    /// The states, kinds and slots are text columns with CHECK constraints:
    /// what the enums write, PostgreSQL accepts, and the rows read it back.
    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn typed_states_kinds_and_slots_round_trip_through_their_text_columns(db: PgPool) {
        let serial = Serial::new(4242).unwrap();
        let mut conn = db.acquire().await.unwrap();
        let new = NewDevice {
            serial,
            model: "YubiKey 5",
            firmware: Some("5.7.1"),
            form_factor: None,
            owner_id: None,
        };
        devices::insert_device(&mut conn, &new).await.unwrap();
        assert_eq!(
            devices::device(&db, serial).await.unwrap().unwrap().state,
            DeviceState::Registered
        );
        for s in DeviceState::ALL {
            devices::set_state(&mut conn, serial, s).await.unwrap();
            assert_eq!(
                devices::device(&db, serial).await.unwrap().unwrap().state,
                s
            );
            let f = DeviceFilter {
                state: Some(s.as_str().into()),
                ..DeviceFilter::default()
            };
            let found = devices::search(&db, &f, f.state().unwrap(), None)
                .await
                .unwrap();
            assert_eq!(found.len(), 1, "{s}");
            assert_eq!(devices::counts_by_state(&db).await.unwrap(), vec![(s, 1)]);
        }
        // Retired now: not in service, so not counted as on factory credentials.
        assert_eq!(devices::factory_count(&db).await.unwrap(), 0);
        devices::set_state(&mut conn, serial, DeviceState::Suspended)
            .await
            .unwrap();
        assert_eq!(devices::factory_count(&db).await.unwrap(), 1);

        let user = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO users (id, username, display_name, role, password_hash) \
             VALUES ($1, 'issuer', 'Issuer', 'admin', 'x')",
        )
        .bind(user)
        .execute(&db)
        .await
        .unwrap();

        let mut last = Uuid::nil();
        for kind in Operation::ALL {
            last = Uuid::new_v4();
            let op = NewOperation {
                id: last,
                serial,
                kind,
                actor_id: user,
                actor_name: "test",
                session_id: Uuid::new_v4(),
                agent_key_fingerprint: "fp",
                secrets_version_prev: None,
                details: json!({}),
            };
            operations::insert_operation(&mut conn, &op).await.unwrap();
            let row = operations::operation(&db, last).await.unwrap().unwrap();
            assert_eq!((row.kind, row.state), (kind, OperationState::Pending));
        }
        operations::finish(&db, last, OperationState::Failed, Some("gone"))
            .await
            .unwrap();
        let row = operations::operation(&db, last).await.unwrap().unwrap();
        assert_eq!(row.state, OperationState::Failed);
        // Only a pending operation is finished.
        operations::finish(&db, last, OperationState::Succeeded, None)
            .await
            .unwrap();
        let row = operations::operation(&db, last).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.error_str()),
            (OperationState::Failed, "gone")
        );

        for (i, slot) in PivSlot::ALL.into_iter().enumerate() {
            let now = OffsetDateTime::now_utc();
            let c = NewCertificate {
                id: Uuid::new_v4(),
                serial,
                slot,
                serial_number: &format!("0{i}"),
                subject: "CN=x",
                key_algorithm: "ecc_p256",
                not_before: now,
                not_after: now + time::Duration::days(3),
                pem: "pem",
                operation_id: last,
                issued_by: user,
            };
            certificates::insert_certificate(&mut conn, &c)
                .await
                .unwrap();
            let row = certificates::certificate(&db, c.id).await.unwrap().unwrap();
            assert_eq!((row.slot, row.status), (slot, CertificateStatus::Issued));
            if i == 0 {
                certificates::mark_certificate_revoked(&mut conn, c.id, "test")
                    .await
                    .unwrap();
                let row = certificates::certificate(&db, c.id).await.unwrap().unwrap();
                assert_eq!(row.status, CertificateStatus::Revoked);
            }
        }
        assert_eq!(
            certificates::devices_with_expiring_certificates(&db, 7)
                .await
                .unwrap(),
            1
        );
    }
}
