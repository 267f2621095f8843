//! CSV imports (issue 18 §2): user accounts, and device-to-owner
//! assignments.
//!
//! Every row is checked first and gets an outcome: what it will do, or the
//! reason it cannot. A dry run stops there (the preview). A real import
//! applies nothing while any row fails, unless the admin accepts a partial
//! import; then the good rows are applied in one transaction, each with its
//! own audit row naming the batch, and the batch is audited as a whole with
//! its members and the rows left out (`user.import`,
//! `device.import_assignments`). A refused import is audited too
//! (`import.refused`), with counts and reasons, never the file.
//!
//! The file is refused as a whole when it is too large, not UTF-8, has the
//! wrong header or too many rows. A cell a spreadsheet would run as a
//! formula (`=`, `+`, `-`, `@`, tab or CR first) fails its row: values
//! imported here come back out in exports and pages.

use std::collections::BTreeSet;

use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::auth::password::{generate_password, Passwords};
use crate::auth::{ClientMeta, CurrentUser, Role};
use crate::db::users::{self, InsertUserError, NewUser};
use crate::domain::{DisplayName, EmailAddress, Serial, Username};
use crate::error::AppError;

use super::db::devices;

/// Largest file accepted, in bytes.
pub const MAX_BYTES: usize = 200 * 1024;
/// Most rows (not counting the header) in one file.
pub const MAX_ROWS: usize = 1000;
/// Longest cell, in characters.
pub const MAX_CELL: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    Users,
    Assignments,
}

impl ImportKind {
    pub fn header(self) -> &'static [&'static str] {
        match self {
            ImportKind::Users => &["username", "display_name", "email", "role"],
            ImportKind::Assignments => &["serial", "owner"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Users => "users",
            ImportKind::Assignments => "assignments",
        }
    }
}

