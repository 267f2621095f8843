//! The backup job's own credentials (issue 13): `kleidia bootstrap` writes
//! the `kleidia-backup` policy and AppRole, `scripts/backup.sh` logs in with
//! that role instead of a root token, takes the pair and revokes its token.
//! The attack: whoever holds the backup credentials tries to read escrowed
//! PINs and Kleidia's own keys, write, restore a snapshot, widen its policy
//! or log in as the app; OpenBao refuses each and nothing changes.

use kleidia_tests::app::cli_create_user;
use kleidia_tests::raft::{run_script, RaftBao};
use kleidia_tests::{TestDb, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn accessors(bao: &RaftBao) -> Vec<String> {
    let (s, v) = bao
        .root()
        .call("LIST", "auth/token/accessors", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut keys: Vec<String> = v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_backup_approle_takes_a_snapshot_and_reads_no_secret() {
    let work = tempfile::tempdir().unwrap();
    let creds = work.path().join("approle");
    let bao = RaftBao::bootstrapped_with(
        "http://127.0.0.1:8080",
        &["--approle-out", &creds.display().to_string()],
    )
    .await
    .unwrap();
    let root = bao.root();
    let app_token = root.token_with_policies(&["kleidia-app"]).await.unwrap();
    let db = TestDb::new().await.unwrap();
    // The app creates its keys in OpenBao at start; an escrowed PIN; an
    // audited action and its anchor.
    let _app = bao.serve(&db, &app_token, vec![]).await.unwrap();
    cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();
    root.post(
        "yubikeys/data/31337001/secrets",
        &json!({"data": {"pin": "271828", "puk": "31415926"}}),
    )
    .await
    .unwrap();
    let (ok, out) = bao.audit(&db, &app_token, "anchor");
    assert!(ok, "{out}");

    // backup.sh with the AppRole files bootstrap wrote, and no token.
    let role_dir = creds.join("kleidia-backup");
    let before = accessors(&bao).await;
    let dest = work.path().join("backup");
    let (out, text) = run_script(
        "backup.sh",
        &[&dest.display().to_string()],
        &[
            ("DATABASE_URL", &db.url),
            ("BAO_ADDR", &bao.addr),
            (
                "BAO_ROLE_ID_FILE",
                &role_dir.join("role_id").display().to_string(),
            ),
            (
                "BAO_SECRET_ID_FILE",
                &role_dir.join("secret_id").display().to_string(),
            ),
        ],
    );
    assert!(out.status.success(), "backup.sh: {text}");
    assert!(
        text.contains("logged in with the kleidia-backup AppRole"),
        "{text}"
    );
    let manifest = std::fs::read_to_string(dest.join("manifest")).unwrap();
    assert!(manifest.contains("audit_consistent=true"), "{manifest}");
    assert!(std::fs::metadata(dest.join("openbao.snap")).unwrap().len() > 0);
    // Its login token was revoked when it finished.
    assert_eq!(
        accessors(&bao).await,
        before,
        "backup.sh left a token behind"
    );
    let secret_id = std::fs::read_to_string(role_dir.join("secret_id")).unwrap();
    assert!(
        !text.contains(secret_id.trim()),
        "the secret_id was printed"
    );

    // What the role's token may and may not do.
    let role_id = std::fs::read_to_string(role_dir.join("role_id")).unwrap();
    let login = root
        .with_token("")
        .post(
            "auth/approle/login",
            &json!({"role_id": role_id.trim(), "secret_id": secret_id.trim()}),
        )
        .await
        .unwrap();
    assert_eq!(
        login["auth"]["token_policies"],
        json!(["default", "kleidia-backup"]),
        "{login}"
    );
    let backup = root.with_token(login["auth"]["client_token"].as_str().unwrap());
    let (s, _) = backup
        .call("GET", "sys/storage/raft/snapshot", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "a snapshot");
    let (s, v) = backup
        .call("GET", "secret/data/kleidia/audit-anchor", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "the audit anchor: {v}");

    let refused: [(&str, &str, Option<Value>); 9] = [
        ("GET", "yubikeys/data/31337001/secrets", None),
        ("LIST", "yubikeys/metadata", None),
        ("GET", "secret/data/kleidia/jwt", None),
        ("GET", "secret/data/kleidia/ticket-signing", None),
        ("GET", "license/data/kleidia/licenses", None),
        (
            "POST",
            "yubikeys/data/31337001/secrets",
            Some(json!({"data": {"pin": "000000"}})),
        ),
        (
            "POST",
            "sys/policies/acl/kleidia-backup",
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\", \"read\"] }"})),
        ),
        ("POST", "sys/storage/raft/snapshot", Some(json!({}))),
        ("GET", "auth/approle/role/kleidia-app/role-id", None),
    ];
    for (method, path, body) in refused {
        let (s, v) = backup.call(method, path, body.as_ref()).await.unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    // The backup's credentials are not the app's.
    let app_role_id = std::fs::read_to_string(creds.join("kleidia-app/role_id")).unwrap();
    let (s, v) = root
        .with_token("")
        .call(
            "POST",
            "auth/approle/login",
            Some(&json!({"role_id": app_role_id.trim(), "secret_id": secret_id.trim()})),
        )
        .await
        .unwrap();
    assert!(
        s.is_client_error(),
        "app login with the backup secret_id: {s} {v}"
    );

    // Nothing changed: the escrow, the policy.
    assert_eq!(root.kv_version("yubikeys", "31337001/secrets").await, 1);
    let policy = root.get("sys/policies/acl/kleidia-backup").await.unwrap();
    let text = policy["data"]["policy"].as_str().unwrap();
    assert!(
        !text.contains("sudo") && text.contains("raft/snapshot"),
        "{text}"
    );
}
