//! `kleidia audit verify`: the hash chain, and the chain against the anchors
//! in OpenBao.
//!
//! The chain alone finds a row altered or deleted in the middle. The anchors
//! (see [`super::anchor`]) add what only an outside witness can show: a cut
//! tail (the log ends before an anchored row) and a re-hashed chain (an
//! anchored row no longer has its anchored hash). Every retained version of
//! the anchor is checked, so an anchor moved backwards is noticed too.

use sqlx::PgPool;

use super::anchor::{Anchor, AnchorError, AnchorStore};
use super::ChainRow;
use crate::config::Config;

/// What `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's content no longer matches its hash (or its hash was
    /// recomputed and the next row no longer links to it).
    Altered { id: i64 },
    /// Rows `from..=to` are gone.
    Missing { from: i64, to: i64 },
    /// The log ends at `last`, before the anchored row `anchored`.
    Truncated { anchored: i64, last: i64 },
    /// The anchored row is gone (later rows are still there).
    AnchoredRowGone { id: i64 },
    /// The anchored row `id` no longer has the anchored hash: the chain was
    /// re-hashed at or before it (after `intact_up_to`, when an older anchor
    /// still matches).
    Rewritten { id: i64, intact_up_to: Option<i64> },
    /// A stored anchor version that OpenBao does not vouch for.
    AnchorForged { version: u64, detail: String },
    /// A later anchor version covers fewer rows than an earlier one.
    AnchorMovedBack { from: i64, to: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Altered { id } => write!(f, "row {id} was altered"),
            Problem::Missing { from, to } if from == to => write!(f, "row {from} was deleted"),
            Problem::Missing { from, to } => write!(f, "rows {from} to {to} were deleted"),
            Problem::Truncated { anchored, last } => write!(
                f,
                "truncated: the log ends at row {last} but the anchor in OpenBao covers rows up to {anchored}: rows {} to {anchored} are gone",
                last + 1
            ),
            Problem::AnchoredRowGone { id } => {
                write!(f, "row {id} is gone, and the anchor in OpenBao covers it")
            }
            Problem::Rewritten { id, intact_up_to } => {
                write!(
                    f,
                    "row {id} was rewritten: its hash is not the one anchored in OpenBao, so the chain was re-hashed at or before row {id}"
                )?;
                if let Some(ok) = intact_up_to {
                    write!(f, " (after row {ok}, which still matches an earlier anchor)")?;
                }
                Ok(())
            }
            Problem::AnchorForged { version, detail } => {
                write!(f, "the anchor in OpenBao is forged (version {version}): {detail}")
            }
            Problem::AnchorMovedBack { from, to } => write!(
                f,
                "the anchor in OpenBao was moved back from row {from} to row {to}"
            ),
        }
    }
}

/// What the anchors in OpenBao say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AnchorStatus {
    /// No OpenBao token configured: only the chain was checked.
    #[default]
    NotChecked,
    /// OpenBao holds no anchor yet.
    Missing,
    /// Rows `1..=id` are covered by an anchor whose HMAC OpenBao verified.
    Covered { id: i64, at: String },
    /// Anchors are stored, but none verifies.
    NoValidAnchor,
    /// OpenBao could not be asked.
    Unavailable(String),
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub rows: u64,
    /// The highest row id in the log (0 when empty).
    pub last_id: i64,
    pub problems: Vec<Problem>,
    pub anchor: AnchorStatus,
}

impl VerifyReport {
    /// Intact, and the anchor (when configured) could be checked.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !matches!(self.anchor, AnchorStatus::Unavailable(_))
    }

    /// What `kleidia audit verify` prints.
    pub fn render(&self) -> String {
        let mut out = if self.problems.is_empty() {
            format!("audit verify: {} rows, chain intact\n", self.rows)
        } else {
            let mut s = format!(
                "audit verify: {} rows checked, {} problem(s):\n",
                self.rows,
                self.problems.len()
            );
            for p in &self.problems {
                s.push_str(&format!("  {p}\n"));
            }
            s
        };
        let blind = "a cut tail or a re-hashed chain cannot be detected";
        match &self.anchor {
            AnchorStatus::NotChecked => out.push_str(&format!(
                "anchor: not checked (no OpenBao token configured); without the anchor {blind}\n"
            )),
            AnchorStatus::Missing => out.push_str(&format!(
                "anchor: none in OpenBao yet; without the anchor {blind}\n"
            )),
            AnchorStatus::NoValidAnchor => {
                out.push_str(&format!("anchor: no stored anchor verifies; {blind}\n"))
            }
            AnchorStatus::Unavailable(e) => {
                out.push_str(&format!("anchor: could not be checked: {e}\n"))
            }
            AnchorStatus::Covered { id, at } => {
                out.push_str(&format!(
                    "anchor: rows 1 to {id} anchored in OpenBao at {at} (HMAC verified by OpenBao)\n"
                ));
                if self.last_id > *id {
                    let after = if self.last_id == id + 1 {
                        format!("row {}", self.last_id)
                    } else {
                        format!("rows {} to {}", id + 1, self.last_id)
                    };
                    out.push_str(&format!(
                        "after the anchor: {after} covered by the hash chain only, not yet by an anchor\n"
                    ));
                }
            }
        }
        out
    }
}

