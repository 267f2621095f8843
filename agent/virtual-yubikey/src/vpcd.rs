//! The card side of vsmartcard's vpcd protocol: every message is a 2-byte
//! big-endian length and the bytes; a 1-byte message is a control code
//! (0 power off, 1 power on, 2 reset, 4 get ATR), anything else an APDU.

use std::io::{self, Read, Write};

use rand::{CryptoRng, RngCore};

use crate::card::{Card, ATR};

pub const CTRL_OFF: u8 = 0;
pub const CTRL_ON: u8 = 1;
pub const CTRL_RESET: u8 = 2;
pub const CTRL_ATR: u8 = 4;

/// Read one framed message; `Ok(None)` on a clean end of stream.
pub fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

pub fn write_message(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 64 KiB"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out)?;
    w.flush()
}

/// Answer one message from vpcd; `None` when no reply is due.
pub fn handle_message<R: RngCore + CryptoRng>(card: &mut Card<R>, msg: &[u8]) -> Option<Vec<u8>> {
    match msg {
        [CTRL_OFF] | [CTRL_ON] | [CTRL_RESET] => {
            card.power_cycle();
            None
        }
        [CTRL_ATR] => Some(ATR.to_vec()),
        [_] => None,
        apdu => Some(card.process(apdu)),
    }
}

/// What to do with an answer once the command is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Send,
    /// Do not answer: end this connection (a test fault, see [`crate::fault`]).
    Withhold,
}

/// Serve one vpcd connection until it closes. `after_command` runs after
/// every message with the message and the answer, before the answer goes
/// out (the caller saves the state when it changed).
pub fn serve<R: RngCore + CryptoRng, S: Read + Write>(
    stream: &mut S,
    card: &mut Card<R>,
    mut after_command: impl FnMut(&mut Card<R>, &[u8], Option<&[u8]>) -> Answer,
) -> io::Result<()> {
    // Debugging aid: KLEIDIA_VYK_TRACE=1 logs every APDU and answer (PINs and keys included).
    let trace = std::env::var_os("KLEIDIA_VYK_TRACE").is_some_and(|v| v == "1");
    while let Some(msg) = read_message(stream)? {
        let reply = handle_message(card, &msg);
        // Persist before answering, as a card writes its EEPROM before the status word.
        if after_command(card, &msg, reply.as_deref()) == Answer::Withhold {
            return Ok(());
        }
        if let Some(reply) = reply {
            if trace {
                eprintln!("> {}\n< {}", hex::encode(&msg), hex::encode(&reply));
            }
            write_message(stream, &reply)?;
        }
    }
    Ok(())
}
