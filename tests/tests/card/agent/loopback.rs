//! Issue 14 §8, the local attacker: a process that got the agent's port on
//! one loopback address first, and one that polls `/piv/info` to keep a
//! YubiKey busy.
//!
//! - An impostor listening on `[::1]:PORT` (or `127.0.0.1:PORT`) would get
//!   the page's requests to `localhost:PORT`: the agent refuses to start,
//!   exits non-zero, names the address, and the impostor is the only thing
//!   listening there (the agent left nothing behind on the other address).
//! - A tight loop of `GET /piv/info` for the key while a real PIN change
//!   runs through the agent: the change succeeds (no `409 device_busy`), and
//!   every read is answered too.

use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kleidia_protocol::agent::*;
use kleidia_tests::agent::{ok_json, AgentOptions, AgentWithKey, TestAgent};
use kleidia_tests::card::{lock, pin_retries, pin_verifies, DEFAULT_PIN};
use kleidia_tests::free_port;

/// Start the agent on `port` while `impostor` holds one of its addresses:
/// it must exit on its own, non-zero; its exit status and stderr.
fn start_against(impostor: &TcpListener, port: u16) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = TestAgent::command(&AgentOptions::default(), port, &dir.path().join("state"));
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent generates its RSA key before it binds: give it time.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "the agent started although {:?} was taken",
                impostor.local_addr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// Only the impostor answers on `addr` (the agent left nothing listening).
fn only_impostor_listens(impostor: &TcpListener, addr: SocketAddr) {
    impostor.set_nonblocking(true).unwrap();
    while impostor.accept().is_ok() {}
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    assert!(c.is_ok(), "the impostor still holds {addr}");
    let (_, peer) = impostor.accept().expect("the impostor took the connection");
    assert_eq!(peer.ip(), c.unwrap().local_addr().unwrap().ip());
}

fn nothing_listens(addr: SocketAddr) {
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err(),
        "nothing listens on {addr} after the agent refused to start"
    );
}

#[test]
fn an_impostor_on_the_ipv6_loopback_port_makes_the_agent_refuse_to_start_naming_the_address() {
    let port = free_port();
    let impostor = TcpListener::bind((Ipv6Addr::LOCALHOST, port))
        .expect("this test needs an IPv6 loopback (::1)");
    let (status, err) = start_against(&impostor, port);
    assert!(!status.success(), "exit status {status}: {err}");
    assert!(
        err.contains(&format!("[::1]:{port} is already in use")),
        "the error names the address: {err}"
    );
    assert!(err.contains("refusing to start"), "{err}");
    only_impostor_listens(&impostor, SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    nothing_listens(SocketAddr::from(([127, 0, 0, 1], port)));
}

#[test]
fn an_impostor_on_the_ipv4_loopback_port_makes_the_agent_refuse_to_start_naming_the_address() {
    let port = free_port();
    let impostor = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (status, err) = start_against(&impostor, port);
    assert!(!status.success(), "exit status {status}: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "the error names the address: {err}"
    );
    only_impostor_listens(&impostor, SocketAddr::from(([127, 0, 0, 1], port)));
    nothing_listens(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_process_polling_piv_info_cannot_keep_a_pin_change_from_running() {
    let _l = lock().await;
    let env = Arc::new(AgentWithKey::new(31000031).await);
    let serial = env.serial();

    // Another local process (it can send any Origin) reads the key's info
    // as fast as the agent answers, from several connections at once.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for _ in 0..4 {
        let (env, stop, reads) = (env.clone(), stop.clone(), reads.clone());
        pollers.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = env
                    .agent
                    .get(&format!("/piv/info?serial={serial}"))
                    .await
                    .unwrap();
                if !r.status().is_success() {
                    refused.push((r.status(), r.text().await.unwrap_or_default()));
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
            refused
        }));
    }
    while reads.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let new_pin = b"702419";
    let r = env
        .agent
        .run("/piv/set-pin", &env.set_pin_params(DEFAULT_PIN, new_pin))
        .await
        .unwrap();
    let status = r.status();
    let done: Result<OperationDone, _> = serde_json::from_str(&r.text().await.unwrap());
    stop.store(true, Ordering::SeqCst);
    let mut refused = Vec::new();
    for p in pollers {
        refused.extend(p.await.unwrap());
    }

    assert!(status.is_success(), "the PIN change ran: {status} {done:?}");
    assert!(done.unwrap().ok);
    assert!(refused.is_empty(), "every read was answered: {refused:?}");
    // What the user would check: the card has the new PIN, every try left.
    let key = env.clone();
    tokio::task::spawn_blocking(move || {
        assert!(pin_verifies(key.serial(), "702419"));
        assert_eq!(pin_retries(key.serial()), 3);
    })
    .await
    .unwrap();
    let info: PivInfo = ok_json(
        env.agent
            .get(&format!("/piv/info?serial={serial}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(info.defaults.pin, Some(false), "{info:?}");
}
