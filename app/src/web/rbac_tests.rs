//! Route × role: every route the server has is listed in `EXPECTED` with
//! the roles allowed to use it, and every (route, role) pair is requested
//! against the real router and a real database. A route missing from the
//! table fails `every_route_has_an_expected_rule`, so a new route cannot
//! ship without a decision.
//!
//! Adding a route: declare it with `RouteDef::get/post/…(path, Access::…,
//! handler)` in its feature module's `routes()`, then add a row here.
//! `{id}` in a path is replaced by the caller's own user id for routes open
//! to everybody signed in (object-level rules are tested per feature) and by
//! another user's id otherwise; other placeholders get a harmless value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use secrecy::SecretString;
use sqlx::PgPool;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::config::Config;
use crate::db::sessions::{self, NewSession};
use crate::db::users::{self, NewUser};
use crate::domain::{DisplayName, Role, SessionKind, Username};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::vault::Bao;

const PUBLIC: &str = "public";
const ALL: &str = "admin helpdesk auditor user";
const STAFF: &str = "admin helpdesk auditor";
const ADMIN: &str = "admin";
const AUDIT: &str = "admin auditor";
const CHANGERS: &str = "admin helpdesk user";
const OPERATORS: &str = "admin helpdesk";

/// (method, path, who may use it: `public` or role names).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", PUBLIC),
    ("GET", "/readyz", PUBLIC),
    ("GET", "/metrics", PUBLIC),
    ("GET", "/static/{file}", PUBLIC),
    ("GET", "/favicon.ico", PUBLIC),
    ("GET", "/", ALL),
    ("GET", "/login", PUBLIC),
    ("POST", "/login", PUBLIC),
    ("POST", "/logout", ALL),
    ("GET", "/account/password", ALL),
    ("POST", "/account/password", ALL),
    ("POST", "/api/auth/login", PUBLIC),
    ("POST", "/api/auth/logout", ALL),
    ("GET", "/api/auth/me", ALL),
    ("POST", "/api/auth/password", ALL),
    ("GET", "/users", STAFF),
    ("GET", "/users/new", ADMIN),
    ("POST", "/users", ADMIN),
    ("GET", "/users/{id}", ALL),
    ("POST", "/users/{id}", ADMIN),
    ("POST", "/users/{id}/disable", ADMIN),
    ("POST", "/users/{id}/enable", ADMIN),
    ("POST", "/users/{id}/reset-password", ADMIN),
    ("GET", "/lockouts", ADMIN),
    ("POST", "/lockouts/clear", ADMIN),
    ("GET", "/api/users", STAFF),
    ("POST", "/api/users", ADMIN),
    ("GET", "/api/users/{id}", ALL),
    ("PATCH", "/api/users/{id}", ADMIN),
    ("POST", "/api/users/{id}/disable", ADMIN),
    ("POST", "/api/users/{id}/enable", ADMIN),
    ("POST", "/api/users/{id}/reset-password", ADMIN),
    ("GET", "/api/lockouts", ADMIN),
    ("DELETE", "/api/lockouts/{scope}/{key}", ADMIN),
    ("GET", "/audit", AUDIT),
    ("GET", "/api/export/devices.csv", STAFF),
    ("GET", "/api/export/devices.jsonl", STAFF),
    ("GET", "/api/export/audit.csv", AUDIT),
    ("GET", "/api/export/audit.jsonl", AUDIT),
    ("GET", "/api/audit", AUDIT),
    // Devices, operations, certificates (object-level rules: tests/e2e/fleet.rs).
    ("GET", "/api/devices", STAFF),
    ("POST", "/api/devices", CHANGERS),
    ("POST", "/api/devices/claim", CHANGERS),
    ("GET", "/api/my/devices", ALL),
    ("GET", "/api/devices/{serial}", ALL),
    ("POST", "/api/devices/{serial}/state", CHANGERS),
    ("PUT", "/api/devices/{serial}/owner", OPERATORS),
    ("POST", "/api/yubikey/{serial}/operations", CHANGERS),
    ("POST", "/api/yubikey/{serial}/secrets", CHANGERS),
    (
        "POST",
        "/api/yubikey/{serial}/operations/{op}/result",
        CHANGERS,
    ),
    (
        "POST",
        "/api/yubikey/{serial}/operations/{op}/presence",
        CHANGERS,
    ),
    ("POST", "/api/yubikey/{serial}/sign-csr", CHANGERS),
    ("POST", "/api/certificates/{cert}/revoke", OPERATORS),
    // Object-level rules: tests/e2e/certificate_approval.rs.
    ("GET", "/approvals", ALL),
    ("POST", "/approvals/{approval}/approve", ALL),
    ("POST", "/approvals/{approval}/reject", ALL),
    ("GET", "/api/certificate-approvals", ALL),
    ("POST", "/api/certificate-approvals/{approval}/approve", ALL),
    ("POST", "/api/certificate-approvals/{approval}/reject", ALL),
    ("POST", "/api/session/{session}/register-agent", ALL),
    ("GET", "/api/agent/ticket-key", PUBLIC),
    ("GET", "/api/openapi.json", PUBLIC),
    ("GET", "/api/session/agent", ALL),
    ("GET", "/api/policy/enrollment", ALL),
    ("POST", "/api/policy/pin-check", ALL),
    ("GET", "/enroll", CHANGERS),
    ("GET", "/agent", ALL),
    ("GET", "/api/settings/policy", STAFF),
    ("PUT", "/api/settings/policy", ADMIN),
    ("GET", "/devices", STAFF),
    ("POST", "/devices", CHANGERS),
    ("GET", "/my/devices", ALL),
    ("GET", "/devices/{serial}", ALL),
    ("POST", "/devices/{serial}/state", CHANGERS),
    ("POST", "/devices/{serial}/owner", OPERATORS),
    ("POST", "/certificates/{cert}/revoke", OPERATORS),
    ("GET", "/settings", ADMIN),
    ("POST", "/settings", ADMIN),
    ("GET", "/pki/ca", PUBLIC),
    ("GET", "/pki/ca.pem", PUBLIC),
    ("GET", "/pki/ca_chain", PUBLIC),
    ("GET", "/pki/crl", PUBLIC),
    ("GET", "/pki/crl.pem", PUBLIC),
    ("GET", "/pki/root/ca", PUBLIC),
    ("GET", "/pki/root/crl", PUBLIC),
    // OCSP for relying parties: the same public access as the CRL.
    ("GET", "/pki/ocsp/{*request}", PUBLIC),
    ("POST", "/pki/ocsp", PUBLIC),
    // License: the page and uploads for admins, the status for staff.
    ("GET", "/license", ADMIN),
    ("POST", "/license", ADMIN),
    ("GET", "/api/license", STAFF),
    ("POST", "/api/license", ADMIN),
    // OIDC sign-in: anyone may start one; the callback checks everything.
    ("GET", "/auth/oidc/start", PUBLIC),
    ("GET", "/auth/oidc/callback", PUBLIC),
    // s4-fleet: bulk work and expiry notices.
    ("POST", "/api/notices/run", ADMIN),
    ("POST", "/api/devices/bulk/preview", ADMIN),
    ("POST", "/api/devices/bulk", ADMIN),
    ("GET", "/devices/bulk", ADMIN),
    ("POST", "/devices/bulk", ADMIN),
    ("POST", "/api/import/users", ADMIN),
    ("POST", "/api/import/assignments", ADMIN),
    ("GET", "/import", ADMIN),
    ("POST", "/import/users", ADMIN),
    ("POST", "/import/assignments", ADMIN),
];

