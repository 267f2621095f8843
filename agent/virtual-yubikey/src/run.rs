//! The emulator process: load or create the card's state, connect to vpcd
//! (retrying until pcscd is up), serve it, and obey the plug signals:
//! SIGUSR1 unplugs (closes the vpcd connection), SIGUSR2 plugs back in,
//! SIGTERM/SIGINT unplug, save and exit.

use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};

use crate::attest::AttestationRoot;
use crate::card::Card;
use crate::fault::{FaultFile, Mode};
use crate::state::{CardState, Firmware, SlotKey, ORIGIN_IMPORTED};
use crate::vpcd::Answer;

/// vpcd's first reader listens on 35963 (0x8C7B); the second on the next port.
pub const VPCD_BASE_PORT: u16 = 35963;

#[derive(Clone)]
pub struct Options {
    pub serial: Option<u32>,
    pub firmware: Option<Firmware>,
    pub state: PathBuf,
    pub attestation_root: PathBuf,
    pub vpcd_host: String,
    pub vpcd_port: u16,
    /// A new key without the OATH application (as on a key whose OATH is
    /// disabled); an existing state file must agree.
    pub without_oath: bool,
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
        if opts.without_oath && st.oath.is_some() {
            bail!(
                "{} holds a key with the OATH application: --without-oath only applies to a new key",
                opts.state.display()
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
    let mut st = CardState::factory(serial, firmware, f9, f9_cert);
    if opts.without_oath {
        st.oath = None;
    }
    st.save(&opts.state)?;
    Ok(st)
}

/// Plug control shared with the signal thread (or a test).
#[derive(Default)]
pub struct Control {
    unplugged: AtomicBool,
    /// How many times the key was unplugged (a stall waits for the next one,
    /// even if it is plugged back in before the stall looks).
    unplugs: AtomicU64,
    stop: AtomicBool,
    stream: Mutex<Option<TcpStream>>,
    /// The test fault hook's control file (only from the environment).
    fault: Option<FaultFile>,
}

impl Control {
    /// Pull the key out: close the vpcd connection and stay out.
    pub fn unplug(&self) {
        self.unplugged.store(true, Ordering::SeqCst);
        self.unplugs.fetch_add(1, Ordering::SeqCst);
        self.drop_connection();
    }

    /// Put the key back in.
    pub fn plug(&self) {
        self.unplugged.store(false, Ordering::SeqCst);
    }

    /// Unplug and make `serve` return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.drop_connection();
    }

    /// A fault armed for this answer: hold it back, stalling until the key
    /// is unplugged or stopped (`stall`) or not at all (`drop`).
    fn fault(&self, apdu: &[u8], reply: Option<&[u8]>) -> Answer {
        let Some(fault) = self.fault.as_ref().and_then(|f| f.fire(apdu, reply?)) else {
            return Answer::Send;
        };
        if let Some(pid) = fault.kill {
            match fault.kill_host() {
                Ok(()) => log(format!("FAULT: killed process {pid} before answering")),
                Err(e) => log(format!("FAULT: could not kill process {pid}: {e}")),
            }
        }
        log(format!(
            "FAULT: INS {:02X} applied and saved, answer withheld ({:?})",
            fault.ins, fault.mode
        ));
        if fault.mode == Mode::Stall {
            let unplugs = self.unplugs.load(Ordering::SeqCst);
            while !self.stop.load(Ordering::SeqCst)
                && !self.unplugged.load(Ordering::SeqCst)
                && self.unplugs.load(Ordering::SeqCst) == unplugs
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Answer::Withhold
    }

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
    let fault = FaultFile::from_env();
    if let Some(f) = &fault {
        log(format!(
            "TEST FAULT HOOK ENABLED ({}={}): never use this outside tests",
            crate::fault::FAULT_FILE_ENV,
            f.path().display()
        ));
    }
    let control = Arc::new(Control {
        fault,
        ..Control::default()
    });
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
                    signal_hook::consts::SIGUSR1 => control.unplug(),
                    signal_hook::consts::SIGUSR2 => control.plug(),
                    _ => control.stop(),
                }
            }
        });
    }
    serve(Card::new(state, OsRng), &opts, &control)
}

