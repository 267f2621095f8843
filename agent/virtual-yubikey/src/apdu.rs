//! ISO 7816-4 command and response APDUs, short and extended length.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApduError {
    #[error("APDU shorter than its header")]
    TooShort,
    #[error("APDU length fields do not match its size")]
    BadLength,
}

/// A parsed command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Expected response length (Ne); `None` when the command has no Le field.
    pub le: Option<usize>,
    /// The command used extended length fields.
    pub extended: bool,
}

impl Command {
    pub fn parse(raw: &[u8]) -> Result<Self, ApduError> {
        if raw.len() < 4 {
            return Err(ApduError::TooShort);
        }
        let (cla, ins, p1, p2) = (raw[0], raw[1], raw[2], raw[3]);
        let body = &raw[4..];
        let mk = |data: &[u8], le: Option<usize>, extended: bool| Command {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            le,
            extended,
        };
        match body.len() {
            // Case 1: header only.
            0 => Ok(mk(&[], None, false)),
            // Case 2 short: Le only (00 means 256).
            1 => Ok(mk(&[], Some(short_ne(body[0])), false)),
            _ if body[0] != 0 => {
                // Case 3/4 short.
                let lc = usize::from(body[0]);
                match body.len() - 1 {
                    n if n == lc => Ok(mk(&body[1..], None, false)),
                    n if n == lc + 1 => Ok(mk(&body[1..=lc], Some(short_ne(body[lc + 1])), false)),
                    _ => Err(ApduError::BadLength),
                }
            }
            // Extended: first body byte is 00.
            3 => {
                // Case 2 extended: 00 Le1 Le2.
                Ok(mk(&[], Some(ext_ne(body[1], body[2])), true))
            }
            n if n > 3 => {
                let lc = (usize::from(body[1]) << 8) | usize::from(body[2]);
                let rest = &body[3..];
                if lc == 0 {
                    return Err(ApduError::BadLength);
                }
                match rest.len() {
                    r if r == lc => Ok(mk(rest, None, true)),
                    r if r == lc + 2 => {
                        Ok(mk(&rest[..lc], Some(ext_ne(rest[lc], rest[lc + 1])), true))
                    }
                    _ => Err(ApduError::BadLength),
                }
            }
            // A short command with Lc = 0 and no data (some hosts send `.. 00`
            // followed by nothing else): treat as "no data, Le absent".
            _ => Err(ApduError::BadLength),
        }
    }

    /// Command chaining bit (ISO 7816-4: CLA b5).
    pub fn is_chained(&self) -> bool {
        self.cla & 0x10 != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        if self.extended {
            if !self.data.is_empty() {
                out.push(0);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                if self.data.is_empty() {
                    out.push(0);
                }
                out.extend_from_slice(&((le % 65536) as u16).to_be_bytes());
            }
        } else {
            if !self.data.is_empty() {
                out.push(self.data.len() as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.push((le % 256) as u8);
            }
        }
        out
    }
}

fn short_ne(b: u8) -> usize {
    if b == 0 {
        256
    } else {
        usize::from(b)
    }
}

fn ext_ne(hi: u8, lo: u8) -> usize {
    let n = (usize::from(hi) << 8) | usize::from(lo);
    if n == 0 {
        65536
    } else {
        n
    }
}

/// Status words the applets answer with.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const SECURITY_STATUS: u16 = 0x6982;
    pub const AUTH_BLOCKED: u16 = 0x6983;
    pub const CONDITIONS: u16 = 0x6985;
    pub const INCORRECT_DATA: u16 = 0x6A80;
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    pub const NOT_FOUND: u16 = 0x6A82;
    pub const INCORRECT_P1P2: u16 = 0x6A86;
    pub const NO_SPACE: u16 = 0x6A84;
    pub const REF_NOT_FOUND: u16 = 0x6A88;
    pub const INCORRECT_SLOT: u16 = 0x6B00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const NO_PRECISE_DIAGNOSIS: u16 = 0x6F00;
    pub const fn verify_fail(tries: u8) -> u16 {
        0x63C0 | (tries as u16 & 0x0F)
    }
}

/// A response: data plus status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    pub fn ok(data: Vec<u8>) -> Self {
        Self { data, sw: sw::OK }
    }
    pub fn status(sw: u16) -> Self {
        Self {
            data: Vec::new(),
            sw,
        }
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_1_and_case_2_short_commands_parse() {
        let c = Command::parse(&[0, 0xFD, 0, 0]).unwrap();
        assert_eq!((c.ins, c.le, c.data.len()), (0xFD, None, 0));
        let c = Command::parse(&[0, 0xFD, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        assert!(!c.extended);
    }

    #[test]
    fn case_3_and_4_short_commands_parse() {
        let c = Command::parse(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8]).unwrap();
        assert_eq!(c.data, vec![0xA0, 0, 0, 3, 8]);
        assert_eq!(c.le, None);
        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 1, 2, 0x10]).unwrap();
        assert_eq!(c.data, vec![1, 2]);
        assert_eq!(c.le, Some(0x10));
        assert_eq!(
            Command::parse(&[0, 0xA4, 4, 0, 5, 1]),
            Err(ApduError::BadLength)
        );
    }

    #[test]
    fn extended_commands_parse_with_and_without_le() {
        let data = vec![7u8; 300];
        let mut raw = vec![0x00, 0xDB, 0x3F, 0xFF, 0x00, 0x01, 0x2C];
        raw.extend_from_slice(&data);
        let c = Command::parse(&raw).unwrap();
        assert!(c.extended);
        assert_eq!(c.data, data);
        assert_eq!(c.le, None);
        raw.extend_from_slice(&[0, 0]);
        let c = Command::parse(&raw).unwrap();
        assert_eq!(c.le, Some(65536));
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0, 0x10, 0]).unwrap();
        assert!(c.extended && c.data.is_empty());
        assert_eq!(c.le, Some(0x1000));
    }

    #[test]
    fn encoding_round_trips() {
        for c in [
            Command {
                cla: 0x10,
                ins: 0xDB,
                p1: 0x3F,
                p2: 0xFF,
                data: vec![1; 255],
                le: None,
                extended: false,
            },
            Command {
                cla: 0,
                ins: 0xCB,
                p1: 0x3F,
                p2: 0xFF,
                data: vec![1; 5],
                le: Some(256),
                extended: false,
            },
            Command {
                cla: 0,
                ins: 0xCB,
                p1: 0x3F,
                p2: 0xFF,
                data: vec![1; 700],
                le: Some(65536),
                extended: true,
            },
        ] {
            assert_eq!(Command::parse(&c.encode()).unwrap(), c);
        }
        assert!(Command::parse(&[0x10, 0xDB, 0, 0]).unwrap().is_chained());
    }

    #[test]
    fn responses_end_with_the_status_word() {
        assert_eq!(Response::ok(vec![5, 4, 3]).encode(), vec![5, 4, 3, 0x90, 0]);
        assert_eq!(
            Response::status(sw::verify_fail(2)).encode(),
            vec![0x63, 0xC2]
        );
    }
}