const JWT_SECRET: &[u8] = b"rbac-test-secret-of-32-bytes!!!!";

/// An `AppState` on `db` for handler tests (OpenBao is not contacted).
pub async fn test_state(db: PgPool) -> AppState {
    let config = Config::default();
    let jwt = JwtKeys::new(
        JWT_SECRET,
        config.jwt_issuer(),
        config.auth.jwt_audience.clone(),
        Duration::from_secs(600),
    );
    let mut bao_config = kleidia_openbao::Config::new(
        url::Url::parse("http://127.0.0.1:9").unwrap(),
        kleidia_openbao::Auth::None,
    );
    bao_config.timeout = Duration::from_millis(200);
    let bao = Bao::new(bao_config).unwrap();
    AppState {
        sessions: Arc::new(crate::auth::session_cache::SessionCache::new(
            Duration::from_secs(config.session.cache_secs),
        )),
        config: Arc::new(config),
        db,
        bao,
        metrics: Arc::new(Metrics::new()),
        passwords: Passwords::new(2).await.unwrap(),
        jwt: Arc::new(jwt),
        fleet: Arc::new(crate::fleet::context::FleetContext::new(
            kleidia_protocol::ticket::TicketSigningKey::from_bytes(&[7; 32]),
            Default::default(),
        )),
        // Nothing listens there: the client falls back to TRIAL (degraded).
        license: Arc::new(
            kleidia_license_client::LicenseClient::new(
                "http://127.0.0.1:9",
                None,
                Duration::from_millis(200),
                Duration::from_secs(60),
            )
            .unwrap(),
        ),
        oidc: None,
    }
}

