//! Argon2id password hashing with OWASP's parameters (19 MiB, t=2, p=1),
//! run on the blocking pool behind a semaphore so a burst of sign-ins can
//! neither starve the async workers nor exhaust memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::error::AppError;

pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn argon2() -> Result<Argon2<'static>, AppError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// True when `phc` was made with other parameters than today's.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return true;
    };
    let p = |name: &str| h.params.get_decimal(name);
    h.algorithm.as_str() != "argon2id"
        || h.version != Some(0x13)
        || p("m") != Some(M_COST_KIB)
        || p("t") != Some(T_COST)
        || p("p") != Some(P_COST)
}

pub fn hash_blocking(password: &str) -> Result<String, AppError> {
    hash_with(password.as_bytes(), &mut Vec::new())
}

/// Hash `password` with today's parameters in `memory` (grown to size,
/// wiped after use), as a PHC string.
fn hash_with(password: &[u8], memory: &mut Vec<Block>) -> Result<String, AppError> {
    let fail = |e: &dyn std::fmt::Display| AppError::Internal(anyhow::anyhow!("argon2 hash: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let hasher = argon2()?;
    let blocks = hasher.params().block_count();
    grow(memory, blocks);
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| fail(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let hashed = hasher.hash_password_into_with_memory(
        password,
        salt_bytes,
        &mut out,
        &mut memory[..blocks],
    );
    memory[..blocks].fill(Block::default());
    hashed.map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: hasher.params().try_into().map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    }
    .to_string();
    out.fill(0);
    Ok(phc)
}

/// Constant work whatever the input: an unparsable hash still costs a hash.
fn verify_blocking(password: &str, phc: &str, dummy: &str, memory: &mut Vec<Block>) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => verify_with(password.as_bytes(), &h, memory),
        Err(_) => {
            if let Ok(h) = PasswordHash::new(dummy) {
                let _ = verify_with(password.as_bytes(), &h, memory);
            }
            false
        }
    }
}

/// Check `password` against the PHC hash `h` (Argon2 only), in `memory`:
/// the Argon2 blocks are reused from one sign-in to the next (grown if a
/// stored hash asks for more, e.g. from older parameters) and wiped after
/// each use. The comparison is constant-time (`password_hash::Output`).
fn verify_with(password: &[u8], h: &PasswordHash<'_>, memory: &mut Vec<Block>) -> bool {
    let (Ok(alg), Some(expected), Some(salt)) = (Algorithm::try_from(h.algorithm), h.hash, h.salt)
    else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(h) else {
        return false;
    };
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    grow(memory, blocks);
    let mut out = vec![0u8; expected.len()];
    let ok = Argon2::new(alg, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && Output::new(&out).is_ok_and(|o| o == expected);
    // The blocks hold values derived from the password.
    memory[..blocks].fill(Block::default());
    out.fill(0);
    ok
}

/// The Argon2 memory of the hashes that run: at most one block array per
/// permit exists (a hash takes one, or makes one when none is free, and
/// gives it back wiped), so the memory sign-ins use is
/// `auth.hash_concurrency` × 19 MiB whatever the load. The arrays are kept
/// only while sign-ins are in progress: when the last one in line is done,
/// they are dropped and their pages go back to the system (see
/// [`RESERVED_BLOCKS`]): an idle server holds no Argon2 memory.
#[derive(Default)]
struct MemoryPool {
    free: std::sync::Mutex<Vec<Vec<Block>>>,
    /// Hashes in progress or waiting for a permit.
    users: AtomicUsize,
    /// Block arrays made so far (the tests count them).
    made: AtomicUsize,
}

impl MemoryPool {
    /// Count a hash as in progress until the guard is dropped.
    fn enter(self: &Arc<Self>) -> PoolUse {
        self.users.fetch_add(1, Ordering::SeqCst);
        PoolUse(self.clone())
    }

    fn take(&self) -> Vec<Block> {
        self.free
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| {
                self.made.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            })
    }

    /// Give a wiped array back; the last hash in progress (`users` counts
    /// the caller) drops them all instead.
    fn give_back(&self, memory: Vec<Block>) {
        if self.users.load(Ordering::SeqCst) <= 1 {
            drop(memory);
            self.release();
        } else if let Ok(mut v) = self.free.lock() {
            v.push(memory);
        }
    }

    fn release(&self) {
        let arrays = self.free.lock().map(|mut v| std::mem::take(&mut *v));
        drop(arrays);
    }
}

