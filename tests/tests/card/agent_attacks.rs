//! What a hostile web page (or a stolen ticket) could try against the agent.

use kleidia_protocol::agent::*;
use kleidia_protocol::ticket::{EncryptedSecret, Operation, TicketSigningKey};
use kleidia_tests::agent::{AgentOptions, TestAgent};
use kleidia_tests::card::DEFAULT_PIN;
use rand::RngCore;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, HOST, ORIGIN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{error_of, expect_error, lock, ok_json, pin_retries, Env};

fn set_pin(env: &Env, current: &[u8], new: &[u8]) -> SetPinParams {
    SetPinParams {
        serial: env.serial(),
        current_pin: env.agent.encrypt(current),
        new_pin: env.agent.encrypt(new),
    }
}

/// A ticket request whose PIN would be right: only the ticket is wrong.
async fn refused(env: &Env, body: &SignedRequest<SetPinParams>, status: u16, code: &str) {
    let r = env.agent.post("/piv/set-pin", body).await.unwrap();
    assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_some());
    expect_error(r, status, code).await;
}

async fn assert_untouched(env: &Env) {
    assert_eq!(env.agent.decryptions().await.unwrap(), 0);
    assert_eq!(pin_retries(env.serial()), 3);
    let cd: CheckDefaults = ok_json(
        env.agent
            .get(&format!("/piv/check-defaults?serial={}", env.serial()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cd.defaults.pin, Some(true), "the PIN was not changed");
}

#[tokio::test]
async fn the_agent_listens_on_loopback_addresses_only() {
    let _l = lock().await;
    let agent = TestAgent::spawn().await.unwrap();
    let port = format!("{:04X}", agent.port);
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A = LISTEN.
            if cols.len() > 3 && cols[3] == "0A" && cols[1].ends_with(&format!(":{port}")) {
                listening.push(cols[1].split(':').next().unwrap().to_string());
            }
        }
    }
    assert!(
        !listening.is_empty(),
        "no listening socket found for port {}",
        agent.port
    );
    for addr in &listening {
        assert!(
            addr == "0100007F" || addr == "00000000000000000000000001000000",
            "listening on a non-loopback address {addr} (all: {listening:?})"
        );
    }
    assert!(listening.contains(&"0100007F".to_string()));
    // And [::1] answers too.
    let r = agent
        .http
        .get(format!("http://[::1]:{}/health", agent.port))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn a_foreign_or_look_alike_origin_gets_403_and_no_allow_header() {
    let _l = lock().await;
    let agent = TestAgent::spawn_with(AgentOptions {
        kleidia_url: "https://kleidia.example.com/".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let evil: [Option<&str>; 8] = [
        None,
        Some("null"),
        Some("https://evil.example"),
        Some("http://kleidia.example.com"),
        Some("https://kleidia.example.com.evil.example"),
        Some("https://evilkleidia.example.com"),
        Some("https://kleidia.example.com:8443"),
        Some("https://kleidia.example.com/"),
    ];
    for origin in evil {
        for path in [
            "/discover",
            "/pubkey",
            "/.well-known/kleidia-agent",
            "/system/info",
        ] {
            let mut req = agent.http.get(agent.url(path));
            if let Some(o) = origin {
                req = req.header(ORIGIN, o);
            }
            let r = req.send().await.unwrap();
            assert!(
                r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{origin:?} {path}"
            );
            expect_error(r, 403, codes::ORIGIN_NOT_ALLOWED).await;
        }
        let mut pre = agent
            .http
            .request(reqwest::Method::OPTIONS, agent.url("/piv/set-pin"))
            .header(ACCESS_CONTROL_REQUEST_METHOD, "POST");
        if let Some(o) = origin {
            pre = pre.header(ORIGIN, o);
        }
        let r = pre.send().await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?}");
        assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(r
            .headers()
            .get("access-control-allow-private-network")
            .is_none());
    }
    // The configured origin, exactly, is let in.
    let r = agent
        .http
        .get(agent.url("/pubkey"))
        .header(ORIGIN, "https://kleidia.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://kleidia.example.com"
    );
}

#[tokio::test]
async fn a_preflight_from_the_kleidia_origin_allows_private_network_access() {
    let _l = lock().await;
    let agent = TestAgent::spawn().await.unwrap();
    let r = agent
        .http
        .request(reqwest::Method::OPTIONS, agent.url("/piv/set-pin"))
        .header(ORIGIN, &agent.origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header("access-control-request-headers", "content-type")
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], agent.origin.as_str());
    assert_eq!(h["access-control-allow-private-network"], "true");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    // A preflight for a method the agent never accepts is refused.
    let r = agent
        .http
        .request(reqwest::Method::OPTIONS, agent.url("/piv/set-pin"))
        .header(ORIGIN, &agent.origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_dns_rebinding_host_header_is_refused() {
    let _l = lock().await;
    let agent = TestAgent::spawn().await.unwrap();
    let port = agent.port;
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
        format!("127.0.0.1.evil.example:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let r = agent
            .http
            .get(agent.url("/pubkey"))
            .header(HOST, &host)
            .header(ORIGIN, &agent.origin)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{host}"
        );
        expect_error(r, 403, codes::BAD_HOST).await;
    }
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let r = agent
            .http
            .get(agent.url("/pubkey"))
            .header(HOST, &host)
            .header(ORIGIN, &agent.origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn a_text_plain_post_changes_nothing_and_does_not_use_up_the_ticket() {
    let _l = lock().await;
    let env = Env::new(32000001).await;
    let body = env.agent.signed(&set_pin(&env, DEFAULT_PIN, b"11335577"));
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = env
            .agent
            .http
            .post(env.agent.url("/piv/set-pin"))
            .header(ORIGIN, &env.agent.origin)
            .header(CONTENT_TYPE, ct)
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        expect_error(r, 415, codes::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let r = env
        .agent
        .http
        .post(env.agent.url("/piv/set-pin"))
        .header(ORIGIN, &env.agent.origin)
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    expect_error(r, 415, codes::UNSUPPORTED_MEDIA_TYPE).await;
    assert_untouched(&env).await;
    // GET on a state-changing endpoint is not a way in either.
    let r = env.agent.get("/piv/set-pin").await.unwrap();
    expect_error(r, 405, codes::METHOD_NOT_ALLOWED).await;
    ok_json::<OperationDone>(env.agent.post("/piv/set-pin", &body).await.unwrap()).await;
}

#[tokio::test]
async fn oversized_bodies_and_unknown_fields_are_refused_before_any_ticket_check() {
    let _l = lock().await;
    let env = Env::new(32000002).await;
    let mut big =
        serde_json::to_value(env.agent.signed(&set_pin(&env, DEFAULT_PIN, b"11335577"))).unwrap();
    big["params"]["current_pin"] = serde_json::Value::String("A".repeat(70 * 1024));
    expect_error(
        env.agent.post("/piv/set-pin", &big).await.unwrap(),
        413,
        codes::PAYLOAD_TOO_LARGE,
    )
    .await;

    let mut extra =
        serde_json::to_value(env.agent.signed(&set_pin(&env, DEFAULT_PIN, b"11335577"))).unwrap();
    extra["params"]["slot"] = "9a".into();
    let b = expect_error(
        env.agent.post("/piv/set-pin", &extra).await.unwrap(),
        400,
        codes::INVALID_REQUEST,
    )
    .await;
    assert!(b.message.contains("unknown field"), "{}", b.message);
    let mut top =
        serde_json::to_value(env.agent.signed(&set_pin(&env, DEFAULT_PIN, b"11335577"))).unwrap();
    top["debug"] = true.into();
    expect_error(
        env.agent.post("/piv/set-pin", &top).await.unwrap(),
        400,
        codes::INVALID_REQUEST,
    )
    .await;
    let r = env
        .agent
        .post("/piv/set-pin", &serde_json::json!({"params": {}}))
        .await
        .unwrap();
    expect_error(r, 400, codes::INVALID_REQUEST).await;
    assert_untouched(&env).await;
}

#[tokio::test]
async fn forged_expired_and_overlong_tickets_are_refused_before_any_decryption() {
    let _l = lock().await;
    let env = Env::new(32000003).await;
    let p = set_pin(&env, DEFAULT_PIN, b"11335577");

    let forger = TicketSigningKey::from_bytes(&[9; 32]);
    let forged = SignedRequest {
        ticket: forger.sign(&env.agent.claims_for(&p)),
        params: p.clone(),
    };
    refused(&env, &forged, 401, "ticket_forged").await;

    let garbage = SignedRequest {
        ticket: "kt1.not.a-ticket".into(),
        params: p.clone(),
    };
    refused(&env, &garbage, 401, "ticket_malformed").await;

    let mut c = env.agent.claims_for(&p);
    c.issued_at -= 200;
    c.expires_at = c.issued_at + 60;
    let expired = SignedRequest {
        ticket: env.agent.signer.sign(&c),
        params: p.clone(),
    };
    refused(&env, &expired, 401, "ticket_expired").await;

    let mut c = env.agent.claims_for(&p);
    c.expires_at = c.issued_at + 3600;
    let long = SignedRequest {
        ticket: env.agent.signer.sign(&c),
        params: p.clone(),
    };
    refused(&env, &long, 401, "ticket_lifetime_too_long").await;

    let mut c = env.agent.claims_for(&p);
    c.issued_at += 600;
    c.expires_at = c.issued_at + 60;
    let future = SignedRequest {
        ticket: env.agent.signer.sign(&c),
        params: p.clone(),
    };
    refused(&env, &future, 401, "ticket_not_yet_valid").await;

    assert_untouched(&env).await;
}

#[tokio::test]
async fn tickets_for_another_serial_agent_key_operation_or_parameters_are_refused() {
    let _l = lock().await;
    let env = Env::new(32000004).await;
    let p = set_pin(&env, DEFAULT_PIN, b"11335577");

    let mut c = env.agent.claims_for(&p);
    c.serial = 32000099;
    refused(
        &env,
        &SignedRequest {
            ticket: env.agent.signer.sign(&c),
            params: p.clone(),
        },
        403,
        "ticket_wrong_serial",
    )
    .await;

    let mut c = env.agent.claims_for(&p);
    c.agent_key_fingerprint = "00".repeat(32);
    let b = SignedRequest {
        ticket: env.agent.signer.sign(&c),
        params: p.clone(),
    };
    refused(&env, &b, 403, "ticket_wrong_agent_key").await;

    let mut c = env.agent.claims_for(&p);
    c.operation = Operation::Reset;
    let b = SignedRequest {
        ticket: env.agent.signer.sign(&c),
        params: p.clone(),
    };
    refused(&env, &b, 403, "ticket_wrong_operation").await;

    // A valid ticket for one new PIN, posted with another new PIN.
    let mut swapped = env.agent.signed(&p);
    swapped.params.new_pin = env.agent.encrypt(b"00000000");
    refused(&env, &swapped, 403, "ticket_params_mismatch").await;

    // A set-pin ticket posted to /piv/reset.
    let t = env.agent.ticket_for(&p);
    let r = env
        .agent
        .post(
            "/piv/reset",
            &SignedRequest {
                ticket: t,
                params: ResetParams { serial: 32000004 },
            },
        )
        .await;
    expect_error(r.unwrap(), 403, "ticket_wrong_operation").await;

    assert_untouched(&env).await;
    let info: SystemInfo = ok_json(env.agent.get("/system/info").await.unwrap()).await;
    assert_eq!((info.tickets_accepted, info.tickets_refused), (0, 5));
}

#[tokio::test]
async fn a_used_ticket_is_refused_as_a_replay_also_after_the_agent_restarts() {
    let _l = lock().await;
    let mut env = Env::new(32000005).await;
    let attest = AttestParams {
        serial: 32000005,
        slot: PivSlot::Authentication,
    };
    // A ticket for an operation without secrets, valid for a minute.
    let once = env.agent.signed(&ResetParams { serial: 32000005 });
    ok_json::<OperationDone>(env.agent.post("/piv/reset", &once).await.unwrap()).await;
    expect_error(
        env.agent.post("/piv/reset", &once).await.unwrap(),
        409,
        "ticket_replayed",
    )
    .await;

    env.agent.restart().await.unwrap();
    expect_error(
        env.agent.post("/piv/reset", &once).await.unwrap(),
        409,
        "ticket_replayed",
    )
    .await;
    // The restarted agent works with fresh tickets.
    let r = env.agent.run("/piv/attest", &attest).await.unwrap();
    expect_error(r, 422, codes::EMPTY_SLOT).await;
}

#[tokio::test]
async fn a_thousand_random_ciphertexts_without_a_valid_ticket_are_never_decrypted() {
    let _l = lock().await;
    let env = Env::new(32000006).await;
    let forger = TicketSigningKey::from_bytes(&[13; 32]);
    let mut rng = rand::thread_rng();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for i in 0..1000 {
        // 512 base64 characters = 384 random bytes, the size of a 3072-bit ciphertext.
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let secret = EncryptedSecret(
            (0..512)
                .map(|_| B64[(rng.next_u32() % 64) as usize] as char)
                .collect(),
        );
        let p = SetPinParams {
            serial: 32000006,
            current_pin: secret.clone(),
            new_pin: secret,
        };
        let ticket = match i % 4 {
            0 => String::new(),
            1 => forger.sign(&env.agent.claims_for(&p)),
            2 => "kt1.e30.AAAA".to_string(),
            _ => {
                // Properly signed, but for another agent key.
                let mut c = env.agent.claims_for(&p);
                c.agent_key_fingerprint = "11".repeat(32);
                env.agent.signer.sign(&c)
            }
        };
        let r = env
            .agent
            .post("/piv/set-pin", &SignedRequest { ticket, params: p })
            .await
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(env.agent.decryptions().await.unwrap(), 0);
    let info: SystemInfo = ok_json(env.agent.get("/system/info").await.unwrap()).await;
    assert_eq!((info.decryptions, info.tickets_refused), (0, 1000));
}

#[tokio::test]
async fn a_flood_of_wrong_pins_without_tickets_leaves_the_retry_counter_where_it_was() {
    let _l = lock().await;
    let env = Env::new(32000007).await;
    let before = pin_retries(32000007);
    assert_eq!(before, 3);
    let forger = TicketSigningKey::from_bytes(&[21; 32]);
    for i in 0..60u32 {
        let wrong = format!("{:06}", 100000 + i);
        let p = set_pin(&env, wrong.as_bytes(), b"11335577");
        let u = UnblockPinParams {
            serial: 32000007,
            puk: env.agent.encrypt(wrong.as_bytes()),
            new_pin: env.agent.encrypt(b"11335577"),
        };
        let (ticket_a, ticket_b) = (forger.sign(&env.agent.claims_for(&p)), String::from("x"));
        let r = env
            .agent
            .post(
                "/piv/set-pin",
                &SignedRequest {
                    ticket: ticket_a,
                    params: p,
                },
            )
            .await
            .unwrap();
        assert_eq!(error_of(r).await.0, 401);
        let r = env
            .agent
            .post(
                "/piv/unblock-pin",
                &SignedRequest {
                    ticket: ticket_b,
                    params: u,
                },
            )
            .await
            .unwrap();
        assert_eq!(error_of(r).await.0, 401);
        // Same-origin-less "simple" requests a page could fire without a preflight.
        let r = env
            .agent
            .http
            .post(env.agent.url("/piv/set-pin"))
            .header(CONTENT_TYPE, "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(pin_retries(32000007), before);
    let mut yk = yubikey::YubiKey::open_by_serial(yubikey::Serial(32000007)).unwrap();
    let md = yubikey::piv::metadata(
        &mut yk,
        yubikey::piv::SlotId::Management(yubikey::piv::ManagementSlotId::Puk),
    )
    .unwrap();
    assert_eq!(
        md.retries.unwrap().remaining_count,
        3,
        "PUK retries untouched too"
    );
}

/// A stand-in Kleidia server that serves `GET /api/agent/ticket-key`.
async fn ticket_key_server(
    key: std::sync::Arc<std::sync::Mutex<TicketSigningKey>>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if req.starts_with("GET /api/agent/ticket-key ") {
                let vk = key.lock().unwrap().verifying_key();
                ("200 OK", serde_json::to_string(&vk.response()).unwrap())
            } else {
                ("404 Not Found", "{}".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (port, h)
}

#[tokio::test]
async fn the_ticket_key_is_fetched_from_the_kleidia_server_once_and_pinned() {
    let _l = lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _key = kleidia_tests::card::VirtualYubiKey::plug(dir.path(), 32000008, "5.7.1", 0).unwrap();
    let server_key = std::sync::Arc::new(std::sync::Mutex::new(TicketSigningKey::from_bytes(
        &[77; 32],
    )));
    let (port, server) = ticket_key_server(server_key.clone()).await;
    let agent = TestAgent::spawn_with(AgentOptions {
        kleidia_url: format!("http://127.0.0.1:{port}"),
        ticket_key: None,
        allow_virtual_readers: true,
    })
    .await
    .unwrap();
    let info: SystemInfo = ok_json(agent.get("/system/info").await.unwrap()).await;
    assert!(
        !info.ticket_key_loaded,
        "fetched lazily, at the first ticket"
    );

    let attest = AttestParams {
        serial: 32000008,
        slot: PivSlot::Authentication,
    };
    let sign = |k: &TicketSigningKey| SignedRequest {
        ticket: k.sign(&agent.claims_for(&attest)),
        params: attest.clone(),
    };
    let first = sign(&server_key.lock().unwrap());
    expect_error(
        agent.post("/piv/attest", &first).await.unwrap(),
        422,
        codes::EMPTY_SLOT,
    )
    .await;
    let info: SystemInfo = ok_json(agent.get("/system/info").await.unwrap()).await;
    assert!(info.ticket_key_loaded);

    // The server's key changes (or someone takes over the URL): the agent keeps the pinned key.
    *server_key.lock().unwrap() = TicketSigningKey::from_bytes(&[78; 32]);
    let second = sign(&server_key.lock().unwrap());
    expect_error(
        agent.post("/piv/attest", &second).await.unwrap(),
        401,
        "ticket_forged",
    )
    .await;
    let third = sign(&TicketSigningKey::from_bytes(&[77; 32]));
    expect_error(
        agent.post("/piv/attest", &third).await.unwrap(),
        422,
        codes::EMPTY_SLOT,
    )
    .await;
    server.abort();

    // With the server down and no key configured, a ticket cannot be checked: 503.
    let down = TestAgent::spawn_with(AgentOptions {
        kleidia_url: format!("http://127.0.0.1:{}", kleidia_tests::free_port()),
        ticket_key: None,
        allow_virtual_readers: true,
    })
    .await
    .unwrap();
    let b = SignedRequest {
        ticket: "kt1.x.y".into(),
        params: attest.clone(),
    };
    expect_error(
        down.post("/piv/attest", &b).await.unwrap(),
        503,
        codes::TICKET_KEY_UNAVAILABLE,
    )
    .await;
}

#[tokio::test]
async fn the_agent_refuses_to_start_with_a_plain_http_kleidia_url_that_is_not_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AgentOptions {
        kleidia_url: "http://kleidia.example.com".into(),
        ..Default::default()
    };
    let out = TestAgent::command(&opts, kleidia_tests::free_port(), dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https"), "{err}");
}