/// Connect to vpcd (retrying while it is not there), serve it, obey
/// `control`, save the state after every change and once more at the end.
pub fn serve<R: RngCore + CryptoRng>(
    mut card: Card<R>,
    opts: &Options,
    control: &Control,
) -> Result<()> {
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
        let result = crate::vpcd::serve(&mut stream, &mut card, |card, apdu, reply| {
            if card.take_dirty() {
                if let Err(e) = card.state.save(&opts.state) {
                    log(format!("saving state failed: {e:#}"));
                    save_error = Some(e);
                    return Answer::Send;
                }
            }
            control.fault(apdu, reply)
        });
        if let Ok(mut slot) = control.stream.lock() {
            *slot = None;
        }
        let _ = stream.shutdown(Shutdown::Both);
        card.power_cycle();
        let by_us = control.stop.load(Ordering::SeqCst) || control.unplugged.load(Ordering::SeqCst);
        match result {
            _ if by_us => log("unplugged"),
            Ok(()) => log("unplugged (vpcd closed the connection)"),
            Err(e) => log(format!("unplugged ({e})")),
        }
        if let Some(e) = save_error.take() {
            return Err(e);
        }
        if !by_us {
            // vpcd went away (pcscd restarted): reconnect after a pause.
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    card.state.save(&opts.state)?;
    log("state saved, exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::vpcd::{read_message, write_message, CTRL_ATR, CTRL_ON};

    fn exchange(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        write_message(s, msg).unwrap();
        read_message(s).unwrap().unwrap()
    }

    fn accept(l: &TcpListener) -> TcpStream {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn the_card_waits_for_vpcd_unplugs_replugs_and_saves_on_stop() {
        let dir = std::env::temp_dir().join(format!("vyk-run-{}", std::process::id()));
        // Find a free port, then leave it closed for a while: vpcd is "not up yet".
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = Options {
            serial: Some(7654321),
            firmware: Some("5.7.1".parse().unwrap()),
            state: dir.join("key.json"),
            attestation_root: dir.join("root.pem"),
            vpcd_host: "127.0.0.1".into(),
            vpcd_port: port,
            without_oath: false,
        };
        let card = Card::new(load_or_create_state(&opts).unwrap(), OsRng);
        let control = Arc::new(Control::default());
        let worker = {
            let control = control.clone();
            let opts = opts.clone();
            std::thread::spawn(move || serve(card, &opts, &control))
        };
        std::thread::sleep(Duration::from_millis(400));
        let vpcd = TcpListener::bind(("127.0.0.1", port)).unwrap();

        let mut s = accept(&vpcd);
        write_message(&mut s, &[CTRL_ON]).unwrap();
        assert_eq!(exchange(&mut s, &[CTRL_ATR]), crate::card::ATR.to_vec());
        assert_eq!(
            exchange(&mut s, &[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8])[..2],
            [0x61, 0x11]
        );
        assert_eq!(
            exchange(&mut s, &[0, 0xF8, 0, 0]),
            vec![0x00, 0x74, 0xCB, 0xB1, 0x90, 0x00]
        );
        // A wrong PIN is a persistent change: saved at once.
        assert_eq!(
            exchange(
                &mut s,
                &[0, 0x20, 0, 0x80, 8, b'0', b'0', b'0', b'0', b'0', b'0', 0xFF, 0xFF]
            ),
            vec![0x63, 0xC2]
        );
        assert_eq!(CardState::load(&opts.state).unwrap().pin.tries_left, 2);

        control.unplug();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "the card hung up");
        control.plug();
        let mut s = accept(&vpcd);
        assert_eq!(exchange(&mut s, &[CTRL_ATR]), crate::card::ATR.to_vec());
        assert_eq!(
            exchange(&mut s, &[0, 0xFD, 0, 0]),
            vec![0x6D, 0x00],
            "a re-plugged card starts unselected"
        );
        s.flush().unwrap();

        control.stop();
        worker.join().unwrap().unwrap();
        let st = CardState::load(&opts.state).unwrap();
        assert_eq!((st.serial, st.pin.tries_left), (7654321, 2));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_existing_state_file_must_match_the_serial_asked_for() {
        let dir = std::env::temp_dir().join(format!("vyk-serial-{}", std::process::id()));
        let mut opts = Options {
            serial: Some(1),
            firmware: Some("5.4.3".parse().unwrap()),
            state: dir.join("key.json"),
            attestation_root: dir.join("root.pem"),
            vpcd_host: "127.0.0.1".into(),
            vpcd_port: 1,
            without_oath: false,
        };
        load_or_create_state(&opts).unwrap();
        opts.serial = Some(2);
        let err = load_or_create_state(&opts).unwrap_err().to_string();
        assert!(err.contains("serial 1, not 2"), "{err}");
        opts.serial = None;
        opts.firmware = None;
        assert_eq!(
            load_or_create_state(&opts).unwrap().serial,
            1,
            "no --serial: the file decides"
        );
        std::fs::remove_file(&opts.state).unwrap();
        assert!(
            load_or_create_state(&opts).is_err(),
            "a new key needs --serial and --firmware"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
