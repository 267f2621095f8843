//! A short cache for the public PKI documents (`/pki/ca`, `/pki/crl`, …), so
//! that relying parties polling the CRL do not each cost an OpenBao request.
//! A CRL rebuild through this replica clears it at once; other replicas
//! catch up within [`TTL`].
//!
//! It also carries the replica's CRL rebuild requests: a revocation asks
//! for a rebuild ([`PkiCache::want_crl`]) and `fleet::pki::run_crl_rebuilds`
//! makes them, one at a time, coalescing the ones asked meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct PkiCache {
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
    /// Bumped by every invalidation: a document fetched before one is not
    /// cached after it.
    generation: AtomicU64,
    /// A revocation since the last CRL rebuild started.
    crl_wanted: AtomicBool,
    crl_wake: tokio::sync::Notify,
}

impl PkiCache {
    /// Ask for a CRL rebuild (after a revocation).
    pub fn want_crl(&self) {
        self.crl_wanted.store(true, Ordering::SeqCst);
        self.crl_wake.notify_one();
    }

    /// Take the request for a CRL rebuild, if there is one.
    pub fn take_crl_wanted(&self) -> bool {
        self.crl_wanted.swap(false, Ordering::SeqCst)
    }

    /// Until a rebuild is asked for.
    pub async fn crl_wanted(&self) {
        self.crl_wake.notified().await;
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// [`put`](Self::put) unless the cache was invalidated since `generation`.
    pub fn put_if_current(&self, key: &str, value: Vec<u8>, generation: u64) {
        if let Ok(mut map) = self.entries.lock() {
            if self.generation() == generation {
                map.insert(key.to_string(), (Instant::now(), value));
            }
        }
    }

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
            self.generation.fetch_add(1, Ordering::SeqCst);
            map.clear();
        }
    }
}
