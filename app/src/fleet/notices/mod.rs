//! Expiry notices (issue 18 §4): mail to owners and admins about
//! certificates that expire within `notices.warning_days` and about keys in
//! service that still hold their factory credentials, each with a link to
//! the device's page; and, optionally, the same as one JSON POST to a webhook.
//!
//! One run at a time across every replica: the run holds a
//! transaction-scoped PostgreSQL advisory lock ([`LOCK_KEY`]); a replica that
//! does not get it skips. What a recipient has been told is recorded per
//! period (`notices_sent`, a period being `notices.interval_secs` long, a day
//! by default) right after the mail was accepted, so a later run in the same
//! period, on this replica or another, or a second "Send now", tells nobody
//! the same thing twice. A mail the server refused is not recorded and goes
//! out on the next run.
//!
//! Mails carry serials, slots, dates and links: nothing secret.

mod mail;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::config::{Config, NoticesConfig};
use crate::domain::DeviceState;

/// `pg_try_advisory_xact_lock` key of the notices run ("KLNOTICE").
pub const LOCK_KEY: i64 = 0x4b4c_4e4f_5449_4345;

/// At most this many items are listed in one mail; the rest are counted.
const MAX_LISTED: usize = 200;

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Cli,
    /// An admin's "Send now" (page or `POST /api/notices/run`).
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    CertificateExpiring,
    FactoryCredentials,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::CertificateExpiring => "certificate_expiring",
            Kind::FactoryCredentials => "factory_credentials",
        }
    }
}

/// One thing someone should act on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct Item {
    pub kind: Kind,
    pub serial: i64,
    /// The certificate's id (expiring certificates), `""` otherwise.
    pub item: String,
    pub slot: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    pub owner_id: Option<Uuid>,
    pub owner_username: Option<String>,
    /// The device's page.
    pub link: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    /// False when another replica held the lock (nothing was looked at).
    pub ran: bool,
    pub period: i64,
    /// Things found that someone should act on.
    pub items: usize,
    /// Mails the SMTP server accepted, one per recipient.
    pub emails_sent: usize,
    /// The usernames those mails went to.
    pub recipients: Vec<String>,
    /// Recipients whose mail failed (retried next run).
    pub failures: Vec<String>,
    pub webhook_sent: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("notices have nowhere to go: set notices.smtp_host or notices.webhook_url")]
    NotConfigured,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The period a time falls in.
pub fn period_of(now: OffsetDateTime, interval_secs: u64) -> i64 {
    now.unix_timestamp()
        .div_euclid(i64::try_from(interval_secs.max(1)).unwrap_or(i64::MAX))
}

#[derive(FromRow)]
struct Recipient {
    id: Uuid,
    username: String,
    email: String,
    role: String,
}

