//! Harness for tests that plug software YubiKeys into pcscd through vpcd.
//!
//! There is one pcscd per machine and vpcd gives it two readers, so at most
//! two virtual keys exist at once and tests that use them run one at a time
//! (the `pcsc` test group in `.config/nextest.toml`; across processes, a
//! file lock held while a key lives). Each key gets its own state file; the
//! process is killed when the value is dropped.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{bin_path, read_log, ChildGuard};

/// The two readers of the vpcd entry, by index (port 35963 and 35964).
pub const READERS: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];

/// The vpcd port of reader 0 of the system pcscd (reader 1: the next one).
const VPCD_BASE_PORT: u16 = 35963;

/// Factory PIN, PUK and management key of every YubiKey.
pub const DEFAULT_PIN: &[u8] = b"123456";
pub const DEFAULT_PUK: &[u8] = b"12345678";
pub const DEFAULT_MGM_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// Serialises the tests of one process that plug virtual keys: nextest runs
/// each test in its own process (and the `pcsc` group keeps those apart),
/// this lock does the same under plain `cargo test`.
static CARD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`CARD_LOCK`] for an async test.
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    CARD_LOCK.lock().await
}

/// [`CARD_LOCK`] for a test without a runtime.
pub fn lock_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    CARD_LOCK.blocking_lock()
}

/// The two vpcd readers belong to one test at a time across every process on
/// the machine (several `cargo test`/nextest runs, other checkouts): a key
/// holds an exclusive `flock` on a well-known file while it lives. Keys of one
/// process share it; the kernel drops it when the process dies.
struct MachineLock {
    keys: usize,
    _file: nix::fcntl::Flock<std::fs::File>,
}

static MACHINE_LOCK: std::sync::Mutex<Option<MachineLock>> = std::sync::Mutex::new(None);

struct ReadersGuard;

impl ReadersGuard {
    fn acquire() -> Result<Self> {
        let mut held = MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_mut() {
            Some(lock) => lock.keys += 1,
            None => {
                let path = std::env::temp_dir().join("kleidia-vpcd-readers.lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("open {}", path.display()))?;
                let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("lock {}", path.display()))?;
                *held = Some(MachineLock {
                    keys: 1,
                    _file: flock,
                });
            }
        }
        Ok(Self)
    }
}

impl Drop for ReadersGuard {
    fn drop(&mut self) {
        let mut held = MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = held.as_mut() {
            lock.keys -= 1;
            if lock.keys == 0 {
                *held = None;
            }
        }
    }
}

/// Whether pcscd currently sees a card in `reader`.
pub fn card_present(reader: &str) -> Result<bool> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).context("pcscd is not running")?;
    let mut states = [pcsc::ReaderState::new(
        CString::new(reader)?,
        pcsc::State::UNAWARE,
    )];
    ctx.get_status_change(Duration::from_millis(0), &mut states)
        .with_context(|| format!("status of reader {reader}"))?;
    Ok(states[0].event_state().contains(pcsc::State::PRESENT))
}