/// A hash in progress (see [`MemoryPool::enter`]).
struct PoolUse(Arc<MemoryPool>);

impl Drop for PoolUse {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Room reserved per block array (Argon2 blocks are 1 KiB), of which only
/// the parameters' count (19 MiB) is ever touched. An allocation this large
/// is above glibc's largest mmap threshold (32 MiB on 64-bit), so it is
/// always a mapping of its own and freeing it unmaps it: the pages go back
/// to the system at once. A 19 MiB allocation would, after the first free,
/// be served from a malloc arena that keeps its memory. The untouched rest
/// is address space, not memory.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Make `memory` hold `blocks` zeroed blocks (see [`RESERVED_BLOCKS`]).
fn grow(memory: &mut Vec<Block>, blocks: usize) {
    if memory.len() < blocks {
        let room = RESERVED_BLOCKS.max(blocks);
        if memory.capacity() < room {
            memory.reserve_exact(room - memory.len());
        }
        memory.resize(blocks, Block::default());
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses old parameters: store a fresh one.
    pub needs_rehash: bool,
}

/// Sign-ins that may wait for a hash beyond those running, by default.
pub const DEFAULT_HASH_QUEUE: usize = 256;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Sign-ins holding a [`QueuePlace`] (running or waiting).
    in_line: Arc<AtomicUsize>,
    /// At most this many at once: `concurrency + queue`.
    max_in_line: usize,
    /// A hash of a random password: verified against when the username is
    /// unknown, so an unknown name costs exactly what a known one does.
    dummy: Arc<String>,
    /// The Argon2 memory of the verifications that run.
    memory: Arc<MemoryPool>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub async fn new(concurrency: usize) -> Result<Self, AppError> {
        let dummy = tokio::task::spawn_blocking(|| hash_blocking(&generate_password()))
            .await
            .map_err(|e| AppError::Internal(e.into()))??;
        let concurrency = concurrency.max(1);
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            in_line: Arc::new(AtomicUsize::new(0)),
            max_in_line: concurrency + DEFAULT_HASH_QUEUE,
            dummy: Arc::new(dummy),
            memory: Arc::default(),
        })
    }

    /// Let at most `queue` sign-ins wait beyond the `concurrency` running.
    pub fn with_queue(mut self, queue: usize) -> Self {
        self.max_in_line = self.permits.available_permits() + queue;
        self
    }

    /// A place in the sign-in line, or `None` when it is full (the caller
    /// answers 503 with `Retry-After`, having done nothing). Memory stays
    /// bounded: no more than `concurrency + queue` sign-ins are in progress.
    pub fn queue_place(&self) -> Option<QueuePlace> {
        let before = self.in_line.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_in_line {
            self.in_line.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(QueuePlace(self.in_line.clone()))
    }

    /// Run `f` on the blocking pool with a permit and a block array from
    /// the pool (counted as in progress from before the wait for the
    /// permit, given back after `f`).
    async fn in_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let in_progress = self.memory.enter();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = pool.take();
            let out = f(&mut memory);
            pool.give_back(memory);
            drop(in_progress);
            out
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, AppError> {
        let pw = password.clone();
        self.in_pool(move |memory| hash_with(pw.expose_secret().as_bytes(), memory))
            .await?
    }

    /// Check `password` against `phc`, or against the dummy hash when there
    /// is no account (the answer is then always "no").
    pub async fn verify(
        &self,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Result<Verified, AppError> {
        let pw = password.clone();
        let known = phc.is_some();
        let stale = phc.is_some_and(needs_rehash);
        let phc = phc.unwrap_or(&self.dummy).to_string();
        let dummy = self.dummy.clone();
        let ok = self
            .in_pool(move |memory| verify_blocking(pw.expose_secret(), &phc, &dummy, memory))
            .await?;
        let ok = ok && known;
        Ok(Verified {
            ok,
            needs_rehash: ok && stale,
        })
    }
}

/// A place in the sign-in line; given back when dropped.
pub struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A new password someone else will type once: 20 characters from an
/// alphabet without look-alikes, from the OS CSPRNG (~115 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    let mut buf = [0u8; 1];
    while out.len() < 20 {
        OsRng.fill_bytes(&mut buf);
        // Rejection sampling keeps the distribution uniform.
        let v = buf[0] as usize;
        if v < 256 - (256 % ALPHABET.len()) {
            out.push(ALPHABET[v % ALPHABET.len()] as char);
        }
    }
    out
}

