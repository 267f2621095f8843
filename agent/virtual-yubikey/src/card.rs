//! The card as pcscd sees it: ATR, power events, application selection,
//! command chaining, `61xx` + GET RESPONSE, and the management application
//! that `ykman info` reads. The PIV applet itself is in `piv.rs`, the OATH
//! applet in `oath.rs`.

use rand::{CryptoRng, RngCore};

use crate::apdu::{sw, Command, Response};
use crate::oath::{AID_OATH, INS_SEND_REMAINING};
use crate::state::CardState;
use crate::tlv;

/// ATR of a YubiKey 5 NFC in an NFC reader ("YubiKey" in the historical
/// bytes). The card sits in a reader that is not a Yubico USB reader, so it
/// must look like a key on NFC: ykman 5 takes a USB-style ATR (TA1 present)
/// for a USB connection and then needs a USB product id, which only a
/// "Yubico YubiKey …" reader name gives it ("Failed to connect to YubiKey").
pub const ATR: [u8; 18] = [
    0x3B, 0x8D, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65,
    0x79, 0xF9,
];

pub const AID_PIV: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
pub const AID_MANAGEMENT: [u8; 8] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;
const INS_READ_CONFIG: u8 = 0x1D;

/// USB capabilities of a YubiKey 5 NFC: OTP, U2F, OpenPGP, PIV, OATH, FIDO2.
const CAPABILITIES: [u8; 2] = [0x02, 0x3B];
/// The OATH bit of the capabilities.
const CAPABILITY_OATH: u8 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applet {
    None,
    Piv,
    Management,
    Oath,
}

/// The PIV applet's volatile state: lost on power-off, reset or unplug.
#[derive(Debug, Default)]
pub struct Session {
    pub pin_verified: bool,
    /// Set by a successful VERIFY, consumed by one use of a PIN-always key.
    pub pin_fresh: bool,
    pub mgm_authenticated: bool,
    pub mgm_challenge: Option<MgmChallenge>,
}

#[derive(Debug, Clone)]
pub enum MgmChallenge {
    /// Mutual auth step 1: the card's plaintext witness (it sent it encrypted).
    Witness(Vec<u8>),
    /// Single auth: the response the host must send (the challenge encrypted).
    Expected(Vec<u8>),
}

pub struct Card<R> {
    pub state: CardState,
    pub session: Session,
    pub rng: R,
    applet: Applet,
    chain: Option<(u8, u8, u8, Vec<u8>)>,
    pending: Vec<u8>,
    dirty: bool,
}

impl<R: RngCore + CryptoRng> Card<R> {
    pub fn new(state: CardState, rng: R) -> Self {
        Self {
            state,
            session: Session::default(),
            rng,
            applet: Applet::None,
            chain: None,
            pending: Vec::new(),
            dirty: false,
        }
    }

    /// Power on, power off or reset: everything volatile is forgotten.
    pub fn power_cycle(&mut self) {
        self.session = Session::default();
        self.applet = Applet::None;
        self.chain = None;
        self.pending.clear();
    }

    /// True once after the persistent state changed; the caller saves it.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Handle one raw command APDU and produce the raw response.
    pub fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        let cmd = match Command::parse(raw) {
            Ok(c) => c,
            Err(_) => return Response::status(sw::WRONG_LENGTH).encode(),
        };
        // The OATH applet's own GET RESPONSE is SEND REMAINING.
        let get_response = cmd.ins == INS_GET_RESPONSE
            || (cmd.ins == INS_SEND_REMAINING && self.applet == Applet::Oath);
        if get_response && cmd.cla & 0x10 == 0 {
            return self.get_response(&cmd).encode();
        }
        self.pending.clear();

        if cmd.is_chained() {
            let same = matches!(&self.chain, Some((i, a, b, _)) if (*i, *a, *b) == (cmd.ins, cmd.p1, cmd.p2));
            if !same {
                self.chain = Some((cmd.ins, cmd.p1, cmd.p2, Vec::new()));
            }
            if let Some((_, _, _, buf)) = &mut self.chain {
                buf.extend_from_slice(&cmd.data);
            }
            return Response::status(sw::OK).encode();
        }
        let mut cmd = cmd;
        if let Some((ins, p1, p2, mut buf)) = self.chain.take() {
            if (ins, p1, p2) == (cmd.ins, cmd.p1, cmd.p2) {
                buf.extend_from_slice(&cmd.data);
                cmd.data = buf;
            }
        }