/// Enabled users with an address who get notices: every admin, and the
/// owners of the devices in `items`.
async fn recipients(db: &PgPool, items: &[Item]) -> Result<Vec<Recipient>, sqlx::Error> {
    let owners: Vec<Uuid> = items
        .iter()
        .filter_map(|i| i.owner_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sqlx::query_as(
        "SELECT id, username, email, role FROM users \
         WHERE NOT disabled AND email IS NOT NULL AND email <> '' \
           AND (role = 'admin' OR id = ANY($1)) ORDER BY username",
    )
    .bind(&owners)
    .fetch_all(db)
    .await
}

/// Everything to act on now: issued certificates of devices in service
/// that expire within `warning_days` (or have expired), and devices in
/// service still on factory credentials.
pub async fn find_items(
    db: &PgPool,
    public_url: &url::Url,
    warning_days: u32,
) -> Result<Vec<Item>, sqlx::Error> {
    let in_service: Vec<&str> = DeviceState::IN_SERVICE.map(DeviceState::as_str).to_vec();
    type Row = (
        i64,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<OffsetDateTime>,
    );
    let certs: Vec<Row> = sqlx::query_as(
        "SELECT d.serial, d.owner_id, u.username, c.id::text, c.slot, c.not_after \
         FROM certificates c JOIN devices d ON d.serial = c.device_serial \
         LEFT JOIN users u ON u.id = d.owner_id \
         WHERE c.status = 'issued' AND d.state = ANY($1) \
           AND c.not_after < now() + make_interval(days => $2) \
         ORDER BY d.serial, c.not_after",
    )
    .bind(&in_service)
    .bind(i32::try_from(warning_days).unwrap_or(i32::MAX))
    .fetch_all(db)
    .await?;
    let factory: Vec<Row> = sqlx::query_as(
        "SELECT d.serial, d.owner_id, u.username, NULL::text, NULL::text, NULL::timestamptz \
         FROM devices d LEFT JOIN users u ON u.id = d.owner_id \
         WHERE d.secrets_version IS NULL AND d.state = ANY($1) ORDER BY d.serial",
    )
    .bind(&in_service)
    .fetch_all(db)
    .await?;
    let link = |serial: i64| {
        public_url
            .join(&format!("/devices/{serial}"))
            .map(|u| u.to_string())
            .unwrap_or_default()
    };
    let mut items = Vec::with_capacity(certs.len() + factory.len());
    for (kind, rows) in [
        (Kind::CertificateExpiring, certs),
        (Kind::FactoryCredentials, factory),
    ] {
        for (serial, owner_id, owner_username, id, slot, not_after) in rows {
            items.push(Item {
                kind,
                serial,
                item: id.unwrap_or_default(),
                slot,
                not_after,
                owner_id,
                owner_username,
                link: link(serial),
            });
        }
    }
    Ok(items)
}

/// Of `items`, those `recipient` has not been told about in `period`.
async fn untold(
    db: &PgPool,
    period: i64,
    recipient: &str,
    items: Vec<&Item>,
) -> Result<Vec<Item>, sqlx::Error> {
    let told: BTreeSet<(i64, String, String)> = sqlx::query_as(
        "SELECT serial, kind, item FROM notices_sent WHERE period = $1 AND recipient = $2",
    )
    .bind(period)
    .bind(recipient)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    Ok(items
        .into_iter()
        .filter(|i| !told.contains(&(i.serial, i.kind.as_str().to_string(), i.item.clone())))
        .cloned()
        .collect())
}

async fn mark_told(
    db: &PgPool,
    period: i64,
    recipient: &str,
    items: &[Item],
) -> Result<(), sqlx::Error> {
    let serials: Vec<i64> = items.iter().map(|i| i.serial).collect();
    let kinds: Vec<&str> = items.iter().map(|i| i.kind.as_str()).collect();
    let ids: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
    sqlx::query(
        "INSERT INTO notices_sent (period, recipient, serial, kind, item) \
         SELECT $1, $2, s, k, i FROM unnest($3::bigint[], $4::text[], $5::text[]) AS t(s, k, i) \
         ON CONFLICT DO NOTHING",
    )
    .bind(period)
    .bind(recipient)
    .bind(&serials)
    .bind(&kinds)
    .bind(&ids)
    .execute(db)
    .await
    .map(|_| ())
}

/// One run: take the lock or skip, find the items, send what each recipient
/// has not been told this period, audit the run (`notices.sent`).
pub async fn run_once(
    db: &PgPool,
    config: &Config,
    trigger: Trigger,
) -> Result<RunReport, NoticeError> {
    let n = &config.notices;
    if n.smtp_host.is_none() && n.webhook_url.is_none() {
        return Err(NoticeError::NotConfigured);
    }
    let now = OffsetDateTime::now_utc();
    let period = period_of(now, n.interval_secs);
    // The lock lives as long as this transaction; nothing else is written in
    // it, and dropping it (an error, a panic) releases the lock.
    let mut lock = db.begin().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *lock)
        .await?;
    if !got {
        tracing::info!(
            ?trigger,
            period,
            "notices: another replica is sending; skipped"
        );
        return Ok(RunReport {
            ran: false,
            period,
            ..RunReport::default()
        });
    }
    let mut report = RunReport {
        ran: true,
        period,
        ..RunReport::default()
    };
    let items = find_items(db, &config.server.public_url, n.warning_days).await?;
    report.items = items.len();
    if !items.is_empty() {
        send_all(db, n, period, &items, &mut report).await?;
    }
    if report.emails_sent > 0 || report.webhook_sent || !report.failures.is_empty() {
        audit::record_alone(
            db,
            AuditEvent::new("notices.sent")
                .actor_named(None, "notices")
                .details(json!({
                    "trigger": trigger,
                    "period": period,
                    "items": report.items,
                    "emails_sent": report.emails_sent,
                    "recipients": report.recipients,
                    "failures": report.failures,
                    "webhook_sent": report.webhook_sent,
                })),
        )
        .await?;
    }
    lock.commit().await?;
    tracing::info!(
        ?trigger,
        period,
        items = report.items,
        emails = report.emails_sent,
        failures = report.failures.len(),
        webhook = report.webhook_sent,
        "notices: run finished"
    );
    Ok(report)
}