/// Rules for a password a person chooses.
pub fn check_new_password(pw: &str) -> Result<(), AppError> {
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AppError::Unprocessable(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::Unprocessable("the password is too long".into()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let p = Passwords::new(2).await.unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let h = p.hash(&pw).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(
            p.verify(&pw, Some(&h)).await.unwrap(),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        let wrong = SecretString::from("correct horse battery stapler");
        assert!(!p.verify(&wrong, Some(&h)).await.unwrap().ok);
        // No account: the dummy hash is checked and the answer is no, even for
        // the dummy's own password (which nobody knows anyway).
        assert!(!p.verify(&pw, None).await.unwrap().ok);
        assert!(!p.verify(&pw, Some("not a phc string")).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_hash_with_older_parameters_verifies_and_asks_for_a_rehash() {
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let h = argon2::password_hash::PasswordHasher::hash_password(
            &old,
            b"an old password here",
            &salt,
        )
        .unwrap()
        .to_string();
        let p = Passwords::new(1).await.unwrap();
        let v = p
            .verify(&SecretString::from("an old password here"), Some(&h))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        assert!(!needs_rehash(&hash_blocking("x").unwrap()));
    }

    #[tokio::test]
    async fn the_line_holds_concurrency_plus_queue_and_frees_places_when_dropped() {
        let p = Passwords::new(2).await.unwrap().with_queue(3);
        let places: Vec<_> = (0..5).map(|_| p.queue_place()).collect();
        assert!(places.iter().all(Option::is_some));
        assert!(p.queue_place().is_none());
        drop(places);
        assert!(p.queue_place().is_some());
    }

    #[tokio::test]
    async fn concurrent_sign_ins_share_one_argon2_memory_per_permit() {
        let p = Passwords::new(2).await.unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let h = p.hash(&pw).await.unwrap();
        // The hash was alone: its array is gone already.
        assert_eq!(p.memory.made.load(Ordering::Relaxed), 1);
        assert!(p.memory.free.lock().unwrap().is_empty());
        let checks: Vec<_> = (0..8)
            .map(|i| {
                let (p, h) = (p.clone(), h.clone());
                let pw = SecretString::from(if i % 2 == 0 {
                    "correct horse battery staple"
                } else {
                    "a wrong password, surely"
                });
                tokio::spawn(async move { p.verify(&pw, Some(&h)).await.unwrap().ok })
            })
            .collect();
        let mut oks = Vec::new();
        for c in checks {
            oks.push(c.await.unwrap());
        }
        assert_eq!(oks, [true, false, true, false, true, false, true, false]);
        // Eight verifications on two permits: at most one array per permit
        // was made for them, and once nobody is in line the arrays are gone
        // (an idle server keeps no Argon2 memory).
        let made = p.memory.made.load(Ordering::Relaxed) - 1;
        assert!((1..=2).contains(&made), "{made} arrays made");
        assert!(p.memory.free.lock().unwrap().is_empty());
        assert_eq!(p.memory.users.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_array_kept_for_the_next_sign_in_is_wiped() {
        let p = Passwords::new(1).await.unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let h = p.hash(&pw).await.unwrap();
        // Someone else is in line: the array stays in the pool, wiped.
        let waiting = p.memory.enter();
        assert!(p.verify(&pw, Some(&h)).await.unwrap().ok);
        {
            let pool = p.memory.free.lock().unwrap();
            assert_eq!(pool.len(), 1);
            assert_eq!(pool[0].len(), M_COST_KIB as usize);
            assert!(pool[0].iter().all(|b| b.as_ref().iter().all(|x| *x == 0)));
        }
        drop(waiting);
        // The next one to finish alone drops it.
        assert!(
            !p.verify(&SecretString::from("wrong"), Some(&h))
                .await
                .unwrap()
                .ok
        );
        assert!(p.memory.free.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn hashes_made_in_the_pool_verify_with_the_argon2_crate_itself() {
        use argon2::password_hash::PasswordVerifier;
        let p = Passwords::new(1).await.unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let phc = p.hash(&pw).await.unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery staple", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"correct horse battery stapler", &parsed)
            .is_err());
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!needs_rehash(&phc));
        // Two hashes of one password differ (a fresh salt each).
        assert_ne!(phc, p.hash(&pw).await.unwrap());
    }

    #[test]
    fn generated_passwords_are_long_and_different() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(check_new_password(&a).is_ok());
        assert!(check_new_password("short").is_err());
    }
}