/// The chain and, when `store` is given, every retained anchor.
pub async fn verify_anchored(
    db: &PgPool,
    store: Option<&AnchorStore>,
) -> Result<VerifyReport, sqlx::Error> {
    let mut report = verify(db).await?;
    if let Some(store) = store {
        match check_anchors(db, store, &mut report).await {
            Ok(status) => report.anchor = status,
            Err(AnchorError::Db(e)) => return Err(e),
            Err(e) => report.anchor = AnchorStatus::Unavailable(e.to_string()),
        }
    }
    Ok(report)
}

async fn check_anchors(
    db: &PgPool,
    store: &AnchorStore,
    report: &mut VerifyReport,
) -> Result<AnchorStatus, AnchorError> {
    let history = store.history().await?;
    if history.is_empty() {
        return Ok(AnchorStatus::Missing);
    }
    let mut valid: Vec<Anchor> = Vec::new();
    for (version, a) in history {
        match a {
            Err(m) => report.problems.push(Problem::AnchorForged {
                version,
                detail: format!("it is not an anchor ({m})"),
            }),
            Ok(a) if store.verify(&a).await? => valid.push(a),
            Ok(a) => report.problems.push(Problem::AnchorForged {
                version,
                detail: format!("its HMAC over row {} does not verify", a.id),
            }),
        }
    }
    for w in valid.windows(2) {
        if w[1].id < w[0].id {
            report.problems.push(Problem::AnchorMovedBack {
                from: w[0].id,
                to: w[1].id,
            });
        }
    }
    let Some(best) = valid.iter().max_by_key(|a| a.id).cloned() else {
        return Ok(AnchorStatus::NoValidAnchor);
    };
    if best.id > report.last_id {
        report.problems.push(Problem::Truncated {
            anchored: best.id,
            last: report.last_id,
        });
    }
    // Oldest anchored row first: the first one that no longer matches is
    // where the rewriting (or deletion) shows.
    let mut anchored: Vec<&Anchor> = valid.iter().filter(|a| a.id <= report.last_id).collect();
    anchored.sort_by_key(|a| a.id);
    anchored.dedup_by_key(|a| a.id);
    let mut intact_up_to = None;
    for a in anchored {
        let row: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
            .bind(a.id)
            .fetch_optional(db)
            .await?;
        match row {
            None => {
                report.problems.push(Problem::AnchoredRowGone { id: a.id });
                break;
            }
            Some(h) if hex::encode(&h) != a.hash => {
                report.problems.push(Problem::Rewritten {
                    id: a.id,
                    intact_up_to,
                });
                break;
            }
            Some(_) => intact_up_to = Some(a.id),
        }
    }
    Ok(AnchorStatus::Covered {
        id: best.id,
        at: best.at,
    })
}

/// `kleidia audit verify`: prints the report; `Ok(true)` when intact. The
/// anchors are checked with the app's OpenBao token (`openbao.token`).
pub async fn command(config: &Config) -> anyhow::Result<bool> {
    let pool = crate::db::connect(&config.database).await?;
    let store = AnchorStore::from_config(config)?;
    let report = verify_anchored(&pool, store.as_ref()).await?;
    print!("{}", report.render());
    Ok(report.ok())
}

