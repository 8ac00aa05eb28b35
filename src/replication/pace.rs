//! How much of a serving node's time a full copy to the peer may take. With no client
//! traffic the copy runs flat out; while clients keep the node busy it gets a share of the
//! time (`--repl-copy-share`), so a peer joining or resyncing does not take the node away
//! from its clients.

use std::time::{Duration, Instant};

/// Work a copy may bank while it waits, so it resumes in short slices, not long bursts.
const MAX_BURST: Duration = Duration::from_micros(500);
/// A paused copy resumes once it has earned this much: slices much shorter would cost a
/// wake-up each for little work.
const RESUME: Duration = Duration::from_micros(250);
/// A copy still running after this long stops yielding: the peer may be a starting node
/// that gives up and serves alone after its bootstrap timeout (60 s by default).
const YIELD_FOR: Duration = Duration::from_secs(30);

pub(crate) struct CopyPace {
    /// Percent of the time, 1 to 100 (100: no limit).
    share: u32,
    /// Copy time still allowed, in nanoseconds; negative after an overrun.
    budget_ns: i64,
    paused: bool,
    last: Instant,
    /// When the current copy started.
    begun: Instant,
}

impl CopyPace {
    pub(crate) fn new(share_percent: u8, now: Instant) -> CopyPace {
        CopyPace {
            share: u32::from(share_percent.clamp(1, 100)),
            budget_ns: MAX_BURST.as_nanos() as i64,
            paused: false,
            last: now,
            begun: now,
        }
    }

    /// A new copy starts.
    pub(crate) fn begin(&mut self, now: Instant) {
        self.begun = now;
    }

    /// Whether the copy may go on now, and for how long; otherwise when it may resume.
    pub(crate) fn allow(
        &mut self,
        now: Instant,
        clients_active: bool,
    ) -> Result<Duration, Instant> {
        let cap = MAX_BURST.as_nanos() as i64;
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = now;
        let overdue = now.saturating_duration_since(self.begun) >= YIELD_FOR;
        if !clients_active || self.share >= 100 || overdue {
            self.budget_ns = cap;
            self.paused = false;
            return Ok(Duration::MAX);
        }
        let earned = (elapsed * u128::from(self.share) / 100).min(cap as u128) as i64;
        self.budget_ns = (self.budget_ns + earned).min(cap);
        let resume = RESUME.as_nanos() as i64;
        self.paused = if self.paused {
            self.budget_ns < resume
        } else {
            self.budget_ns <= 0
        };
        if !self.paused {
            return Ok(Duration::from_nanos(self.budget_ns.max(0) as u64));
        }
        let short = (resume - self.budget_ns) as u128;
        let wait_ns = (short * 100).div_ceil(u128::from(self.share));
        Err(now + Duration::from_nanos(wait_ns.min(u128::from(u64::MAX)) as u64))
    }

    /// Records time the copy took (its share of the loop: encoding and sending).
    pub(crate) fn charge(&mut self, spent: Duration) {
        let ns = spent.as_nanos().min(i64::MAX as u128) as i64;
        self.budget_ns = self.budget_ns.saturating_sub(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a copy that always wants to work, in 100 us steps of simulated time, and returns
    /// the share of the time it got.
    fn share_taken(share: u8, clients: bool) -> f64 {
        let t0 = Instant::now();
        let mut p = CopyPace::new(share, t0);
        let step = Duration::from_micros(100);
        let mut now = t0;
        let mut worked = Duration::ZERO;
        let end = t0 + Duration::from_secs(2);
        while now < end {
            match p.allow(now, clients) {
                Ok(room) => {
                    let w = room.min(step);
                    p.charge(w);
                    worked += w;
                    now += w;
                }
                Err(until) => {
                    assert!(until > now, "a pause ends in the future");
                    now = until;
                }
            }
        }
        worked.as_secs_f64() / (now - t0).as_secs_f64()
    }

    #[test]
    fn with_clients_the_copy_gets_its_share() {
        for share in [1u8, 5, 20, 50] {
            let got = share_taken(share, true);
            let want = f64::from(share) / 100.0;
            assert!(
                (got - want).abs() < want * 0.1 + 0.002,
                "share {share}: got {got}"
            );
        }
    }

    #[test]
    fn without_clients_or_at_100_percent_the_copy_runs_flat_out() {
        assert!(share_taken(5, false) > 0.99);
        assert!(share_taken(100, true) > 0.99);
    }

    #[test]
    fn a_copy_that_runs_long_stops_yielding() {
        let t0 = Instant::now();
        let mut p = CopyPace::new(5, t0);
        p.begin(t0);
        p.charge(Duration::from_millis(10));
        assert!(p.allow(t0 + Duration::from_millis(1), true).is_err());
        assert_eq!(p.allow(t0 + YIELD_FOR, true), Ok(Duration::MAX));
        p.begin(t0 + YIELD_FOR);
        p.charge(Duration::from_millis(10));
        assert!(p
            .allow(t0 + YIELD_FOR + Duration::from_millis(1), true)
            .is_err());
    }
}