        let resp = self.dispatch(&cmd);
        self.deliver(&cmd, resp).encode()
    }

    fn dispatch(&mut self, cmd: &Command) -> Response {
        if cmd.cla & !0x10 != 0 {
            return Response::status(sw::CLA_NOT_SUPPORTED);
        }
        // OATH's CALCULATE ALL shares SELECT's INS; only SELECT has P1 04.
        if cmd.ins == INS_SELECT && (self.applet != Applet::Oath || cmd.p1 == 0x04) {
            return self.select(cmd);
        }
        match self.applet {
            Applet::Piv => self.piv_command(cmd),
            Applet::Management => self.management_command(cmd),
            Applet::Oath => self.oath_command(cmd),
            Applet::None => Response::status(sw::INS_NOT_SUPPORTED),
        }
    }

    /// Send at most what the host can take; keep the rest for GET RESPONSE.
    fn deliver(&mut self, cmd: &Command, mut resp: Response) -> Response {
        let max = if cmd.extended {
            cmd.le.unwrap_or(65536)
        } else {
            cmd.le.unwrap_or(256)
        };
        if resp.data.len() > max && resp.sw == sw::OK {
            self.pending = resp.data.split_off(max);
            resp.sw = more_sw(self.pending.len());
        }
        resp
    }

    fn get_response(&mut self, cmd: &Command) -> Response {
        if self.pending.is_empty() {
            return Response::status(sw::CONDITIONS);
        }
        let max = cmd.le.unwrap_or(256);
        let n = max.min(self.pending.len());
        let rest = self.pending.split_off(n);
        let data = std::mem::replace(&mut self.pending, rest);
        let sw = if self.pending.is_empty() {
            sw::OK
        } else {
            more_sw(self.pending.len())
        };
        Response { data, sw }
    }

    fn select(&mut self, cmd: &Command) -> Response {
        if cmd.p1 != 0x04 {
            return Response::status(sw::INCORRECT_P1P2);
        }
        let aid = &cmd.data[..];
        if aid.len() >= 5 && AID_PIV.starts_with(aid) {
            // SELECT drops PIN verification and management key authentication,
            // as on the device (libykpiv re-selects to read the PIN retries).
            self.session = Session::default();
            self.applet = Applet::Piv;
            // Application property template: PIX + version, and the short AID.
            let mut inner = tlv::encode(0x4F, &AID_PIV[5..]);
            tlv::encode_into(0x79, &tlv::encode(0x4F, &AID_PIV[..5]), &mut inner);
            return Response::ok(tlv::encode(0x61, &inner));
        }
        if aid == AID_MANAGEMENT {
            self.applet = Applet::Management;
            self.session = Session::default();
            return Response::ok(self.state.firmware.to_string().into_bytes());
        }
        if aid == AID_OATH {
            // A key without the OATH application answers like any unknown AID.
            if let Some(resp) = self.oath_select() {
                self.applet = Applet::Oath;
                self.session = Session::default();
                return resp;
            }
        }
        Response::status(sw::NOT_FOUND)
    }

    fn management_command(&mut self, cmd: &Command) -> Response {
        match cmd.ins {
            INS_READ_CONFIG => Response::ok(self.device_info()),
            _ => Response::status(sw::INS_NOT_SUPPORTED),
        }
    }

    /// The management application's device information (`ykman info`).
    pub fn device_info(&self) -> Vec<u8> {
        let mut caps = CAPABILITIES;
        if self.state.oath.is_none() {
            caps[1] &= !CAPABILITY_OATH;
        }
        let mut body = Vec::new();
        tlv::encode_into(0x01, &caps, &mut body); // USB supported
        tlv::encode_into(0x02, &self.state.serial.to_be_bytes(), &mut body);
        tlv::encode_into(0x03, &caps, &mut body); // USB enabled
        tlv::encode_into(
            0x04,
            &[crate::attest::FORM_FACTOR_USB_A_KEYCHAIN],
            &mut body,
        );
        tlv::encode_into(0x05, &self.state.firmware.bytes(), &mut body);
        tlv::encode_into(0x06, &[0, 0], &mut body); // auto-eject timeout
        tlv::encode_into(0x07, &[0x0F], &mut body); // challenge-response timeout
        tlv::encode_into(0x08, &[0x00], &mut body); // device flags
        tlv::encode_into(0x0A, &[0x00], &mut body); // configuration not locked
        tlv::encode_into(0x0D, &caps, &mut body); // NFC supported
        tlv::encode_into(0x0E, &caps, &mut body); // NFC enabled
        let mut out = vec![body.len() as u8];
        out.extend(body);
        out
    }
}

fn more_sw(remaining: usize) -> u16 {
    0x6100
        | if remaining > 0xFF {
            0
        } else {
            remaining as u16
        }
}
