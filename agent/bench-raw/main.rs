//! `kleidia-bench-card-raw`: the raw `yubikey`-crate call `make bench`
//! compares the agent's operations with (scripts/bench.sh,
//! tests/examples/bench_ops.rs). Not deployed.
//!
//!   kleidia-bench-card-raw set-pin SERIAL N PIN_A PIN_B
//!       N PIN changes on the YubiKey with SERIAL, A→B, B→A, …, each its own
//!       session as the agent makes it (open by serial, change the PIN,
//!       drop), in the PC/SC of the environment (`PCSCLITE_CSOCK_NAME`).
//!       Prints one JSON line: {"n", "failed", "mean_ms", "p50_ms"}.

use std::time::Instant;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, serial, n, pin_a, pin_b] = args.as_slice() else {
        bail!("usage: kleidia-bench-card-raw set-pin SERIAL N PIN_A PIN_B");
    };
    if mode != "set-pin" {
        bail!("unknown mode {mode:?}");
    }
    let serial = yubikey::Serial(serial.parse().context("SERIAL")?);
    let n: usize = n.parse().context("N")?;
    let mut times = Vec::with_capacity(n);
    let mut failed = 0usize;
    for i in 0..n {
        let (from, to) = if i.is_multiple_of(2) {
            (pin_a, pin_b)
        } else {
            (pin_b, pin_a)
        };
        let t0 = Instant::now();
        let r = yubikey::YubiKey::open_by_serial(serial)
            .and_then(|mut yk| yk.change_pin(from.as_bytes(), to.as_bytes()));
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(()) => times.push(ms),
            Err(e) => {
                failed += 1;
                eprintln!("set-pin {i}: {e}");
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let mean = if times.is_empty() {
        0.0
    } else {
        times.iter().sum::<f64>() / times.len() as f64
    };
    let p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{{\"n\": {}, \"failed\": {failed}, \"mean_ms\": {mean}, \"p50_ms\": {p50}}}",
        times.len()
    );
    Ok(())
}
