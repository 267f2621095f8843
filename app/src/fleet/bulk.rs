//! Bulk suspend, revoke and mark-lost over a filtered device list (issue 18
//! §2), with the filters of the devices page and the exports.
//!
//! Two steps: [`preview`] lists every device the filter matches with what
//! will happen to it; [`apply`] takes the same filter, the serials the admin
//! saw and their count. The filter is evaluated again and must match exactly
//! those serials: a device that came into the filter since, or a serial
//! added to the request that the filter does not match, stops the whole
//! batch (nothing changes, the refusal is audited), so a bulk action never
//! reaches a device outside what the admin confirmed.
//!
//! Each device goes through [`registry::transition_in_batch`] (the same
//! checks and OpenBao revocations as one by hand, its audit row naming the
//! batch), and the batch is audited once more as a whole with its members
//! and their outcomes (`device.bulk_<action>`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::access;
use super::db::devices::BadDeviceFilter;
use super::db::{devices, DeviceFilter, DeviceRow};
use super::pki::Pki;
use super::registry::{self, checked_reason, BadReason, Transition, TransitionError};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser, Role};
use crate::domain::{DeviceState, Serial};

/// The most devices one bulk action touches.
pub const MAX_DEVICES: usize = 1000;
const BATCH: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    Suspend,
    Revoke,
    Lost,
}

impl BulkAction {
    pub fn target(self) -> DeviceState {
        match self {
            BulkAction::Suspend => DeviceState::Suspended,
            BulkAction::Revoke => DeviceState::Revoked,
            BulkAction::Lost => DeviceState::Lost,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Suspend => "suspend",
            BulkAction::Revoke => "revoke",
            BulkAction::Lost => "lost",
        }
    }

    /// "Suspend", "Revoke", "Mark lost": the confirm button's verb.
    pub fn verb(self) -> &'static str {
        match self {
            BulkAction::Suspend => "Suspend",
            BulkAction::Revoke => "Revoke",
            BulkAction::Lost => "Mark lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "suspend" => Some(BulkAction::Suspend),
            "revoke" => Some(BulkAction::Revoke),
            "lost" => Some(BulkAction::Lost),
            _ => None,
        }
    }
}

/// The filters of the devices page, without its cursor and page size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub expiring_days: Option<i32>,
    #[serde(default)]
    pub factory: Option<bool>,
}

impl BulkFilter {
    pub fn to_device_filter(&self) -> DeviceFilter {
        let blank = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        DeviceFilter {
            q: blank(&self.q),
            state: blank(&self.state),
            owner: blank(&self.owner),
            firmware: blank(&self.firmware),
            after: None,
            limit: Some(BATCH),
            expiring_days: self.expiring_days,
            factory: self.factory,
        }
    }

    /// At least one filter: "every device" is not a bulk selection.
    pub fn is_empty(&self) -> bool {
        let f = self.to_device_filter();
        f.q.is_none()
            && f.state.is_none()
            && f.owner.is_none()
            && f.firmware.is_none()
            && f.expiring_days.is_none()
            && f.factory.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("only an admin runs bulk actions")]
    NotAdmin,
    #[error("choose at least one filter: a bulk action never runs on the whole fleet unfiltered")]
    NoFilter,
    #[error(transparent)]
    State(#[from] BadDeviceFilter),
    #[error("the filter matches more than {MAX_DEVICES} devices; narrow it")]
    TooMany,
    #[error("no device matches the filter")]
    NoneMatch,
    #[error(transparent)]
    Reason(#[from] BadReason),
    #[error("you confirmed {confirmed} devices but listed {listed}")]
    CountMismatch { confirmed: usize, listed: usize },
    #[error(
        "the filter now matches {now} devices, not the {confirmed} you confirmed \
         ({outside} listed serial(s) outside it, {new} new to it); preview again"
    )]
    SetChanged {
        confirmed: usize,
        now: usize,
        outside: usize,
        new: usize,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl BulkError {
    /// The request was a refusal worth an audit row (rather than a typo).
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            BulkError::NotAdmin | BulkError::SetChanged { .. } | BulkError::CountMismatch { .. }
        )
    }
}

/// Every device the filter matches, in serial order.
pub async fn matching(db: &PgPool, filter: &BulkFilter) -> Result<Vec<DeviceRow>, BulkError> {
    if filter.is_empty() {
        return Err(BulkError::NoFilter);
    }
    let mut f = filter.to_device_filter();
    let state = f.state()?;
    let mut out = Vec::new();
    loop {
        let rows = devices::search(db, &f, state, None).await?;
        let full = rows.len() as i64 == BATCH;
        f.after = rows.last().map(|d| d.serial.as_i64());
        out.extend(rows);
        if out.len() > MAX_DEVICES {
            return Err(BulkError::TooMany);
        }
        if !full {
            return Ok(out);
        }
    }
}

/// What the action will do to one device.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Planned {
    pub serial: Serial,
    pub owner: Option<String>,
    pub state: DeviceState,
    /// It will change (false: it is skipped, see `note`).
    pub changes: bool,
    pub note: String,
}

