//! The client against real OpenBao dev servers, one per test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kleidia_openbao::{Auth, Error, Health, OpenBao, SignRequest, TokenSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{approle_auth, DevBao};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pins {
    pin: String,
    puk: String,
}

fn pins(n: u32) -> Pins {
    Pins {
        pin: format!("{n:06}"),
        puk: format!("{n:08}"),
    }
}

const TEAM_POLICY: &str = r#"
path "secret/data/team/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/team/*" { capabilities = ["read", "list"] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_versions_round_trip_and_a_stale_check_and_set_is_a_conflict() {
    let bao = DevBao::start().await;
    let kv = bao.root().kv2("secret");

    assert_eq!(kv.read::<Pins>("dev/1").await.unwrap(), None);
    assert_eq!(kv.metadata("dev/1").await.unwrap(), None);

    assert_eq!(kv.write("dev/1", &pins(1), Some(0)).await.unwrap(), 1);
    // A second "create" loses: the secret exists now.
    let err = kv.write("dev/1", &pins(2), Some(0)).await.unwrap_err();
    assert!(matches!(err, Error::CasConflict { .. }), "{err:?}");
    assert!(!err.is_unavailable());
    assert_eq!(kv.write("dev/1", &pins(2), Some(1)).await.unwrap(), 2);
    // Writing against version 1 again: stale.
    let err = kv.write("dev/1", &pins(3), Some(1)).await.unwrap_err();
    assert!(matches!(err, Error::CasConflict { .. }), "{err:?}");
    assert_eq!(kv.write("dev/1", &pins(4), None).await.unwrap(), 3);

    let latest = kv.read::<Pins>("dev/1").await.unwrap().unwrap();
    assert_eq!((latest.data, latest.version), (pins(4), 3));
    let first = kv.read_version::<Pins>("dev/1", 1).await.unwrap().unwrap();
    assert_eq!((first.data, first.version), (pins(1), 1));
    assert_eq!(kv.read_version::<Pins>("dev/1", 9).await.unwrap(), None);

    let meta = kv.metadata("dev/1").await.unwrap().unwrap();
    assert_eq!(meta.current_version, 3);
    assert_eq!(
        meta.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(meta
        .versions
        .iter()
        .all(|v| !v.destroyed && v.deletion_time.is_none()));
    assert_eq!(kv.list("dev").await.unwrap(), ["1"]);
    assert_eq!(kv.list("nothing-here").await.unwrap(), Vec::<String>::new());

    // A soft-deleted latest version reads as absent; older versions stay.
    bao.cli(&["kv", "delete", "secret/dev/1"]);
    assert_eq!(kv.read::<Pins>("dev/1").await.unwrap(), None);
    assert!(kv.read_version::<Pins>("dev/1", 2).await.unwrap().is_some());

    // The untyped calls see the same data.
    let raw = bao
        .root()
        .read("secret/data/dev/1?version=2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.pointer("/data/data/pin"), Some(&json!("000002")));
    assert_eq!(bao.root().read("secret/data/absent").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_to_create_a_secret_all_get_the_one_that_won() {
    let bao = DevBao::start().await;
    let kv = bao.root().kv2("secret");
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.get_or_create("kleidia/ticket-key", &pins(n)).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().unwrap());
    }
    let stored = kv
        .read::<Pins>("kleidia/ticket-key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 1);
    assert!(seen.iter().all(|p| *p == stored.data), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_outside_the_policy_is_permission_denied_without_a_new_login() {
    let bao = DevBao::start().await;
    let files = bao
        .approle(
            "team",
            TEAM_POLICY,
            Duration::from_secs(600),
            Duration::from_secs(1200),
        )
        .await;
    let app = OpenBao::connect(bao.config(approle_auth(&files)))
        .await
        .unwrap();
    let before = app.token_info().await.unwrap();
    assert!(before.policies.contains(&"team".to_string()), "{before:?}");

    let kv = app.kv2("secret");
    assert_eq!(kv.write("team/a", &pins(1), Some(0)).await.unwrap(), 1);
    let err = kv.write("other/a", &pins(1), Some(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied { ref path } if path == "secret/data/other/a"),
        "{err:?}"
    );
    assert!(!err.is_unavailable());
    let err = kv.read::<Pins>("other/a").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let err = app
        .write("sys/policy/team", &json!({"policy": ""}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");

    // A real denial is not mistaken for an expired token: same token after.
    assert_eq!(app.token_info().await.unwrap().accessor, before.accessor);

    // A fixed narrow token is refused the same way.
    let narrow = bao
        .root()
        .write(
            "auth/token/create",
            &json!({"policies": ["team"], "no_default_policy": true, "ttl": "10m"}),
        )
        .await
        .unwrap();
    let narrow = narrow["auth"]["client_token"].as_str().unwrap().to_string();
    let narrow = app.with_token(narrow.into());
    let err = narrow
        .kv2("secret")
        .read::<Pins>("other/a")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(narrow
        .kv2("secret")
        .read::<Pins>("team/a")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_server_is_reported_as_sealed_and_served_again_once_unsealed() {
    let bao = DevBao::start().await;
    let files = bao
        .approle(
            "team",
            TEAM_POLICY,
            Duration::from_secs(600),
            Duration::from_secs(1200),
        )
        .await;
    let app = OpenBao::connect(bao.config(approle_auth(&files)))
        .await
        .unwrap();
    let kv = app.kv2("secret");
    kv.write("team/x", &pins(7), None).await.unwrap();
    assert_eq!(app.health().await.unwrap(), Health::Ready);

    bao.cli(&["operator", "seal"]);
    assert_eq!(app.health().await.unwrap(), Health::Sealed);
    let err = kv.read::<Pins>("team/x").await.unwrap_err();
    assert!(matches!(err, Error::Sealed), "{err:?}");
    assert!(err.is_unavailable());
    let err = app.pki("pki").fetch("ca/pem").await.unwrap_err();
    assert!(matches!(err, Error::Sealed), "{err:?}");

    bao.cli(&["operator", "unseal", &bao.unseal_key()]);
    assert_eq!(app.health().await.unwrap(), Health::Ready);
    assert_eq!(
        kv.read::<Pins>("team/x").await.unwrap().unwrap().data,
        pins(7)
    );
}

/// Handlers run on a multi-threaded runtime (axum): every call must be `Send`.
#[test]
fn the_clients_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let bao = OpenBao::new(kleidia_openbao::Config::new(
        "http://127.0.0.1:1".parse().unwrap(),
        Auth::None,
    ))
    .unwrap();
    let kv = bao.kv2("secret");
    send(kv.read::<Pins>("p"));
    send(kv.read_version::<Pins>("p", 1));
    send(kv.write("p", &pins(1), Some(0)));
    send(kv.get_or_create("p", &pins(1)));
    send(kv.metadata("p"));
    send(kv.list("p"));
    let pki = bao.pki("pki");
    let req = SignRequest::default();
    send(pki.sign("r", &req));
    send(pki.revoke("aa"));
    send(pki.rotate_crl());
    send(pki.fetch("ca"));
    send(bao.health());
    send(bao.read("p"));
    let body = json!({});
    send(bao.write("p", &body));
    send(bao.list("p"));
    send(bao.delete("p"));
    send(bao.login());
    send(bao.token_info());
    send(bao.enable_auth("a", "approle"));
    send(OpenBao::connect(kleidia_openbao::Config::new(
        "http://127.0.0.1:1".parse().unwrap(),
        Auth::None,
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Bound and released: nothing listens there now.
    let mut config = kleidia_openbao::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
        Auth::Token("t".to_string().into()),
    );
    config.timeout = Duration::from_secs(2);
    let bao = OpenBao::new(config).unwrap();
    let err = bao.health().await.unwrap_err();
    assert!(matches!(err, Error::Down { status: None, .. }), "{err:?}");
    assert!(!err.is_untrusted_certificate(), "{err:?}");
    let err = bao.kv2("secret").read::<Value>("x").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

/// Reads every 300 ms for `span`; returns the token accessor seen at each
/// read, with the time it was seen. Every read must succeed.
async fn keep_reading(app: &OpenBao, path: &str, span: Duration) -> Vec<(Instant, String)> {
    let kv = app.kv2("secret");
    let end = Instant::now() + span;
    let mut seen = Vec::new();
    while Instant::now() < end {
        let got = kv.read::<Pins>(path).await;
        assert!(matches!(got, Ok(Some(_))), "read failed: {got:?}");
        seen.push((Instant::now(), app.token_info().await.unwrap().accessor));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    seen
}

/// Distinct tokens seen, and the longest any one of them was seen in use.
fn tokens_and_longest_use(seen: &[(Instant, String)]) -> (usize, Duration) {
    let mut spans: BTreeMap<&str, (Instant, Instant)> = BTreeMap::new();
    for (at, accessor) in seen {
        let e = spans.entry(accessor).or_insert((*at, *at));
        e.1 = *at;
    }
    let longest = spans
        .values()
        .map(|(a, b)| *b - *a)
        .max()
        .unwrap_or_default();
    (spans.len(), longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_tokens_are_renewed_then_replaced_across_several_expiries() {
    let bao = DevBao::start().await;
    let ttl = Duration::from_secs(3);
    let files = bao
        .approle("team", TEAM_POLICY, ttl, Duration::from_secs(8))
        .await;
    bao.root()
        .kv2("secret")
        .write("team/p", &pins(1), None)
        .await
        .unwrap();
    let app = OpenBao::connect(bao.config(approle_auth(&files)))
        .await
        .unwrap();
    assert!(app.token_ttl().is_some_and(|t| t <= ttl));

    let seen = keep_reading(&app, "team/p", Duration::from_secs(20)).await;
    let (tokens, longest) = tokens_and_longest_use(&seen);
    // Several logins: renewal stops at max TTL and the client logs in again.
    assert!(
        tokens >= 2,
        "only {tokens} token(s) in 20 s with max TTL 8 s"
    );
    // Renewal: a token stayed in use longer than the TTL it was issued with.
    assert!(longest > ttl, "no token outlived its TTL: {longest:?}");

    // OpenBao forgets the token (revoked, or lost in a restart): the next
    // call is refused, logs in again, and succeeds.
    let current = app.token_info().await.unwrap().accessor;
    bao.revoke_accessor(&current).await;
    let got = app.kv2("secret").read::<Pins>("team/p").await.unwrap();
    assert_eq!(got.unwrap().data, pins(1));
    assert_ne!(app.token_info().await.unwrap().accessor, current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approle_login_with_a_wrong_secret_id_is_a_login_error() {
    let bao = DevBao::start().await;
    let files = bao
        .approle(
            "team",
            TEAM_POLICY,
            Duration::from_secs(60),
            Duration::from_secs(120),
        )
        .await;
    let wrong = bao.file("wrong.secret_id", "00000000-0000-0000-0000-000000000000");
    let err = OpenBao::connect(bao.config(approle_auth(&(files.0.clone(), wrong))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Login {
                method: "approle",
                ..
            }
        ),
        "{err:?}"
    );
    let missing = bao.dir().join("missing");
    let err = OpenBao::connect(bao.config(approle_auth(&(missing, files.1))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Login { .. }), "{err:?}");
    assert!(err.to_string().contains("role_id"), "{err}");
}

#[path = "openbao/jwt.rs"]
mod jwt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_used_as_is_and_read_again_when_the_token_is_refused() {
    let bao = DevBao::start().await;
    let root = bao.root();
    root.write_policy("team", TEAM_POLICY).await.unwrap();
    let mint = || {
        let root = root.clone();
        async move {
            let v = root
                .write(
                    "auth/token/create",
                    &json!({"policies": ["team"], "ttl": "10m"}),
                )
                .await
                .unwrap();
            v["auth"]["client_token"].as_str().unwrap().to_string()
        }
    };
    let token_file = bao.file("token", &mint().await);
    let app = OpenBao::connect(bao.config(Auth::TokenFile(token_file.clone())))
        .await
        .unwrap();
    assert!(app.token_ttl().is_some());
    let kv = app.kv2("secret");
    kv.write("team/t", &pins(3), None).await.unwrap();

    // An operator revokes the token and drops a new one in the file.
    let old = app.token_info().await.unwrap().accessor;
    bao.revoke_accessor(&old).await;
    std::fs::write(&token_file, mint().await).unwrap();
    assert_eq!(
        kv.read::<Pins>("team/t").await.unwrap().unwrap().data,
        pins(3)
    );
    assert_ne!(app.token_info().await.unwrap().accessor, old);

    // The root token does not expire: nothing to renew.
    let root_file = bao.file("root-token", &bao.root_token);
    let dev = OpenBao::connect(bao.config(Auth::TokenFile(root_file)))
        .await
        .unwrap();
    assert_eq!(dev.token_ttl(), None);
    assert!(dev
        .token_info()
        .await
        .unwrap()
        .policies
        .contains(&"root".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_file_works_and_without_it_is_refused() {
    let bao = DevBao::start_tls().await;
    assert!(bao.addr.starts_with("https://"));

    // `bao.root()` trusts exactly the dev server's CA.
    let kv = bao.root().kv2("secret");
    kv.write("tls/x", &pins(9), None).await.unwrap();
    assert_eq!(
        kv.read::<Pins>("tls/x").await.unwrap().unwrap().data,
        pins(9)
    );

    // Machine auth over TLS, with the system roots added to the CA file.
    let files = bao
        .approle(
            "team",
            TEAM_POLICY,
            Duration::from_secs(60),
            Duration::from_secs(120),
        )
        .await;
    let mut config = bao.config(approle_auth(&files));
    config.tls.system_roots = true;
    let app = OpenBao::connect(config).await.unwrap();
    app.kv2("secret")
        .write("team/x", &pins(1), None)
        .await
        .unwrap();

    // Without the CA the server's certificate is not trusted.
    let mut config = bao.config(Auth::None);
    config.tls.ca_file = None;
    let err = OpenBao::new(config).unwrap().health().await.unwrap_err();
    assert!(matches!(err, Error::Down { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(err.is_untrusted_certificate(), "{err:?}");
    assert!(
        err.to_string()
            .contains("TLS certificate verification failed"),
        "{err}"
    );

    // A CA file that is not a certificate is a configuration error.
    let mut config = bao.config(Auth::None);
    config.tls.ca_file = Some(bao.file("not-a-ca.pem", "hello"));
    let err = OpenBao::new(config).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[path = "openbao/pki.rs"]
mod pki;
