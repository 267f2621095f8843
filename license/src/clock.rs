//! The service's notion of "now".
//!
//! Normally the system clock. For tests, `test_now` (env
//! `KLEIDIA_LICENSE_TEST_NOW`) starts the clock at a given time and lets it
//! run from there. It is compiled into every build but can only move the
//! clock forward: a `test_now` earlier than the system clock is refused at
//! start. Moving forward can only end a trial or license sooner, and the
//! high-water mark it leaves in OpenBao keeps it that way, so the override
//! gives a customer nothing.

use std::time::Instant;

use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// Runs from `start`, which was at `anchor` on the monotonic clock.
    Shifted {
        start: OffsetDateTime,
        anchor: Instant,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("test_now {0} is earlier than the system clock; it may only move the clock forward")]
pub struct BackwardTestClock(OffsetDateTime);

impl Clock {
    pub fn new(test_now: Option<OffsetDateTime>) -> Result<Self, BackwardTestClock> {
        match test_now {
            None => Ok(Clock::System),
            // One second of slack for the time between the caller computing
            // "now" and this process starting.
            Some(t) if t + time::Duration::seconds(1) < OffsetDateTime::now_utc() => {
                Err(BackwardTestClock(t))
            }
            Some(t) => Ok(Clock::Shifted {
                start: t,
                anchor: Instant::now(),
            }),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Shifted { start, anchor } => {
                let elapsed =
                    time::Duration::try_from(anchor.elapsed()).unwrap_or(time::Duration::ZERO);
                *start + elapsed
            }
        }
    }

    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_in_the_past_is_refused() {
        let past = OffsetDateTime::now_utc() - time::Duration::days(1);
        assert!(Clock::new(Some(past)).is_err());
    }

    #[test]
    fn a_test_clock_in_the_future_starts_there_and_runs() {
        let future = OffsetDateTime::now_utc() + time::Duration::days(100);
        let c = Clock::new(Some(future)).unwrap();
        let a = c.now();
        assert!(a >= future && a < future + time::Duration::minutes(1));
        assert!(c.now() >= a);
    }
}