async fn send_all(
    db: &PgPool,
    n: &NoticesConfig,
    period: i64,
    items: &[Item],
    report: &mut RunReport,
) -> Result<(), NoticeError> {
    if n.smtp_host.is_some() {
        let mailer = mail::Mailer::new(n);
        for r in recipients(db, items).await? {
            let key = format!("user:{}", r.id);
            let theirs: Vec<&Item> = items
                .iter()
                .filter(|i| r.role == "admin" || i.owner_id == Some(r.id))
                .collect();
            let todo = untold(db, period, &key, theirs).await?;
            if todo.is_empty() {
                continue;
            }
            let m = match &mailer {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "notices: SMTP settings unusable");
                    report.failures.push(r.username.clone());
                    continue;
                }
            };
            match m
                .send(&r.email, &r.username, r.role == "admin", &todo)
                .await
            {
                Ok(()) => {
                    mark_told(db, period, &key, &todo).await?;
                    report.emails_sent += 1;
                    report.recipients.push(r.username);
                }
                Err(e) => {
                    tracing::warn!(recipient = %r.username, error = %e, "notices: mail not sent; retried next run");
                    report.failures.push(r.username);
                }
            }
        }
    }
    if let Some(url) = &n.webhook_url {
        let todo = untold(db, period, "webhook", items.iter().collect()).await?;
        if !todo.is_empty() {
            let timeout = Duration::from_secs(n.timeout_secs);
            match webhook::post(url, timeout, period, &todo).await {
                Ok(()) => {
                    mark_told(db, period, "webhook", &todo).await?;
                    report.webhook_sent = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notices: webhook failed; retried next run");
                    report.failures.push("webhook".into());
                }
            }
        }
    }
    Ok(())
}

/// The schedule: a run at start and every `notices.interval_secs`.
pub async fn run(db: PgPool, config: std::sync::Arc<Config>) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.notices.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = run_once(&db, &config, Trigger::Schedule).await {
            tracing::error!(error = %e, "notices: run failed");
        }
    }
}

/// Group `items` by device for a mail body: serial → its items.
fn by_device(items: &[Item]) -> BTreeMap<i64, Vec<&Item>> {
    let mut m: BTreeMap<i64, Vec<&Item>> = BTreeMap::new();
    for i in items {
        m.entry(i.serial).or_default().push(i);
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_one_interval_long() {
        let t = OffsetDateTime::from_unix_timestamp(86_400 * 3 + 5).unwrap();
        assert_eq!(period_of(t, 86_400), 3);
        let t = OffsetDateTime::from_unix_timestamp(86_400 * 4 - 1).unwrap();
        assert_eq!(period_of(t, 86_400), 3);
        assert_eq!(period_of(t, 60), (86_400 * 4 - 1) / 60);
    }
}
