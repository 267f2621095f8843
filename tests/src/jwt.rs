//! Forging JWTs for the tests that check which tokens the app refuses.

use serde_json::{json, Value};

/// HMAC-SHA-256/512 over `data` (for forging tokens in tests).
pub fn hmac(alg: &str, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<D: sha2::Digest + Clone>(block: usize, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = D::new();
        inner.update(&ipad);
        inner.update(data);
        let mut outer = D::new();
        outer.update(&opad);
        outer.update(inner.finalize());
        outer.finalize().to_vec()
    }
    match alg {
        "HS512" => run::<sha2::Sha512>(128, key, data),
        _ => run::<sha2::Sha256>(64, key, data),
    }
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT with this header and these claims, signed with HMAC `alg` (or
/// unsigned for `none`).
pub fn forge_jwt(alg: &str, key: &[u8], claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    if alg == "none" {
        return format!("{signing_input}.");
    }
    let sig = hmac(alg, key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig))
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}