/// One row and what becomes of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowOutcome {
    /// The line in the file (the header is line 1).
    pub line: u64,
    /// The username or serial the row is about, as given (defused for display).
    pub key: String,
    pub ok: bool,
    /// What it does (`ok`), or why it cannot.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub kind: ImportKind,
    pub dry_run: bool,
    /// Rows were written (false for a dry run and a refusal).
    pub applied: bool,
    pub rows: Vec<RowOutcome>,
    pub ok: usize,
    pub failed: usize,
    /// The batch's id in the audit log (an applied import).
    pub batch: Option<Uuid>,
    /// Accounts created, with their one-time passwords: shown once.
    pub one_time_passwords: Vec<OneTimePassword>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OneTimePassword {
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is larger than {} KiB", MAX_BYTES / 1024)]
    TooLarge,
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    #[error("the file has no header line; the first line must be: {0}")]
    Empty(String),
    #[error("the first line must be exactly: {expected} (found: {found})")]
    BadHeader { expected: String, found: String },
    #[error("the file has more than {MAX_ROWS} rows; split it")]
    TooManyRows,
    #[error("the file has no rows after its header")]
    NoRows,
    #[error("{failed} of {total} rows cannot be imported; nothing was imported (fix them, or accept a partial import)")]
    RowsFailed {
        failed: usize,
        total: usize,
        report: Box<ImportReport>,
    },
    #[error("no row can be imported")]
    NothingToApply { report: Box<ImportReport> },
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl ImportError {
    /// The per-row report that goes with a refusal, if there is one.
    pub fn report(&self) -> Option<&ImportReport> {
        match self {
            ImportError::RowsFailed { report, .. } | ImportError::NothingToApply { report } => {
                Some(report)
            }
            _ => None,
        }
    }

    fn is_file_refusal(&self) -> bool {
        !matches!(self, ImportError::App(_) | ImportError::Db(_))
    }
}

/// A cell a spreadsheet would evaluate.
fn formula(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A cell as it may be shown back (pages and the report).
fn shown(s: &str) -> String {
    let s: String = s.chars().take(80).collect();
    if formula(&s) {
        format!("'{s}")
    } else {
        s
    }
}

/// The file's rows (line, cells), or why the whole file is refused. Rows
/// with the wrong number of cells or an unacceptable cell come back as
/// `Err(reason)`.
type ParsedRow = (u64, String, Result<Vec<String>, String>);

fn parse(kind: ImportKind, bytes: &[u8]) -> Result<Vec<ParsedRow>, ImportError> {
    if bytes.len() > MAX_BYTES {
        return Err(ImportError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ImportError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let expected = kind.header().join(",");
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = rd.records();
    let header = match records.next() {
        None => return Err(ImportError::Empty(expected)),
        Some(Err(_)) => {
            return Err(ImportError::BadHeader {
                expected,
                found: "an unreadable line".into(),
            })
        }
        Some(Ok(h)) => h,
    };
    let found: Vec<String> = header.iter().map(|c| c.to_lowercase()).collect();
    if found != kind.header() {
        return Err(ImportError::BadHeader {
            expected,
            found: shown(&found.join(",")),
        });
    }
    let width = kind.header().len();
    // The line as an editor counts it (the reader does not count blank lines).
    let line_at = |p: Option<&csv::Position>| {
        p.map_or(0, |p| {
            let mut upto = usize::try_from(p.byte())
                .unwrap_or(usize::MAX)
                .min(text.len());
            // A record's position is where the reader began, before the blank
            // lines it skipped.
            while matches!(text.as_bytes().get(upto), Some(b'\n' | b'\r')) {
                upto += 1;
            }
            text.as_bytes()[..upto]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64
                + 1
        })
    };
    let mut rows = Vec::new();
    for rec in records {
        if rows.len() >= MAX_ROWS {
            return Err(ImportError::TooManyRows);
        }
        let (line, r) = match rec {
            Ok(r) => (line_at(r.position()), r),
            Err(e) => {
                let line = line_at(e.position());
                rows.push((line, String::new(), Err("the line is not valid CSV".into())));
                continue;
            }
        };
        let cells: Vec<String> = r.iter().map(str::to_string).collect();
        let key = shown(cells.first().map(String::as_str).unwrap_or_default());
        if cells.iter().all(String::is_empty) {
            continue;
        }
        if cells.len() != width {
            let reason = format!("expected {width} fields, found {}", cells.len());
            rows.push((line, key, Err(reason)));
            continue;
        }
        let bad = kind.header().iter().zip(&cells).find_map(|(name, c)| {
            if formula(c) {
                Some(format!(
                    "{name} starts with {:?}: cells that a spreadsheet would run as a formula are refused",
                    c.chars().next().unwrap_or_default()
                ))
            } else if c.chars().count() > MAX_CELL {
                Some(format!("{name} is longer than {MAX_CELL} characters"))
            } else if c.chars().any(char::is_control) {
                Some(format!("{name} contains a control character"))
            } else {
                None
            }
        });
        rows.push((line, key, bad.map_or(Ok(cells), Err)));
    }
    if rows.is_empty() {
        return Err(ImportError::NoRows);
    }
    Ok(rows)
}

// ---------------------------------------------------------------- users

struct UserRowPlan {
    username: Username,
    display_name: DisplayName,
    email: Option<EmailAddress>,
    role: Role,
}

async fn check_user(
    db: &PgPool,
    cells: &[String],
    seen: &mut BTreeSet<String>,
) -> Result<UserRowPlan, String> {
    let username = Username::parse(&cells[0]).map_err(|e| format!("username: {e}"))?;
    let display_name = DisplayName::parse(if cells[1].is_empty() {
        username.as_str()
    } else {
        &cells[1]
    })
    .map_err(|e| format!("display_name: {e}"))?;
    let email = EmailAddress::parse_optional(Some(&cells[2])).map_err(|e| format!("email: {e}"))?;
    let role = Role::parse(&cells[3].to_lowercase())
        .map_err(|_| "role must be admin, helpdesk, auditor or user".to_string())?;
    if !seen.insert(username.as_str().to_string()) {
        return Err(format!("{username} appears twice in the file"));
    }
    if users::by_username(db, username.as_str())
        .await
        .map_err(|_| "could not check the username".to_string())?
        .is_some()
    {
        return Err(format!("the username {username} is already taken"));
    }
    Ok(UserRowPlan {
        username,
        display_name,
        email,
        role,
    })
}

// ---------------------------------------------------------- assignments

struct AssignPlan {
    serial: Serial,
    owner_id: Uuid,
    owner: String,
    from: Option<String>,
}

async fn check_assignment(
    db: &PgPool,
    cells: &[String],
    seen: &mut BTreeSet<Serial>,
) -> Result<Option<AssignPlan>, String> {
    let serial = Serial::parse(&cells[0]).map_err(|e| format!("serial: {e}"))?;
    if !seen.insert(serial) {
        return Err(format!("{serial} appears twice in the file"));
    }
    let owner = cells[1].trim().to_lowercase();
    if owner.is_empty() {
        return Err("give the owner's username".into());
    }
    let d = devices::device(db, serial)
        .await
        .map_err(|_| "could not check the device".to_string())?
        .ok_or_else(|| format!("no device with serial {serial}"))?;
    let u = users::by_username(db, &owner)
        .await
        .map_err(|_| "could not check the owner".to_string())?
        .ok_or_else(|| format!("no user named {}", shown(&owner)))?;
    if u.disabled {
        return Err(format!("{} is disabled", u.username));
    }
    if d.owner_id == Some(u.id) {
        return Ok(None);
    }
    Ok(Some(AssignPlan {
        serial,
        owner_id: u.id,
        owner: u.username,
        from: d.owner_username,
    }))
}

// ---------------------------------------------------------------- import

/// What the admin asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportMode {
    pub dry_run: bool,
    pub accept_partial: bool,
}

pub struct Importer<'a> {
    pub db: &'a PgPool,
    pub passwords: &'a Passwords,
    pub me: &'a CurrentUser,
    pub meta: &'a ClientMeta,
}

impl Importer<'_> {
    /// Check (and unless a dry run, apply) an import; see the module docs.
    /// `license_check(n)` is asked whether `n` more accounts may be created.
    pub async fn run<F, Fut>(
        &self,
        kind: ImportKind,
        bytes: &[u8],
        mode: ImportMode,
        license_check: F,
    ) -> Result<ImportReport, ImportError>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), AppError>>,
    {
        let r = self.run_checked(kind, bytes, mode, license_check).await;
        if let Err(e) = &r {
            if e.is_file_refusal() && !mode.dry_run {
                let (total, failed, reasons) = match e.report() {
                    Some(rep) => (
                        rep.rows.len(),
                        rep.failed,
                        rep.rows
                            .iter()
                            .filter(|r| !r.ok)
                            .take(50)
                            .map(|r| json!({"line": r.line, "reason": r.message}))
                            .collect(),
                    ),
                    None => (0, 0, Vec::new()),
                };
                let event = AuditEvent::new("import.refused")
                    .actor(self.me)
                    .from_client(self.meta)
                    .details(json!({
                        "kind": kind,
                        "reason": e.to_string(),
                        "rows": total,
                        "failed": failed,
                        "failures": reasons,
                    }));
                if let Err(a) = audit::record_alone(self.db, event).await {
                    tracing::error!(error = %a, "could not audit a refused import");
                }
            }
        }
        r
    }

    async fn run_checked<F, Fut>(
        &self,
        kind: ImportKind,
        bytes: &[u8],
        mode: ImportMode,
        license_check: F,
    ) -> Result<ImportReport, ImportError>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), AppError>>,
    {
        if self.me.role != Role::Admin {
            return Err(AppError::Forbidden("only an admin imports".into()).into());
        }
        let parsed = parse(kind, bytes)?;
        let mut report = ImportReport {
            kind,
            dry_run: mode.dry_run,
            applied: false,
            rows: Vec::with_capacity(parsed.len()),
            ok: 0,
            failed: 0,
            batch: None,
            one_time_passwords: Vec::new(),
        };
        let mut user_plans = Vec::new();
        let mut assign_plans = Vec::new();
        let mut seen_users = BTreeSet::new();
        let mut seen_serials = BTreeSet::new();
        for (line, key, cells) in parsed {
            let outcome = match cells {
                Err(reason) => Err(reason),
                Ok(cells) => match kind {
                    ImportKind::Users => {
                        check_user(self.db, &cells, &mut seen_users).await.map(|p| {
                            let m = format!(
                                "create {} ({}, {})",
                                p.username,
                                p.role,
                                p.display_name.as_str()
                            );
                            user_plans.push((line, p));
                            m
                        })
                    }
                    ImportKind::Assignments => check_assignment(self.db, &cells, &mut seen_serials)
                        .await
                        .map(|p| match p {
                            None => "already assigned so: no change".to_string(),
                            Some(p) => {
                                let m = format!(
                                    "assign {} to {} (now {})",
                                    p.serial,
                                    p.owner,
                                    p.from.as_deref().unwrap_or("nobody")
                                );
                                assign_plans.push((line, p));
                                m
                            }
                        }),
                },
            };
            let ok = outcome.is_ok();
            report.rows.push(RowOutcome {
                line,
                key,
                ok,
                message: outcome.unwrap_or_else(|e| e),
            });
        }
        report.ok = report.rows.iter().filter(|r| r.ok).count();
        report.failed = report.rows.len() - report.ok;
        if mode.dry_run {
            return Ok(report);
        }
        if report.failed > 0 && !mode.accept_partial {
            return Err(ImportError::RowsFailed {
                failed: report.failed,
                total: report.rows.len(),
                report: Box::new(report),
            });
        }
        if report.ok == 0 {
            return Err(ImportError::NothingToApply {
                report: Box::new(report),
            });
        }
        let batch = Uuid::new_v4();
        let left_out: Vec<_> = report
            .rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| json!({"line": r.line, "reason": r.message}))
            .collect();
        match kind {
            ImportKind::Users => {
                license_check(user_plans.len()).await?;
                report.one_time_passwords = self.apply_users(batch, user_plans, &left_out).await?;
            }
            ImportKind::Assignments => {
                self.apply_assignments(batch, assign_plans, &left_out)
                    .await?
            }
        }
        report.applied = true;
        report.batch = Some(batch);
        Ok(report)
    }

    async fn apply_users(
        &self,
        batch: Uuid,
        plans: Vec<(u64, UserRowPlan)>,
        left_out: &[serde_json::Value],
    ) -> Result<Vec<OneTimePassword>, ImportError> {
        // Hash first (slow, behind the semaphore), then one short transaction.
        let mut hashed = Vec::with_capacity(plans.len());
        for (_, p) in plans {
            let password = generate_password();
            let hash = self
                .passwords
                .hash(&SecretString::from(password.clone()))
                .await?;
            hashed.push((p, password, hash));
        }
        let mut tx = self.db.begin().await?;
        let mut members = Vec::new();
        let mut out = Vec::new();
        for (p, password, hash) in hashed {
            let row = users::insert(
                &mut *tx,
                &NewUser {
                    username: p.username,
                    display_name: p.display_name,
                    email: p.email,
                    role: p.role,
                    password_hash: hash,
                    must_change_password: true,
                },
            )
            .await
            .map_err(|e| match e {
                InsertUserError::UsernameTaken(u) => ImportError::App(AppError::Conflict(format!(
                    "the username {u} was taken meanwhile; nothing was imported"
                ))),
                InsertUserError::Db(e) => ImportError::Db(e),
            })?;
            audit::record(
                &mut tx,
                AuditEvent::new("user.create")
                    .actor(self.me)
                    .from_client(self.meta)
                    .target("user", row.id)
                    .details(json!({"username": row.username, "role": row.role,
                                    "display_name": row.display_name, "batch": batch})),
            )
            .await?;
            members.push(json!({"id": row.id, "username": row.username}));
            out.push(OneTimePassword {
                username: row.username,
                password,
            });
        }
        audit::record(
            &mut tx,
            AuditEvent::new("user.import")
                .actor(self.me)
                .from_client(self.meta)
                .target("batch", batch)
                .details(json!({"batch": batch, "members": members, "left_out": left_out})),
        )
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn apply_assignments(
        &self,
        batch: Uuid,
        plans: Vec<(u64, AssignPlan)>,
        left_out: &[serde_json::Value],
    ) -> Result<(), ImportError> {
        let mut tx = self.db.begin().await?;
        let mut members = Vec::new();
        for (_, p) in plans {
            let d = devices::device_for_update(&mut tx, p.serial)
                .await?
                .ok_or_else(|| {
                    AppError::Conflict(format!(
                        "device {} vanished meanwhile; nothing was imported",
                        p.serial
                    ))
                })?;
            // The owner must still be there and enabled.
            let still: Option<bool> =
                sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1 FOR SHARE")
                    .bind(p.owner_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if still != Some(false) {
                return Err(AppError::Conflict(format!(
                    "{} was disabled or removed meanwhile; nothing was imported",
                    p.owner
                ))
                .into());
            }
            devices::set_owner(&mut tx, p.serial, Some(p.owner_id)).await?;
            audit::record(
                &mut tx,
                AuditEvent::new("device.assign")
                    .actor(self.me)
                    .from_client(self.meta)
                    .target("device", p.serial)
                    .details(json!({"from": d.owner_username, "to": p.owner, "batch": batch})),
            )
            .await?;
            members.push(json!({"serial": p.serial, "from": d.owner_username, "to": p.owner}));
        }
        audit::record(
            &mut tx,
            AuditEvent::new("device.import_assignments")
                .actor(self.me)
                .from_client(self.meta)
                .target("batch", batch)
                .details(json!({"batch": batch, "members": members, "left_out": left_out})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_and_rows_are_refused_with_reasons() {
        let ok = b"username,display_name,email,role\nalice,Alice,alice@x.example,user\n";
        let rows = parse(ImportKind::Users, ok).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 2);
        assert!(rows[0].2.is_ok());

        assert!(matches!(
            parse(ImportKind::Users, b"user,name\nalice,Alice\n"),
            Err(ImportError::BadHeader { .. })
        ));
        assert!(matches!(
            parse(ImportKind::Users, &[0xff, 0xfe, b'a']),
            Err(ImportError::NotUtf8)
        ));
        assert!(matches!(
            parse(ImportKind::Users, b"username,display_name,email,role\n"),
            Err(ImportError::NoRows)
        ));
        let big = vec![b'a'; MAX_BYTES + 1];
        assert!(matches!(
            parse(ImportKind::Users, &big),
            Err(ImportError::TooLarge)
        ));
        let mut many = String::from("serial,owner\n");
        for i in 0..=MAX_ROWS {
            many.push_str(&format!("{},alice\n", i + 1));
        }
        assert!(matches!(
            parse(ImportKind::Assignments, many.as_bytes()),
            Err(ImportError::TooManyRows)
        ));

        let bad = "username,display_name,email,role\n\
                   mallory,=HYPERLINK(\"http://evil\"),m@x.example,user\n\
                   short,Short\n\
                   \n\
                   ok,\"A, B\",ok@x.example,admin\n";
        let rows = parse(ImportKind::Users, bad.as_bytes()).unwrap();
        assert_eq!(rows.len(), 3, "the blank line is skipped");
        let e = rows[0].2.as_ref().unwrap_err();
        assert!(e.contains("display_name starts with '='"), "{e}");
        assert_eq!(
            rows[1].2.as_ref().unwrap_err(),
            "expected 4 fields, found 2"
        );
        assert_eq!(rows[2].2.as_ref().unwrap()[1], "A, B");
        assert_eq!(rows[2].0, 5);
    }

    #[test]
    fn shown_cells_are_defused() {
        assert_eq!(shown("=1+1"), "'=1+1");
        assert_eq!(shown("alice"), "alice");
    }
}
