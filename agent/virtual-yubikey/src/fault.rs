//! A fault hook for tests: make the card apply one command and then never
//! answer it, as when the host side dies or the connection breaks between
//! the card's write and its status word.
//!
//! Off unless the process was started with `KLEIDIA_VYK_FAULT_FILE=<path>`;
//! even then it does nothing until a test writes that file, and it disarms
//! itself (deletes the file) when it fires. The file holds one line,
//! `<mode> <INS>` (hex), e.g. `stall 24`:
//!
//! - `stall`: after the first command with that instruction byte that the
//!   card accepted (status 9000) — and saved — the answer is held back until
//!   the key is unplugged (SIGUSR1) or stopped; the host's transmit hangs.
//! - `drop`: the same, but the connection to vpcd is closed at once instead
//!   of answering, and the card comes back (re-plugged) a moment later.
//!
//! A line may end with `kill <pid>`: when the fault fires, the card first
//! SIGKILLs that process (the host program waiting for the answer, e.g. the
//! agent), then withholds the answer. With `drop`, that is "the program
//! died after the card changed, before it answered" without leaving pcscd
//! waiting on a card that never answers (which `stall` does).

use std::path::{Path, PathBuf};

/// The environment variable that names the control file.
pub const FAULT_FILE_ENV: &str = "KLEIDIA_VYK_FAULT_FILE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stall,
    Drop,
}

/// An armed fault: what to do after which instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub mode: Mode,
    pub ins: u8,
    /// A process to SIGKILL when the fault fires.
    pub kill: Option<u32>,
}

impl Fault {
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let mode = match words.next()? {
            "stall" => Mode::Stall,
            "drop" => Mode::Drop,
            _ => return None,
        };
        let ins = u8::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
        let kill = match words.next() {
            None => None,
            Some("kill") => Some(words.next()?.parse().ok()?),
            Some(_) => return None,
        };
        words.next().is_none().then_some(Self { mode, ins, kill })
    }

    /// SIGKILL the process the fault names, if any, and wait until the
    /// signal is sent.
    pub fn kill_host(&self) -> std::io::Result<()> {
        let Some(pid) = self.kill else {
            return Ok(());
        };
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -KILL {pid}: {status}")))
        }
    }
}

/// The control file of a process started with [`FAULT_FILE_ENV`].
#[derive(Debug, Clone)]
pub struct FaultFile(PathBuf);

impl FaultFile {
    /// From the environment; `None` (no hook at all) unless set.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(FAULT_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(|v| Self(PathBuf::from(v)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The fault to inject after command `apdu` answered with `reply`, if
    /// it is armed for it; firing disarms it (the file is deleted).
    pub fn fire(&self, apdu: &[u8], reply: &[u8]) -> Option<Fault> {
        let applied = reply.ends_with(&[0x90, 0x00]);
        let ins = *apdu.get(1)?;
        if apdu.len() < 4 || !applied {
            return None;
        }
        let text = std::fs::read_to_string(&self.0).ok()?;
        let fault = Fault::parse(&text).filter(|f| f.ins == ins)?;
        std::fs::remove_file(&self.0).ok()?;
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_line_names_a_mode_and_an_instruction() {
        assert_eq!(
            Fault::parse("stall 24\n"),
            Some(Fault {
                mode: Mode::Stall,
                ins: 0x24,
                kill: None
            })
        );
        assert_eq!(
            Fault::parse("drop 0xFF"),
            Some(Fault {
                mode: Mode::Drop,
                ins: 0xFF,
                kill: None
            })
        );
        assert_eq!(
            Fault::parse("drop 24 kill 4242\n"),
            Some(Fault {
                mode: Mode::Drop,
                ins: 0x24,
                kill: Some(4242)
            })
        );
        assert_eq!(Fault::parse("drop 24 kill"), None);
        assert_eq!(Fault::parse("drop 24 kill me"), None);
        assert_eq!(Fault::parse("drop 24 stop 1"), None);
        assert_eq!(Fault::parse("stall"), None);
        assert_eq!(Fault::parse("hang 24"), None);
        assert_eq!(Fault::parse("stall 24 25"), None);
    }

    #[test]
    fn a_fault_fires_once_and_only_after_the_card_accepted_the_command() {
        let path = std::env::temp_dir().join(format!("vyk-fault-{}", std::process::id()));
        std::fs::write(&path, "stall 24").unwrap();
        let f = FaultFile(path.clone());
        let change = [0x00, 0x24, 0x00, 0x80, 0x10];
        assert_eq!(f.fire(&change, &[0x63, 0xC2]), None, "a refusal answers");
        assert_eq!(f.fire(&[0x00, 0x20, 0x00, 0x80], &[0x90, 0x00]), None);
        assert_eq!(
            f.fire(&change, &[0x90, 0x00]).map(|f| f.mode),
            Some(Mode::Stall)
        );
        assert!(!path.exists(), "disarmed");
        assert_eq!(f.fire(&change, &[0x90, 0x00]), None);
    }
}
