//! What the audit log says after a restore whose two halves are not from the
//! same moment (docs/openbao.md, "Backup and restore"): audited actions and
//! an anchor written between the PostgreSQL dump and the OpenBao snapshot.
//! The restore goes through, and `kleidia audit verify` names the rows the
//! dump lacks but the anchor covers, instead of passing.

use std::path::Path;

use kleidia_tests::app::cli_create_user;
use kleidia_tests::client::Api;
use kleidia_tests::raft::{app_db_url, run_script, RaftBao};
use kleidia_tests::{stack_var, TestDb, ADMIN_PASSWORD};

fn backup(dir: &Path, db: &TestDb, bao: &RaftBao, token: &str) -> String {
    let d = dir.display().to_string();
    let (out, text) = run_script(
        "backup.sh",
        &[&d],
        &[
            ("DATABASE_URL", &db.url),
            ("BAO_ADDR", &bao.addr),
            ("BAO_TOKEN", token),
        ],
    );
    assert!(out.status.success(), "backup.sh: {text}");
    std::fs::read_to_string(dir.join("manifest")).unwrap()
}

fn field(manifest: &str, key: &str) -> String {
    manifest
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {manifest}"))
        .to_string()
}

#[tokio::test]
async fn a_restore_that_loses_anchored_rows_says_which_rows_are_gone() {
    let bao = RaftBao::bootstrapped("http://127.0.0.1:8080")
        .await
        .unwrap();
    let app_token = bao
        .root()
        .token_with_policies(&["kleidia-app"])
        .await
        .unwrap();
    let backup_token = bao.backup_token().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let mut app = bao.serve(&db, &app_token, vec![]).await.unwrap();
    cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();
    let (ok, out) = bao.audit(&db, &app_token, "anchor");
    assert!(ok, "{out}");
    let work = tempfile::tempdir().unwrap();
    let first = backup(&work.path().join("a"), &db, &bao, &backup_token);
    assert_eq!(field(&first, "audit_consistent"), "true", "{first}");
    let dumped: u64 = field(&first, "audit_head_in_dump").parse().unwrap();

    // Audited sign-ins, anchored, after that dump; then a second backup.
    for _ in 0..3 {
        Api::new(&app.base_url)
            .login("admin", ADMIN_PASSWORD)
            .await
            .unwrap();
    }
    let (ok, out) = bao.audit(&db, &app_token, "anchor");
    assert!(ok, "{out}");
    let second = backup(&work.path().join("b"), &db, &bao, &backup_token);
    let anchored: u64 = field(&second, "audit_anchor_after_snapshot")
        .parse()
        .unwrap();
    assert!(anchored > dumped, "{first}\n{second}");

    // The pair a backup would make if all that happened between its dump
    // and its snapshot: the first dump with the second snapshot.
    let mixed = work.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let a = work.path().join("a");
    let b = work.path().join("b");
    std::fs::copy(a.join("postgres.dump"), mixed.join("postgres.dump")).unwrap();
    std::fs::copy(b.join("openbao.snap"), mixed.join("openbao.snap")).unwrap();
    let manifest: String = first
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("openbao_snapshot_sha256", _)) => format!(
                "openbao_snapshot_sha256={}",
                field(&second, "openbao_snapshot_sha256")
            ),
            Some(("audit_anchor_after_snapshot", _)) => {
                format!("audit_anchor_after_snapshot={anchored}")
            }
            Some(("audit_consistent", _)) => "audit_consistent=false".into(),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(mixed.join("manifest"), manifest).unwrap();

    // The database is lost; OpenBao is rolled back to the second snapshot.
    app.proc.stop();
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&stack_var("DATABASE_URL"))
            .await
            .unwrap();
        for q in ["DROP DATABASE {} WITH (FORCE)", "CREATE DATABASE {}"] {
            sqlx::query(&q.replace("{}", &db.name))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let kleidia = kleidia_tests::bin_path("kleidia").display().to_string();
    let app_db = app_db_url(&db);
    let m = mixed.display().to_string();
    let (out, text) = run_script(
        "restore.sh",
        &[&m],
        &[
            ("DATABASE_URL", &db.url),
            ("BAO_ADDR", &bao.addr),
            ("BAO_TOKEN", &bao.keys.root_token),
            ("VERIFY_WITH", &kleidia),
            ("KLEIDIA_DATABASE_URL", &app_db),
            ("KLEIDIA_OPENBAO_ADDR", &bao.addr),
            ("KLEIDIA_OPENBAO_TOKEN", &app_token),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "restore.sh: {text}");
    assert!(
        text.contains(&format!(
            "truncated: the log ends at row {dumped} but the anchor in OpenBao covers rows up to {anchored}: rows {} to {anchored} are gone",
            dumped + 1
        )),
        "{text}"
    );
    assert!(
        text.contains("audit verify will report the difference"),
        "{text}"
    );

    // The evidence stays: verify keeps failing the same way.
    let (ok, out) = bao.audit(&db, &app_token, "verify");
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("rows {} to {anchored} are gone", dumped + 1)),
        "{out}"
    );
}
