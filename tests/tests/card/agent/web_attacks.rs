//! What a hostile web page could try against the agent over HTTP: other
//! origins and hosts, simple requests, oversized or unexpected bodies.

use kleidia_protocol::agent::*;
use kleidia_tests::agent::{expect_error, ok_json, AgentOptions, AgentWithKey, TestAgent};
use kleidia_tests::card::{lock, DEFAULT_PIN};
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, HOST, ORIGIN,
};

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
    let env = AgentWithKey::new(32000001).await;
    let body = env
        .agent
        .signed(&env.set_pin_params(DEFAULT_PIN, b"11335577"));
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
    env.assert_untouched().await;
    // GET on a state-changing endpoint is not a way in either.
    let r = env.agent.get("/piv/set-pin").await.unwrap();
    expect_error(r, 405, codes::METHOD_NOT_ALLOWED).await;
    ok_json::<OperationDone>(env.agent.post("/piv/set-pin", &body).await.unwrap()).await;
}

#[tokio::test]
async fn oversized_bodies_and_unknown_fields_are_refused_before_any_ticket_check() {
    let _l = lock().await;
    let env = AgentWithKey::new(32000002).await;
    let mut big = serde_json::to_value(
        env.agent
            .signed(&env.set_pin_params(DEFAULT_PIN, b"11335577")),
    )
    .unwrap();
    big["params"]["current_pin"] = serde_json::Value::String("A".repeat(70 * 1024));
    expect_error(
        env.agent.post("/piv/set-pin", &big).await.unwrap(),
        413,
        codes::PAYLOAD_TOO_LARGE,
    )
    .await;

    let mut extra = serde_json::to_value(
        env.agent
            .signed(&env.set_pin_params(DEFAULT_PIN, b"11335577")),
    )
    .unwrap();
    extra["params"]["slot"] = "9a".into();
    let b = expect_error(
        env.agent.post("/piv/set-pin", &extra).await.unwrap(),
        400,
        codes::INVALID_REQUEST,
    )
    .await;
    assert!(b.message.contains("unknown field"), "{}", b.message);
    let mut top = serde_json::to_value(
        env.agent
            .signed(&env.set_pin_params(DEFAULT_PIN, b"11335577")),
    )
    .unwrap();
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
    env.assert_untouched().await;
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