/// Wait until the reader shows (or no longer shows) a card.
pub fn wait_card(reader: &str, present: bool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if card_present(reader)? == present {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "reader {reader:?} still {} after {timeout:?}",
                if present { "empty" } else { "holds a card" }
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A software YubiKey plugged into one vpcd reader.
pub struct VirtualYubiKey {
    pub serial: u32,
    pub firmware: String,
    /// Reader index: 0 or 1 (0 for a key in a private pcscd's reader).
    pub reader: u8,
    /// The reader's name; its vpcd port.
    name: &'static str,
    port: u16,
    /// Plugged into a private pcscd ([`crate::readers::PrivatePcscd`]):
    /// the test process's PC/SC talks to the system pcscd, so presence is
    /// read from the key's log instead.
    private: bool,
    pub state: PathBuf,
    pub attestation_root: PathBuf,
    /// The fault hook's control file (see [`VirtualYubiKey::arm_fault`]).
    fault: PathBuf,
    log: PathBuf,
    proc: ChildGuard,
    // Declared after `proc`: the process is gone before the readers are released.
    _readers: Option<ReadersGuard>,
}

impl VirtualYubiKey {
    /// Start a key (factory state unless `dir` already holds its state file)
    /// and wait until pcscd shows it. `dir` also holds the attestation root
    /// shared by every key plugged from it.
    pub fn plug(dir: &Path, serial: u32, firmware: &str, reader: u8) -> Result<Self> {
        Self::plug_with(dir, serial, firmware, reader, &[])
    }

    /// [`plug`](Self::plug) a new key made without the OATH application
    /// (`--without-oath`: SELECT of the OATH AID answers "not found").
    pub fn plug_without_oath(dir: &Path, serial: u32, firmware: &str, reader: u8) -> Result<Self> {
        Self::plug_with(dir, serial, firmware, reader, &["--without-oath"])
    }

    fn plug_with(
        dir: &Path,
        serial: u32,
        firmware: &str,
        reader: u8,
        extra: &[&str],
    ) -> Result<Self> {
        let name = READERS[usize::from(reader)];
        let readers = ReadersGuard::acquire()?;
        // A key from the previous test may still be on its way out.
        wait_card(name, false, Duration::from_secs(10)).with_context(|| {
            format!("{name} is occupied: is another kleidia-virtual-yubikey running?")
        })?;
        let state = dir.join(format!("yubikey-{serial}.json"));
        let attestation_root = dir.join("attestation-root.pem");
        let log = dir.join(format!("yubikey-{serial}.log"));
        let fault = dir.join(format!("yubikey-{serial}.fault"));
        let port = VPCD_BASE_PORT + u16::from(reader);
        let mut cmd = Self::command(serial, firmware, port, &state, &attestation_root);
        cmd.args(extra);
        let proc = ChildGuard::spawn_logged(&format!("virtual-yubikey-{serial}"), &mut cmd, &log)?;
        let mut key = Self {
            serial,
            firmware: firmware.to_string(),
            reader,
            name,
            port,
            private: false,
            state,
            attestation_root,
            fault,
            log,
            proc,
            _readers: Some(readers),
        };
        key.wait_plugged()?;
        Ok(key)
    }

    /// Start a key in `reader` of a private pcscd (see
    /// [`crate::readers::PrivatePcscd`]): no machine-wide lock, the reader
    /// belongs to the test that started that pcscd. Waits until the key is
    /// connected to the reader (the agent's `/discover` is what tells
    /// whether pcscd shows it).
    pub fn plug_private(
        dir: &Path,
        serial: u32,
        firmware: &str,
        reader: &crate::readers::Reader,
    ) -> Result<Self> {
        let state = dir.join(format!("yubikey-{serial}.json"));
        let attestation_root = dir.join("attestation-root.pem");
        let log = dir.join(format!("yubikey-{serial}.log"));
        let fault = dir.join(format!("yubikey-{serial}.fault"));
        let proc = Self::spawn(
            serial,
            firmware,
            reader.port,
            &state,
            &attestation_root,
            &log,
        )?;
        let mut key = Self {
            serial,
            firmware: firmware.to_string(),
            reader: 0,
            name: Box::leak(reader.name.clone().into_boxed_str()),
            port: reader.port,
            private: true,
            state,
            attestation_root,
            fault,
            log,
            proc,
            _readers: None,
        };
        key.wait_plugged()?;
        Ok(key)
    }

    fn spawn(
        serial: u32,
        firmware: &str,
        port: u16,
        state: &Path,
        root: &Path,
        log: &Path,
    ) -> Result<ChildGuard> {
        let mut cmd = Self::command(serial, firmware, port, state, root);
        ChildGuard::spawn_logged(&format!("virtual-yubikey-{serial}"), &mut cmd, log)
    }

    fn command(serial: u32, firmware: &str, port: u16, state: &Path, root: &Path) -> Command {
        let mut cmd = Command::new(bin_path("kleidia-virtual-yubikey"));
        cmd.arg("--serial")
            .arg(serial.to_string())
            .args(["--firmware", firmware, "--reader-port", &port.to_string()])
            .arg("--state")
            .arg(state)
            .arg("--attestation-root")
            .arg(root)
            // The test fault hook: inert until a test writes this file.
            .env("KLEIDIA_VYK_FAULT_FILE", state.with_extension("fault"));
        cmd
    }

    fn wait_plugged(&mut self) -> Result<()> {
        self.wait_plugged_within(Duration::from_secs(15))
    }

    fn wait_plugged_within(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.present()? {
            if let Some(status) = self.proc.exited() {
                bail!(
                    "kleidia-virtual-yubikey exited with {status}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the virtual key did not show up in {}:\n{}",
                    self.reader_name(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn reader_name(&self) -> &'static str {
        self.name
    }

    /// The key is in its reader: pcscd shows a card there (for a key in a
    /// private pcscd's reader: the key says it is connected to it).
    fn present(&self) -> Result<bool> {
        if !self.private {
            return card_present(self.reader_name());
        }
        let log = self.log();
        let plugged = log.rfind("plugged into");
        let pulled = log.rfind("unplugged");
        Ok(plugged.is_some_and(|p| pulled.is_none_or(|u| p > u)))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.proc.pid() as i32);
        nix::sys::signal::kill(pid, sig).context("signal the virtual key")?;
        Ok(())
    }

    /// Pull the key out (SIGUSR1); the process keeps its state.
    pub fn unplug(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGUSR1)?;
        wait_card(self.reader_name(), false, Duration::from_secs(10))
    }

    /// Put it back in (SIGUSR2).
    pub fn replug(&mut self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGUSR2)?;
        self.wait_plugged()
    }

    /// SIGTERM: unplug, save and exit; the exit must be clean.
    pub fn stop(&mut self) -> Result<()> {
        let status = self.proc.stop();
        if !status.is_some_and(|s| s.success()) {
            bail!(
                "kleidia-virtual-yubikey exited with {status:?}:\n{}",
                self.log()
            );
        }
        wait_card(self.reader_name(), false, Duration::from_secs(10))
    }

    /// Stop the process and start a new one on the same state file: what
    /// pulling the key out and plugging it in again looks like to the host.
    pub fn restart(&mut self) -> Result<()> {
        self.restart_within(Duration::from_secs(15))
    }

    /// [`restart`](Self::restart), waiting up to `timeout` for pcscd to show
    /// it: after a stalled command pcscd's reader only takes the card back
    /// once its own wait for the lost answer has run out.
    pub fn restart_within(&mut self, timeout: Duration) -> Result<()> {
        self.stop()?;
        self.proc = Self::spawn(
            self.serial,
            &self.firmware,
            self.port,
            &self.state,
            &self.attestation_root,
            &self.log,
        )?;
        self.wait_plugged_within(timeout)
    }

    /// The persisted state, as JSON.
    pub fn state_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            &self.state,
        )?)?)
    }

    /// The test attestation root certificate (PEM), as printed by the binary.
    pub fn attestation_root_pem(&self) -> Result<String> {
        let out = Command::new(bin_path("kleidia-virtual-yubikey"))
            .arg("print-attestation-root")
            .arg("--attestation-root")
            .arg(&self.attestation_root)
            .output()?;
        if !out.status.success() {
            bail!(
                "print-attestation-root failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Arm the fault hook once: after the next command with instruction
    /// byte `ins` that the card accepts (and saves), its answer is withheld —
    /// `stall` until [`unplug`](Self::unplug), or `drop` the connection at once.
    pub fn arm_fault(&self, mode: &str, ins: u8) -> Result<()> {
        std::fs::write(&self.fault, format!("{mode} {ins:02X}\n"))
            .with_context(|| format!("write {}", self.fault.display()))
    }

    /// Take back an armed fault that has not fired.
    pub fn disarm_fault(&self) {
        let _ = std::fs::remove_file(&self.fault);
    }

    /// [`arm_fault`](Self::arm_fault), and when it fires the key first
    /// SIGKILLs process `pid` (the program waiting for the answer): that
    /// program dies after the card changed and before it answered.
    pub fn arm_fault_killing(&self, mode: &str, ins: u8, pid: u32) -> Result<()> {
        std::fs::write(&self.fault, format!("{mode} {ins:02X} kill {pid}\n"))
            .with_context(|| format!("write {}", self.fault.display()))
    }

    /// After a `drop` fault: wait until the key has plugged itself back in
    /// and pcscd shows a card in its reader again.
    pub fn wait_back_after_fault(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let back = log
                .rfind("FAULT: INS")
                .is_some_and(|at| log[at..].contains("plugged into"));
            if back {
                break;
            }
            if Instant::now() > deadline {
                bail!("the key did not come back after the fault:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // pcscd sometimes keeps the reader empty after the host died in the
        // middle of a transmit; pulling the key out and putting it back in
        // (what a person would do) makes it look again.
        let first = Duration::from_secs(8).min(deadline.saturating_duration_since(Instant::now()));
        if wait_card(self.reader_name(), true, first).is_ok() {
            return Ok(());
        }
        self.signal(nix::sys::signal::Signal::SIGUSR1)?;
        std::thread::sleep(Duration::from_millis(500));
        self.signal(nix::sys::signal::Signal::SIGUSR2)?;
        wait_card(
            self.reader_name(),
            true,
            deadline.saturating_duration_since(Instant::now()),
        )
    }

    /// Wait until the armed fault fired: the card applied the command and
    /// did not answer.
    pub fn wait_fault_fired(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.fault.exists() || !self.log().contains("FAULT: INS") {
            if Instant::now() > deadline {
                bail!("the armed fault did not fire:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// What the emulator printed so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `ykman --reader READER ARGS…`, stdout on success.
pub fn ykman(reader: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["--reader", reader];
    all.extend_from_slice(args);
    run_tool("ykman", &all)
}

/// `yubico-piv-tool -r READER ARGS…`, stdout on success.
pub fn yubico_piv_tool(reader: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-r", reader];
    all.extend_from_slice(args);
    run_tool("yubico-piv-tool", &all)
}

/// The key with `serial`, through pcscd. Retries for a few seconds: the
/// agent may still be closing its PC/SC session of the last operation.
pub fn open(serial: u32) -> yubikey::YubiKey {
    let mut last = None;
    for _ in 0..50 {
        match yubikey::YubiKey::open_by_serial(yubikey::Serial(serial)) {
            Ok(yk) => return yk,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("open YubiKey {serial}: {last:?}");
}

/// PIN retries left, read with the `yubikey` crate (an empty VERIFY).
/// The management key of an escrow document (`management_key` hex and
/// `management_key_algorithm` as Kleidia writes them), for `authenticate`.
pub fn escrowed_mgm_key(escrow: &serde_json::Value) -> yubikey::MgmKey {
    use yubikey::MgmAlgorithmId;
    let alg = match escrow["management_key_algorithm"].as_str() {
        Some("3des") => MgmAlgorithmId::ThreeDes,
        Some("aes128") => MgmAlgorithmId::Aes128,
        Some("aes192") => MgmAlgorithmId::Aes192,
        Some("aes256") => MgmAlgorithmId::Aes256,
        other => panic!("escrowed management key algorithm {other:?}"),
    };
    let bytes = hex::decode(escrow["management_key"].as_str().unwrap_or_default())
        .expect("the escrowed management key is hex");
    yubikey::MgmKey::from_bytes(bytes, Some(alg)).expect("a key of its algorithm's length")
}

pub fn pin_retries(serial: u32) -> u8 {
    open(serial).get_pin_retries().unwrap()
}

/// Whether `pin` verifies on the card now.
pub fn pin_verifies(serial: u32, pin: &str) -> bool {
    open(serial).verify_pin(pin.as_bytes()).is_ok()
}

/// The factory management key in hex, as the server sends it to the agent.
pub fn default_mgm_hex() -> String {
    hex::encode(DEFAULT_MGM_KEY)
}

/// The line of `ykman … info` output that starts with `prefix`.
pub fn info_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
}

/// The factory management key of this key's firmware (3DES before 5.7, AES-192 from 5.7).
pub fn default_mgm(yk: &yubikey::YubiKey) -> yubikey::MgmKey {
    yubikey::MgmKey::get_default(yk).unwrap()
}
