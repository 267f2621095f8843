//! Reading the audit log: filters and keyset pagination by id (newest
//! first). A time range is first turned into an id range through the
//! `(created_at, id)` index (ids and times grow together because appends are
//! serialised), so every page is an index range scan however large the table.

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// A filter value that is not understood; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFilter(String);

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Username of the actor, exactly.
    pub actor: Option<String>,
    /// An action (`user.disable`) or a prefix ending in `*` (`login.*`).
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Keyset cursor: only rows with a smaller id.
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

/// Query-string form of [`AuditFilter`] (pages and `GET /api/audit`).
/// Times are RFC 3339, or `YYYY-MM-DDTHH:MM` (a `datetime-local` input) in UTC.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

fn parse_time(field: &str, s: &Option<String>) -> Result<Option<OffsetDateTime>, InvalidFilter> {
    let Some(s) = non_empty(s) else {
        return Ok(None);
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(Some(t));
    }
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let with_secs =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(s, &local)
        .or_else(|_| time::PrimitiveDateTime::parse(s, &with_secs))
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| {
            InvalidFilter(format!(
                "{field}: expected a time like 2026-11-28T13:00:00Z"
            ))
        })
}

impl AuditParams {
    pub fn to_filter(&self) -> Result<AuditFilter, InvalidFilter> {
        Ok(AuditFilter {
            actor: self.actor.clone(),
            action: self.action.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            before: self.before,
            limit: self.limit,
        })
    }

    /// The same filters as a query string, without the cursor.
    pub fn query_string(&self) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target_type", &self.target_type),
            ("target_id", &self.target_id),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = non_empty(v) {
                ser.append_pair(k, v);
            }
        }
        if let Some(l) = self.limit {
            ser.append_pair("limit", &l.to_string());
        }
        ser.finish()
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub details: serde_json::Value,
    pub ip: Option<String>,
}

impl AuditEntry {
    /// The details as lines for the audit page: one `(key, value)` per
    /// top-level field, strings shown bare and anything else as compact JSON.
    pub fn detail_lines(&self) -> Vec<(String, String)> {
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match &self.details {
            serde_json::Value::Null => vec![],
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), show(v))).collect(),
            other => vec![(String::new(), show(other))],
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page.
    pub next_before: Option<i64>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The query for a page (with `explain`, its `EXPLAIN`); `None` when the
/// time range holds no rows at all.
pub async fn build<'a>(
    db: &PgPool,
    f: &'a AuditFilter,
    explain: bool,
) -> Result<Option<QueryBuilder<'a, Postgres>>, sqlx::Error> {
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let lo: Option<i64> = match f.from {
        Some(from) => {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM audit_log WHERE created_at >= $1 ORDER BY created_at, id LIMIT 1",
            )
            .bind(from)
            .fetch_optional(db)
            .await?;
            match id {
                Some(id) => Some(id),
                None => return Ok(None),
            }
        }
        None => None,
    };
    let hi: Option<i64> = match f.to {
        Some(to) => {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM audit_log WHERE created_at < $1 ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .bind(to)
            .fetch_optional(db)
            .await?;
            match id {
                Some(id) => Some(id),
                None => return Ok(None),
            }
        }
        None => None,
    };
    let mut q = QueryBuilder::new(if explain { "EXPLAIN " } else { "" });
    q.push(
        "SELECT id, created_at, actor_id, actor_name, action, target_type, target_id, details, ip \
         FROM audit_log WHERE true",
    );
    if let Some(a) = non_empty(&f.actor) {
        q.push(" AND actor_name = ").push_bind(a.to_lowercase());
    }
    if let Some(a) = non_empty(&f.action) {
        if let Some(prefix) = a.strip_suffix('*') {
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND action LIKE ").push_bind(format!("{escaped}%"));
        } else {
            q.push(" AND action = ").push_bind(a.to_string());
        }
    }
    if let Some(t) = non_empty(&f.target_type) {
        q.push(" AND target_type = ").push_bind(t.to_string());
    }
    if let Some(t) = non_empty(&f.target_id) {
        q.push(" AND target_id = ").push_bind(t.to_string());
    }
    if let Some(lo) = lo {
        q.push(" AND id >= ").push_bind(lo);
    }
    if let Some(hi) = hi {
        q.push(" AND id <= ").push_bind(hi);
    }
    if let Some(b) = f.before {
        q.push(" AND id < ").push_bind(b);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
    Ok(Some(q))
}

pub async fn page(db: &PgPool, f: &AuditFilter) -> Result<AuditPage, sqlx::Error> {
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let Some(mut q) = build(db, f, false).await? else {
        return Ok(AuditPage {
            entries: vec![],
            next_before: None,
        });
    };
    let mut entries: Vec<AuditEntry> = q.build_query_as().fetch_all(db).await?;
    let next_before = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage {
        entries,
        next_before,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn plan(db: &PgPool, f: &AuditFilter) -> String {
        let mut q = build(db, f, true).await.unwrap().unwrap();
        let rows: Vec<(String,)> = q.build_query_as().fetch_all(db).await.unwrap();
        rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn a_million_rows_are_paged_by_index_scans_without_gaps_or_repeats(db: PgPool) {
        sqlx::query(
            "INSERT INTO audit_log (id, created_at, actor_name, action, target_type, target_id, details, \
                                    prev_hash, hash) \
             SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', 'user' || (g % 1000), \
                    (ARRAY['login.ok', 'login.failed', 'user.update', 'device.suspend'])[g % 4 + 1], \
                    'user', (g % 5000)::text, '{}'::jsonb, \
                    decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex') \
             FROM generate_series(1, 1000000) g",
        )
        .execute(&db)
        .await
        .unwrap();
        sqlx::query("ANALYZE audit_log").execute(&db).await.unwrap();
        let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        let filters = [
            AuditFilter::default(),
            AuditFilter {
                actor: Some("user7".into()),
                ..Default::default()
            },
            AuditFilter {
                action: Some("device.suspend".into()),
                ..Default::default()
            },
            AuditFilter {
                action: Some("login.*".into()),
                before: Some(500_000),
                ..Default::default()
            },
            AuditFilter {
                target_type: Some("user".into()),
                target_id: Some("42".into()),
                ..Default::default()
            },
            AuditFilter {
                from: Some(t("2026-01-02T00:00:00Z")),
                to: Some(t("2026-01-02T01:00:00Z")),
                ..Default::default()
            },
            AuditFilter {
                actor: Some("user7".into()),
                from: Some(t("2026-01-03T00:00:00Z")),
                to: Some(t("2026-01-05T00:00:00Z")),
                ..Default::default()
            },
        ];
        for f in &filters {
            let p = plan(&db, f).await;
            assert!(!p.contains("Seq Scan"), "{f:?}:\n{p}");
            assert!(p.contains("Index"), "{f:?}:\n{p}");
        }

        // Paging user7's entries in one day: every matching row once, newest first.
        let mut f = AuditFilter {
            actor: Some("user7".into()),
            from: Some(t("2026-01-03T00:00:00Z")),
            to: Some(t("2026-01-04T00:00:00Z")),
            limit: Some(20),
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = page(&db, &f).await.unwrap();
            assert!(page.entries.len() <= 20);
            ids.extend(page.entries.iter().map(|e| e.id));
            match page.next_before {
                Some(b) => f.before = Some(b),
                None => break,
            }
        }
        // 2026-01-03 00:00:00 is second 172800 after the start.
        let expected: Vec<i64> = (172_800..259_200).rev().filter(|g| g % 1000 == 7).collect();
        assert_eq!(ids, expected);
    }
}
