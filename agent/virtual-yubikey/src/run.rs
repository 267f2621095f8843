//! The emulator process: load or create the card's state, connect to vpcd
//! (retrying until pcscd is up), serve it, and obey the plug signals:
//! SIGUSR1 unplugs (closes the vpcd connection), SIGUSR2 plugs back in,
//! SIGTERM/SIGINT unplug, save and exit.

use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rand::rngs::OsRng;

use crate::attest::AttestationRoot;
use crate::card::Card;
use crate::state::{CardState, Firmware, SlotKey, ORIGIN_IMPORTED};

/// vpcd's first reader listens on 35963 (0x8C7B); the second on the next port.
pub const VPCD_BASE_PORT: u16 = 35963;

pub struct Options {
    pub serial: Option<u32>,
    pub firmware: Option<Firmware>,
    pub state: PathBuf,
    pub attestation_root: PathBuf,
    pub vpcd_host: String,
    pub vpcd_port: u16,
}

/// The default attestation root file: `attestation-root.pem` beside the state file.
pub fn default_root_path(state: &Path) -> PathBuf {
    state
        .parent()
        .unwrap_or(Path::new("."))
        .join("attestation-root.pem")
}

/// Load the state file, or create a factory-fresh key if there is none.
pub fn load_or_create_state(opts: &Options) -> Result<CardState> {
    if opts.state.exists() {
        let st = CardState::load(&opts.state)?;
        if let Some(serial) = opts.serial.filter(|s| *s != st.serial) {
            bail!(
                "{} holds the key with serial {}, not {serial}: delete it to start over from factory state",
                opts.state.display(),
                st.serial
            );
        }
        if let Some(fw) = opts.firmware.filter(|f| *f != st.firmware) {
            bail!(
                "{} holds a key with firmware {}, not {fw}",
                opts.state.display(),
                st.firmware
            );
        }
        return Ok(st);
    }
    let (Some(serial), Some(firmware)) = (opts.serial, opts.firmware) else {
        bail!(
            "{} does not exist: --serial and --firmware are needed to create a new key",
            opts.state.display()
        );
    };
    let now = SystemTime::now();
    let root = AttestationRoot::load_or_create(&opts.attestation_root, now, &mut OsRng)?;
    let (f9, f9_cert) = root.issue_device_attestation(now, &mut OsRng)?;
    let f9 = SlotKey {
        algorithm: f9.algorithm(),
        pkcs8: f9.to_pkcs8()?,
        pin_policy: crate::piv::pin_policy::NEVER,
        touch_policy: crate::piv::touch_policy::NEVER,
        origin: ORIGIN_IMPORTED,
    };
    let st = CardState::factory(serial, firmware, f9, f9_cert);
    st.save(&opts.state)?;
    Ok(st)
}

#[derive(Default)]
struct Control {
    unplugged: AtomicBool,
    stop: AtomicBool,
    stream: Mutex<Option<TcpStream>>,
}

impl Control {
    fn drop_connection(&self) {
        if let Ok(guard) = self.stream.lock() {
            if let Some(s) = guard.as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("kleidia-virtual-yubikey: {msg}");
}

pub fn run(opts: Options) -> Result<()> {
    let state = load_or_create_state(&opts)?;
    log(format!(
        "YubiKey {} (firmware {}) from {}, reader port {}",
        state.serial,
        state.firmware,
        opts.state.display(),
        opts.vpcd_port
    ));
    let mut card = Card::new(state, OsRng);

    let control = Arc::new(Control::default());
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGUSR2,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("install signal handlers")?;
    {
        let control = control.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                match sig {
                    signal_hook::consts::SIGUSR1 => {
                        control.unplugged.store(true, Ordering::SeqCst);
                        control.drop_connection();
                    }
                    signal_hook::consts::SIGUSR2 => {
                        control.unplugged.store(false, Ordering::SeqCst)
                    }
                    _ => {
                        control.stop.store(true, Ordering::SeqCst);
                        control.drop_connection();
                    }
                }
            }
        });
    }

    let addr = format!("{}:{}", opts.vpcd_host, opts.vpcd_port);
    let mut said_waiting = false;
    let mut save_error = None;
    while !control.stop.load(Ordering::SeqCst) {
        if control.unplugged.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let stream = match TcpStream::connect(&addr) {
            Ok(s) => s,
            Err(e) => {
                if !said_waiting {
                    log(format!("waiting for vpcd on {addr} ({e})"));
                    said_waiting = true;
                }
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        said_waiting = false;
        let _ = stream.set_nodelay(true);
        match (stream.try_clone(), control.stream.lock()) {
            (Ok(clone), Ok(mut slot)) => *slot = Some(clone),
            _ => bail!("cannot share the vpcd connection with the signal thread"),
        }
        // A signal that arrived between the checks above and now must still count.
        if control.stop.load(Ordering::SeqCst) || control.unplugged.load(Ordering::SeqCst) {
            control.drop_connection();
        }
        log(format!("plugged into {addr}"));
        let mut stream = stream;
        let state_path = opts.state.clone();
        let result = crate::vpcd::serve(&mut stream, &mut card, |card| {
            if card.take_dirty() {
                if let Err(e) = card.state.save(&state_path) {
                    log(format!("saving state failed: {e:#}"));
                    save_error = Some(e);
                }
            }
        });
        if let Ok(mut slot) = control.stream.lock() {
            *slot = None;
        }
        let _ = stream.shutdown(Shutdown::Both);
        card.power_cycle();
        match result {
            _ if control.stop.load(Ordering::SeqCst)
                || control.unplugged.load(Ordering::SeqCst) =>
            {
                log("unplugged")
            }
            Ok(()) => log("unplugged (vpcd closed the connection)"),
            Err(e) => log(format!("unplugged ({e})")),
        }
        if let Some(e) = save_error.take() {
            return Err(e);
        }
        if !control.stop.load(Ordering::SeqCst) && !control.unplugged.load(Ordering::SeqCst) {
            // vpcd went away (pcscd restarted): reconnect after a pause.
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    card.state.save(&opts.state)?;
    log("state saved, exiting");
    Ok(())
}
