//! Closing operations whose answer was lost (issue 16 §1).
//!
//! A key generation, a certificate import or a reset whose result never came
//! back (the agent killed, the card pulled, the server killed in the middle
//! of the command) would stay `pending` for ever. Its ticket settles it: the
//! agent refuses an expired ticket, so once the ticket has expired (plus
//! `operations.result_grace_secs` for a command started just before the
//! expiry and its report) nothing more can happen under that operation.
//! [`close_expired`] then closes it as `expired` with the error
//! `outcome_unknown` — whether the card applied the command is not known —
//! and audits `operation.expired`. A result reported afterwards is refused
//! (409): it could be older than what a later operation did to the card.
//!
//! A secret change is never closed this way: whether the card holds the new
//! value decides which escrow version opens it, so it stays pending until a
//! resume settles it (DESIGN §8). An operation that never got a ticket
//! (Kleidia failed between recording it and signing the ticket) is closed
//! once no ticket recorded for it could still be valid.

use kleidia_protocol::ticket::TICKET_MAX_LIFETIME_SECS;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

use crate::audit::{self, AuditEvent};
use crate::config::OperationsConfig;
use crate::domain::OperationState;
use crate::fleet::db::operations::{self, ExpiredOperation};

/// The actor named in the audit for what the server closes on its own.
const ACTOR: &str = "kleidia";

/// Close every expired non-secret operation (see the module), each audited
/// as `operation.expired` in the same transaction. Several replicas may run
/// this at once: a row is closed (and audited) by one of them.
pub async fn close_expired(
    db: &PgPool,
    grace_secs: u64,
) -> Result<Vec<ExpiredOperation>, sqlx::Error> {
    let grace = i64::try_from(grace_secs).unwrap_or(i64::MAX);
    let mut tx = db.begin().await?;
    let closed = operations::close_expired(&mut tx, grace, TICKET_MAX_LIFETIME_SECS).await?;
    for o in &closed {
        audit::record(
            &mut tx,
            AuditEvent::new("operation.expired")
                .actor_named(None, ACTOR)
                .target("device", o.device_serial)
                .details(json!({
                    "operation_id": o.id,
                    "operation": o.kind,
                    "started_by": o.actor_name,
                    "ticket_expires_at": o.ticket_expires_at.map(|t| t.unix_timestamp()),
                    "state": OperationState::Expired,
                    "error": "outcome_unknown",
                    "reason": if o.ticket_expires_at.is_some() {
                        "its ticket expired with no result; whether the card applied it is not known"
                    } else {
                        "no ticket was ever issued for it"
                    },
                })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(closed)
}

/// Every `operations.sweep_interval_secs`, [`close_expired`], and prune the
/// presence challenges that can no longer be answered.
pub async fn run(db: PgPool, cfg: OperationsConfig) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match close_expired(&db, cfg.result_grace_secs).await {
            Ok(closed) if !closed.is_empty() => {
                for o in &closed {
                    tracing::info!(
                        operation = %o.id,
                        kind = o.kind.as_str(),
                        serial = %o.device_serial,
                        "operation closed as expired: no result before its ticket expired"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "closing expired operations failed"),
        }
        // Off the request path: a challenge no longer adds this statement.
        if let Err(e) = crate::fleet::presence::prune(&db).await {
            tracing::warn!(error = %e, "pruning old presence challenges failed");
        }
    }
}