pub async fn make_user(state: &AppState, name: &str, role: Role) -> Uuid {
    let hash = state
        .passwords
        .hash(&SecretString::from("a password nobody types"))
        .await
        .unwrap();
    users::insert(
        &state.db,
        &NewUser {
            username: Username::parse(name).unwrap(),
            display_name: DisplayName::parse(&format!("{name} display")).unwrap(),
            email: None,
            role,
            password_hash: hash,
            must_change_password: false,
        },
    )
    .await
    .unwrap()
    .id
}

/// A fresh API session for `user` and its Bearer token.
pub async fn token_for(state: &AppState, user: Uuid) -> String {
    let sid = sessions::create(
        &state.db,
        NewSession {
            user_id: user,
            kind: SessionKind::Api,
            idle: Duration::from_secs(600),
            absolute: Duration::from_secs(600),
            ip: None,
            user_agent: None,
        },
    )
    .await
    .unwrap();
    state
        .jwt
        .issue(user, sid, OffsetDateTime::now_utc())
        .unwrap()
        .0
}

fn allowed(who: &str, role: Option<Role>) -> bool {
    who == PUBLIC || role.is_some_and(|r| who.split(' ').any(|w| w == r.as_str()))
}

#[test]
fn every_route_has_an_expected_rule() {
    let registered: BTreeSet<(String, String)> = super::route_table()
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = registered.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in rbac_tests::EXPECTED: {missing:?}"
    );
    let stale: Vec<_> = expected.difference(&registered).collect();
    assert!(
        stale.is_empty(),
        "rows in EXPECTED for routes that do not exist: {stale:?}"
    );
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn every_route_allows_exactly_the_roles_in_the_table(db: PgPool) {
    let state = test_state(db).await;
    let mut callers: Vec<(Option<Role>, Option<Uuid>)> = vec![(None, None)];
    for r in Role::ALL {
        callers.push((
            Some(r),
            Some(make_user(&state, &format!("rbac-{}", r.as_str()), r).await),
        ));
    }
    let other = make_user(&state, "rbac-other", Role::User).await;
    let router = super::router(state.clone());
    let mut failures = Vec::new();
    for (method, path, who) in EXPECTED {
        for (role, uid) in &callers {
            let id = if *who == ALL {
                uid.unwrap_or(other)
            } else {
                other
            };
            let uri = path
                .replace("{id}", &id.to_string())
                .replace("{file}", "app.css")
                .replace("{scope}", "account")
                .replace("{key}", "nobody")
                .replace("{serial}", "12345678")
                .replace("{op}", "00000000-0000-4000-8000-000000000001")
                .replace("{cert}", "00000000-0000-4000-8000-000000000002")
                .replace("{approval}", "00000000-0000-4000-8000-000000000004")
                .replace("{session}", "00000000-0000-4000-8000-000000000003")
                // An empty DER SEQUENCE, base64.
                .replace("{*request}", "MAA");
            let mut req = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                // Keeps 401 a 401 for pages (a browser would be redirected).
                .header("hx-request", "true");
            if let Some(u) = uid {
                req = req.header(
                    "authorization",
                    format!("Bearer {}", token_for(&state, *u).await),
                );
            }
            let resp = router
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let denied = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            let want_allowed = allowed(who, *role);
            let expected_deny = if role.is_none() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            if want_allowed && denied {
                failures.push(format!(
                    "{method} {uri} as {role:?}: {status}, expected access"
                ));
            } else if !want_allowed && status != expected_deny {
                failures.push(format!(
                    "{method} {uri} as {role:?}: {status}, expected {expected_deny}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