fn plan(u: &CurrentUser, action: BulkAction, d: &DeviceRow) -> Planned {
    let to = action.target();
    let (changes, note) = if d.state == to {
        (false, format!("already {to}"))
    } else if !access::may_transition(u, d, to) {
        (false, format!("your role may not mark it {to}"))
    } else if !d.state.can_transition(to) {
        (false, format!("a {} device cannot become {to}", d.state))
    } else {
        (true, format!("{} → {to}", d.state))
    };
    Planned {
        serial: d.serial,
        owner: d.owner_username.clone(),
        state: d.state,
        changes,
        note,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub action: BulkAction,
    pub filter: BulkFilter,
    /// Devices the filter matches (what `count` confirms in [`apply`]).
    pub count: usize,
    /// Of those, the ones that will change.
    pub changing: usize,
    pub devices: Vec<Planned>,
}

pub async fn preview(
    db: &PgPool,
    u: &CurrentUser,
    action: BulkAction,
    filter: BulkFilter,
) -> Result<Preview, BulkError> {
    if u.role != Role::Admin {
        return Err(BulkError::NotAdmin);
    }
    let rows = matching(db, &filter).await?;
    let devices: Vec<Planned> = rows.iter().map(|d| plan(u, action, d)).collect();
    Ok(Preview {
        action,
        count: devices.len(),
        changing: devices.iter().filter(|p| p.changes).count(),
        devices,
        filter,
    })
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    pub reason: String,
    pub filter: BulkFilter,
    /// The serials the preview listed.
    pub serials: Vec<Serial>,
    /// How many devices the admin confirmed (the preview's `count`).
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub serial: Serial,
    /// `changed`, `skipped` or `failed`.
    pub result: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BulkReport {
    pub batch: Uuid,
    pub action: BulkAction,
    pub changed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub outcomes: Vec<Outcome>,
}

/// Run a confirmed bulk action (see the module docs). Refusals are audited
/// (`device.bulk_refused`).
pub async fn apply(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    req: BulkRequest,
) -> Result<BulkReport, BulkError> {
    let r = apply_checked(db, pki, u, meta, &req).await;
    if let Err(e) = &r {
        if e.is_refusal() {
            let event = AuditEvent::new("device.bulk_refused")
                .actor(u)
                .from_client(meta)
                .details(json!({
                    "action": req.action,
                    "filter": req.filter,
                    "count": req.count,
                    "serials": req.serials.len(),
                    "reason": e.to_string(),
                }));
            if let Err(a) = audit::record_alone(db, event).await {
                tracing::error!(error = %a, "could not audit a refused bulk action");
            }
        }
    }
    r
}

async fn apply_checked(
    db: &PgPool,
    pki: &Pki<'_>,
    u: &CurrentUser,
    meta: &ClientMeta,
    req: &BulkRequest,
) -> Result<BulkReport, BulkError> {
    if u.role != Role::Admin {
        return Err(BulkError::NotAdmin);
    }
    let reason = checked_reason(&req.reason)?.to_string();
    let listed: BTreeSet<Serial> = req.serials.iter().copied().collect();
    if req.count != listed.len() || req.count != req.serials.len() {
        return Err(BulkError::CountMismatch {
            confirmed: req.count,
            listed: req.serials.len(),
        });
    }
    let rows = matching(db, &req.filter).await?;
    let now: BTreeSet<Serial> = rows.iter().map(|d| d.serial).collect();
    if now.is_empty() {
        return Err(BulkError::NoneMatch);
    }
    if now != listed {
        return Err(BulkError::SetChanged {
            confirmed: req.count,
            now: now.len(),
            outside: listed.difference(&now).count(),
            new: now.difference(&listed).count(),
        });
    }
    let batch = Uuid::new_v4();
    let to = req.action.target();
    let mut outcomes = Vec::with_capacity(rows.len());
    for d in &rows {
        let p = plan(u, req.action, d);
        if !p.changes {
            outcomes.push(Outcome {
                serial: d.serial,
                result: "skipped",
                note: p.note,
            });
            continue;
        }
        let t = Transition {
            state: to.as_str().to_string(),
            reason: reason.clone(),
        };
        let r = registry::transition_in_batch(db, pki, u, meta, d.serial, t, Some(batch)).await;
        outcomes.push(match r {
            Ok(_) => Outcome {
                serial: d.serial,
                result: "changed",
                note: p.note,
            },
            Err(e) => {
                if matches!(e, TransitionError::Pki(_) | TransitionError::Db(_)) {
                    tracing::error!(serial = %d.serial, error = %e, "bulk action: a device failed");
                }
                Outcome {
                    serial: d.serial,
                    result: "failed",
                    note: match e {
                        TransitionError::Pki(_) => {
                            "OpenBao could not revoke its certificates".into()
                        }
                        TransitionError::Db(_) => "database error".into(),
                        e => e.to_string(),
                    },
                }
            }
        });
    }
    let count = |r: &str| outcomes.iter().filter(|o| o.result == r).count();
    let report = BulkReport {
        batch,
        action: req.action,
        changed: count("changed"),
        skipped: count("skipped"),
        failed: count("failed"),
        outcomes,
    };
    audit::record_alone(
        db,
        AuditEvent::new(&format!("device.bulk_{}", req.action.as_str()))
            .actor(u)
            .from_client(meta)
            .target("batch", batch)
            .details(json!({
                "batch": batch,
                "to": to,
                "reason": reason,
                "filter": req.filter,
                "changed": report.changed,
                "skipped": report.skipped,
                "failed": report.failed,
                "members": report.outcomes,
            })),
    )
    .await?;
    Ok(report)
}
