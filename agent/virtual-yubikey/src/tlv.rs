//! BER-TLV as the PIV applet uses it: one- or two-byte tags, definite lengths
//! in the short form or `81 xx` / `82 xx xx`.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TlvError {
    #[error("TLV data ends early")]
    Truncated,
    #[error("TLV length form is not supported")]
    BadLength,
}

/// One parsed element; `value` borrows from the input.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u16,
    pub value: &'a [u8],
}

/// Encode a length in BER definite form.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.push(0x81);
        out.push(len as u8);
    } else {
        out.push(0x82);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

/// Encode one element. Tags above 0xFF are written as two bytes.
pub fn encode(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 5);
    encode_into(tag, value, &mut out);
    out
}

pub fn encode_into(tag: u16, value: &[u8], out: &mut Vec<u8>) {
    if tag > 0xFF {
        out.push((tag >> 8) as u8);
    }
    out.push(tag as u8);
    encode_len(value.len(), out);
    out.extend_from_slice(value);
}

/// Parse one element from the front of `input`; returns it and the rest.
pub fn parse(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (&first, rest) = input.split_first().ok_or(TlvError::Truncated)?;
    // Low five bits all set: the tag continues in the next byte.
    let (tag, rest) = if first & 0x1F == 0x1F {
        let (&second, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
        ((u16::from(first) << 8) | u16::from(second), rest)
    } else {
        (u16::from(first), rest)
    };
    let (&l0, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => {
            let (&l1, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
            (usize::from(l1), rest)
        }
        0x82 => {
            if rest.len() < 2 {
                return Err(TlvError::Truncated);
            }
            (
                (usize::from(rest[0]) << 8) | usize::from(rest[1]),
                &rest[2..],
            )
        }
        _ => return Err(TlvError::BadLength),
    };
    if rest.len() < len {
        return Err(TlvError::Truncated);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Parse a sequence of elements that fills `input` exactly.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = parse(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// The value of the first element with `tag` in a sequence.
pub fn find<'a>(items: &[Tlv<'a>], tag: u16) -> Option<&'a [u8]> {
    items.iter().find(|t| t.tag == tag).map(|t| t.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_long_and_two_byte_lengths_round_trip() {
        for len in [0usize, 1, 0x7F, 0x80, 0xFF, 0x100, 3000] {
            let value = vec![0xAB; len];
            let enc = encode(0x53, &value);
            let (tlv, rest) = parse(&enc).unwrap();
            assert_eq!(tlv.tag, 0x53);
            assert_eq!(tlv.value, &value[..]);
            assert!(rest.is_empty());
        }
        assert_eq!(encode(0x53, &[0; 0x80])[..3], [0x53, 0x81, 0x80]);
        assert_eq!(encode(0x53, &[0; 0x100])[..4], [0x53, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn two_byte_tags_are_recognised() {
        let enc = encode(0x7F49, &[0x86, 0x01, 0x04]);
        assert_eq!(enc[..3], [0x7F, 0x49, 0x03]);
        let (tlv, _) = parse(&enc).unwrap();
        assert_eq!(tlv.tag, 0x7F49);
        let inner = parse_all(tlv.value).unwrap();
        assert_eq!(find(&inner, 0x86), Some(&[0x04][..]));
    }

    #[test]
    fn truncated_and_unsupported_lengths_are_errors() {
        assert_eq!(parse(&[0x53, 0x05, 1, 2]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x53]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x53, 0x83, 0, 0, 1]), Err(TlvError::BadLength));
        assert_eq!(parse(&[0x5F]), Err(TlvError::Truncated));
    }

    #[test]
    fn a_sequence_is_parsed_in_order() {
        let mut buf = encode(0x80, &[]);
        buf.extend(encode(0x81, &[1, 2, 3]));
        let items = parse_all(&buf).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0],
            Tlv {
                tag: 0x80,
                value: &[]
            }
        );
        assert_eq!(find(&items, 0x81), Some(&[1, 2, 3][..]));
        assert_eq!(find(&items, 0x82), None);
    }
}
