//! A short cache for the public PKI documents (`/pki/ca`, `/pki/crl`, …), so
//! that relying parties polling the CRL do not each cost an OpenBao request.
//! A revocation through this replica clears it at once; other replicas catch
//! up within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct PkiCache {
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl PkiCache {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let map = self.entries.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: &str, value: Vec<u8>) {
        if let Ok(mut map) = self.entries.lock() {
            map.insert(key.to_string(), (Instant::now(), value));
        }
    }

    pub fn invalidate(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}
