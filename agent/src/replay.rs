//! Used ticket ids, kept in a small file in the state directory until their
//! ticket has expired, so that a ticket cannot be replayed — not even after
//! the agent restarts.
//!
//! Why a file and not "refuse tickets issued before this process started":
//! that rule compares the server's clock with the workstation's, so a few
//! seconds of skew would either refuse fresh tickets right after a start or
//! (skew the other way) accept a replay of a ticket issued just before it. The
//! file depends on no clock agreement beyond the expiry itself. (A ticket is
//! also bound to the agent key fingerprint, and a restarted agent has a new
//! key, so a replay after a restart fails twice over; within one process life
//! the store is the only thing that stops it.)

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const FILE_NAME: &str = "used-tickets.json";

/// How long an id is kept after its ticket expired. Far longer than needed
/// while the clock runs forward; it also covers the workstation clock being
/// set back by up to an hour (which would make an expired ticket look valid).
const RETENTION_AFTER_EXPIRY_SECS: i64 = 3600;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsedFile {
    /// Ticket id → its `expires_at` (unix seconds).
    used: HashMap<Uuid, i64>,
}

#[derive(Debug)]
pub struct ReplayStore {
    path: PathBuf,
    used: Mutex<HashMap<Uuid, i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("ticket already used")]
    Replayed,
    #[error("could not record the used ticket: {0:#}")]
    Io(anyhow::Error),
}

impl ReplayStore {
    /// Open (or create) the store in `dir`. A corrupt file is an error: the
    /// agent will not run without knowing which tickets it has used.
    pub fn open(dir: &Path, now: i64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create state directory {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let mut used = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<UsedFile>(&bytes)
                .with_context(|| {
                    format!(
                        "{} is corrupt; it only holds ids of recently used tickets, so deleting it is safe once the agent has been stopped for two minutes",
                        path.display()
                    )
                })?
                .used,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        prune(&mut used, now);
        let store = Self {
            path,
            used: Mutex::new(used),
        };
        // Fail at start, not at the first operation, if the directory is not writable.
        store.persist(&store.lock())?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i64>> {
        // A poisoned lock only means another thread panicked mid-update; the map is still usable.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_used(&self, id: &Uuid) -> bool {
        self.lock().contains_key(id)
    }

    /// Atomically check that `id` is unused and record it durably.
    pub fn check_and_record(&self, id: Uuid, expires_at: i64, now: i64) -> Result<(), RecordError> {
        let mut used = self.lock();
        if used.contains_key(&id) {
            return Err(RecordError::Replayed);
        }
        prune(&mut used, now);
        used.insert(id, expires_at);
        if let Err(e) = self.persist(&used) {
            used.remove(&id);
            return Err(RecordError::Io(e));
        }
        Ok(())
    }

    fn persist(&self, used: &HashMap<Uuid, i64>) -> Result<()> {
        let body = serde_json::to_vec(&UsedFile { used: used.clone() })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f =
                std::fs::File::create(&tmp).with_context(|| format!("write {}", tmp.display()))?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replace {}", self.path.display()))?;
        Ok(())
    }
}

fn prune(used: &mut HashMap<Uuid, i64>, now: i64) {
    used.retain(|_, exp| *exp + RETENTION_AFTER_EXPIRY_SECS >= now);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_ticket_is_refused_again_after_reopening_the_store() {
        let dir = std::env::temp_dir().join(format!("kleidia-agent-replay-{}", Uuid::new_v4()));
        let id = Uuid::new_v4();
        {
            let s = ReplayStore::open(&dir, 1_000).unwrap();
            s.check_and_record(id, 1_100, 1_000).unwrap();
            assert!(matches!(
                s.check_and_record(id, 1_100, 1_001),
                Err(RecordError::Replayed)
            ));
        }
        let s = ReplayStore::open(&dir, 1_050).unwrap();
        assert!(s.is_used(&id));
        // An hour after expiry the id is forgotten (the ticket is refused as expired anyway).
        let s = ReplayStore::open(&dir, 1_100 + 3_599).unwrap();
        assert!(s.is_used(&id));
        let s = ReplayStore::open(&dir, 1_100 + 3_601).unwrap();
        assert!(!s.is_used(&id));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_store_stops_the_agent_from_starting() {
        let dir = std::env::temp_dir().join(format!("kleidia-agent-replay-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        assert!(ReplayStore::open(&dir, 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
