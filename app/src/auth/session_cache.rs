//! A short-lived, in-process cache of "who is this session": the
//! `user_sessions` ⋈ `users` row that every signed-in request needs.
//!
//! Without it each request asks PostgreSQL twice (the session, then the
//! page's own query). With it a replica asks once per session per
//! `session.cache_secs` (default 1 s, at most [`MAX_CACHE_SECS`]).
//!
//! The bound, and what it means (docs/security.md, "Sessions"): a logout,
//! disabling an account, a password reset or a role change made on this
//! replica through the web app or the API forgets the cached entries at
//! once (after the transaction commits); made on another replica or with
//! the CLI, it takes effect here within `session.cache_secs`. An entry is
//! never served past that age, whatever else happens. The cache holds no
//! secret: the session id (the row's UUID, not the cookie or the token,
//! which are verified on every request before the cache is consulted) and
//! the user's public profile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{CurrentUser, SessionKind};

/// The longest `session.cache_secs` the configuration accepts.
pub use crate::config::MAX_SESSION_CACHE_SECS as MAX_CACHE_SECS;

/// More entries than this (distinct live sessions seen within one TTL) and
/// the cache drops what it holds rather than grow: memory stays bounded.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone)]
struct Entry {
    user: CurrentUser,
    /// `user_sessions.last_seen_at` as this replica last knew it.
    last_seen: OffsetDateTime,
    fetched: Instant,
}

#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

impl SessionCache {
    /// `ttl` zero: nothing is ever cached.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl: ttl.min(Duration::from_secs(MAX_CACHE_SECS)),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding the lock leaves a plain map behind: usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached user of session `id` of this kind and its last-seen time,
    /// if fetched less than the TTL ago.
    pub fn get(&self, id: Uuid, kind: SessionKind) -> Option<(CurrentUser, OffsetDateTime)> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.lock();
        let fresh = match map.get(&id) {
            Some(e) if e.fetched.elapsed() < self.ttl => e.user.via == kind,
            Some(_) => {
                map.remove(&id);
                return None;
            }
            None => return None,
        };
        if !fresh {
            return None;
        }
        map.get(&id).map(|e| (e.user.clone(), e.last_seen))
    }

    /// Remember what PostgreSQL just said about session `user.session_id`.
    pub fn put(&self, user: &CurrentUser, last_seen: OffsetDateTime) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            map.retain(|_, e| e.fetched.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            user.session_id,
            Entry {
                user: user.clone(),
                last_seen,
                fetched: Instant::now(),
            },
        );
    }

    /// The session's last-seen time was just written (`sessions::touch`).
    pub fn touched(&self, id: Uuid, at: OffsetDateTime) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.last_seen = at;
        }
    }

    /// Session `id` ended here (logout): forget it now.
    pub fn forget_session(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// Something about this account changed here (disabled, password reset,
    /// role, sessions ended): forget all its sessions now.
    pub fn forget_user(&self, user_id: Uuid) {
        self.lock().retain(|_, e| e.user.user_id != user_id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn user(session_id: Uuid, user_id: Uuid, via: SessionKind) -> CurrentUser {
        CurrentUser {
            user_id,
            username: "ann".into(),
            display_name: "Ann".into(),
            email: None,
            role: Role::Admin,
            session_id,
            via,
            must_change_password: false,
        }
    }

    #[test]
    fn an_entry_is_served_only_for_its_kind_and_within_the_ttl() {
        let cache = SessionCache::new(Duration::from_millis(200));
        let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
        let now = OffsetDateTime::now_utc();
        cache.put(&user(sid, uid, SessionKind::Api), now);
        let (u, seen) = cache.get(sid, SessionKind::Api).expect("cached");
        assert_eq!((u.user_id, seen), (uid, now));
        // A browser lookup of an API session's id finds nothing.
        assert!(cache.get(sid, SessionKind::Browser).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get(sid, SessionKind::Api).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when met");
    }

    #[test]
    fn forgetting_a_session_or_a_user_takes_effect_at_once() {
        let cache = SessionCache::new(Duration::from_secs(10));
        let now = OffsetDateTime::now_utc();
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (a1, a2, b1) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(&user(a1, ann, SessionKind::Browser), now);
        cache.put(&user(a2, ann, SessionKind::Api), now);
        cache.put(&user(b1, bob, SessionKind::Api), now);
        cache.forget_session(a1);
        assert!(cache.get(a1, SessionKind::Browser).is_none());
        assert!(cache.get(a2, SessionKind::Api).is_some());
        cache.forget_user(ann);
        assert!(cache.get(a2, SessionKind::Api).is_none());
        assert!(
            cache.get(b1, SessionKind::Api).is_some(),
            "bob is untouched"
        );
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_the_ttl_is_capped() {
        let off = SessionCache::new(Duration::ZERO);
        let sid = Uuid::new_v4();
        off.put(
            &user(sid, Uuid::new_v4(), SessionKind::Api),
            OffsetDateTime::now_utc(),
        );
        assert!(off.get(sid, SessionKind::Api).is_none());
        assert!(off.is_empty());
        let capped = SessionCache::new(Duration::from_secs(3600));
        assert_eq!(capped.ttl, Duration::from_secs(MAX_CACHE_SECS));
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let cache = SessionCache::new(Duration::from_secs(10));
        let now = OffsetDateTime::now_utc();
        for _ in 0..MAX_ENTRIES + 10 {
            cache.put(&user(Uuid::new_v4(), Uuid::new_v4(), SessionKind::Api), now);
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }
}