/// Walk the whole chain in id order, in batches, and report every break.
pub async fn verify(db: &PgPool) -> Result<VerifyReport, sqlx::Error> {
    const BATCH: i64 = 5000;
    let mut report = VerifyReport::default();
    let mut prev_id = 0i64;
    let mut prev_hash = vec![0u8; 32];
    let mut prev_altered = false;
    loop {
        let rows: Vec<ChainRow> = sqlx::query_as(
            "SELECT id, created_at, actor_id, actor_name, action, target_type, target_id, details, ip, \
                    prev_hash, hash FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(prev_id)
        .bind(BATCH)
        .fetch_all(db)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            report.rows += 1;
            if row.id != prev_id + 1 {
                report.problems.push(Problem::Missing {
                    from: prev_id + 1,
                    to: row.id - 1,
                });
            } else if row.prev_hash != prev_hash && prev_id > 0 && !prev_altered {
                // No gap, yet the link is broken: the previous row was
                // rewritten together with its hash.
                report.problems.push(Problem::Altered { id: prev_id });
            }
            let altered = row.compute_hash() != row.hash;
            if altered {
                report.problems.push(Problem::Altered { id: row.id });
            }
            prev_altered = altered;
            prev_id = row.id;
            prev_hash = row.hash;
        }
    }
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_id, last_hash FROM audit_head WHERE singleton")
            .fetch_optional(db)
            .await?;
    if let Some((last_id, last_hash)) = head {
        if last_id > prev_id {
            report.problems.push(Problem::Missing {
                from: prev_id + 1,
                to: last_id,
            });
        } else if last_id == prev_id && last_hash != prev_hash && !prev_altered && prev_id > 0 {
            report.problems.push(Problem::Altered { id: prev_id });
        }
    }
    report.last_id = prev_id;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(problems: Vec<Problem>, anchor: AnchorStatus) -> VerifyReport {
        VerifyReport {
            rows: 12,
            last_id: 12,
            problems,
            anchor,
        }
    }

    #[test]
    fn an_intact_log_says_how_far_the_anchor_reaches_and_what_only_the_chain_covers() {
        let r = report(
            vec![],
            AnchorStatus::Covered {
                id: 10,
                at: "2026-11-30T00:00:00Z".into(),
            },
        );
        assert!(r.ok());
        assert_eq!(
            r.render(),
            "audit verify: 12 rows, chain intact\n\
             anchor: rows 1 to 10 anchored in OpenBao at 2026-11-30T00:00:00Z (HMAC verified by OpenBao)\n\
             after the anchor: rows 11 to 12 covered by the hash chain only, not yet by an anchor\n"
        );
        let r = report(
            vec![],
            AnchorStatus::Covered {
                id: 11,
                at: "t".into(),
            },
        );
        assert!(r.render().contains("after the anchor: row 12 covered"));
        let r = report(
            vec![],
            AnchorStatus::Covered {
                id: 12,
                at: "t".into(),
            },
        );
        assert!(!r.render().contains("after the anchor"));
    }

    #[test]
    fn every_problem_names_its_row_and_fails_the_run() {
        let cases = [
            (
                Problem::Truncated {
                    anchored: 12,
                    last: 9,
                },
                "truncated: the log ends at row 9 but the anchor in OpenBao covers rows up to 12: rows 10 to 12 are gone",
            ),
            (
                Problem::AnchoredRowGone { id: 7 },
                "row 7 is gone, and the anchor in OpenBao covers it",
            ),
            (
                Problem::Rewritten {
                    id: 8,
                    intact_up_to: Some(4),
                },
                "row 8 was rewritten: its hash is not the one anchored in OpenBao, so the chain was re-hashed at or before row 8 (after row 4, which still matches an earlier anchor)",
            ),
            (
                Problem::AnchorMovedBack { from: 9, to: 3 },
                "the anchor in OpenBao was moved back from row 9 to row 3",
            ),
        ];
        for (p, text) in cases {
            assert_eq!(p.to_string(), text);
            let r = report(
                vec![p],
                AnchorStatus::Covered {
                    id: 12,
                    at: "t".into(),
                },
            );
            assert!(!r.ok());
            assert!(
                r.render().contains(&format!("\n  {text}\n")),
                "{}",
                r.render()
            );
        }
    }

    #[test]
    fn an_anchor_that_could_not_be_checked_fails_and_a_missing_token_is_named() {
        let r = report(vec![], AnchorStatus::Unavailable("sealed".into()));
        assert!(!r.ok());
        assert!(r.render().contains("anchor: could not be checked: sealed"));
        let r = report(vec![], AnchorStatus::NotChecked);
        assert!(r.ok());
        assert!(r
            .render()
            .contains("anchor: not checked (no OpenBao token configured)"));
    }
}
