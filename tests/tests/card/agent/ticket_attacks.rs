//! What a forged, altered, replayed or stolen ticket gets from the agent:
//! nothing decrypted and no PIN try used.

use kleidia_protocol::agent::*;
use kleidia_protocol::ticket::{EncryptedSecret, Operation, TicketSigningKey};
use kleidia_tests::agent::{
    error_of, expect_error, ok_json, AgentOptions, AgentWithKey, TestAgent,
};
use kleidia_tests::card::{lock, pin_retries, DEFAULT_PIN};
use rand::RngCore;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A ticket request whose PIN would be right: only the ticket is wrong.
async fn refused(env: &AgentWithKey, body: &SignedRequest<SetPinParams>, status: u16, code: &str) {
    let r = env.agent.post("/piv/set-pin", body).await.unwrap();
    assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_some());
    expect_error(r, status, code).await;
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
async fn forged_expired_and_overlong_tickets_are_refused_before_any_decryption() {
    let _l = lock().await;
    let env = AgentWithKey::new(32000003).await;
    let p = env.set_pin_params(DEFAULT_PIN, b"11335577");

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

    env.assert_untouched().await;
}

#[tokio::test]
async fn tickets_for_another_serial_agent_key_operation_or_parameters_are_refused() {
    let _l = lock().await;
    let env = AgentWithKey::new(32000004).await;
    let p = env.set_pin_params(DEFAULT_PIN, b"11335577");

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

    env.assert_untouched().await;
    let info: SystemInfo = env.agent.system_info().await;
    assert_eq!((info.tickets_accepted, info.tickets_refused), (0, 5));
}

#[tokio::test]
async fn a_used_ticket_is_refused_as_a_replay_also_after_the_agent_restarts() {
    let _l = lock().await;
    let mut env = AgentWithKey::new(32000005).await;
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
    let env = AgentWithKey::new(32000006).await;
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
            settle: false,
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
    let info: SystemInfo = env.agent.system_info().await;
    assert_eq!((info.decryptions, info.tickets_refused), (0, 1000));
}

#[tokio::test]
async fn a_flood_of_wrong_pins_without_tickets_leaves_the_retry_counter_where_it_was() {
    let _l = lock().await;
    let env = AgentWithKey::new(32000007).await;
    let before = pin_retries(32000007);
    assert_eq!(before, 3);
    let forger = TicketSigningKey::from_bytes(&[21; 32]);
    for i in 0..60u32 {
        let wrong = format!("{:06}", 100000 + i);
        let p = env.set_pin_params(wrong.as_bytes(), b"11335577");
        let u = UnblockPinParams {
            serial: 32000007,
            puk: env.agent.encrypt(wrong.as_bytes()),
            new_pin: env.agent.encrypt(b"11335577"),
            settle: false,
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
    let info: SystemInfo = agent.system_info().await;
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
    let info: SystemInfo = agent.system_info().await;
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
