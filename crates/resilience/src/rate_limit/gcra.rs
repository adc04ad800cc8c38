//! The GCRA core shared by the direct and the keyed limiter, and the
//! seqlock-protected parameters that let a quota change under load.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use super::{NotUntil, RateLimitError};
use crate::clock::Timestamp;

/// GCRA parameters in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// Emission interval `T`: the time one unit of cost takes to refill.
    pub(crate) interval: u64,
    /// `burst · T`: how far ahead of now the TAT may run.
    pub(crate) limit: u64,
    /// Burst capacity in units.
    pub(crate) burst: u32,
}

/// [`Params`] that readers load without locking and a (serialised) writer
/// replaces atomically: a sequence lock. Readers pay three plain loads and
/// two loads of the sequence number; a torn read is retried.
#[derive(Debug)]
pub(crate) struct ParamsCell {
    seq: AtomicU64,
    interval: AtomicU64,
    limit: AtomicU64,
    burst: AtomicU64,
}

impl ParamsCell {
    pub(crate) fn new(params: Params) -> Self {
        Self {
            seq: AtomicU64::new(0),
            interval: AtomicU64::new(params.interval),
            limit: AtomicU64::new(params.limit),
            burst: AtomicU64::new(u64::from(params.burst)),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> Params {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let interval = self.interval.load(Ordering::Relaxed);
                let limit = self.limit.load(Ordering::Relaxed);
                let burst = self.burst.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    // Stored from a u32, so it fits.
                    let burst = u32::try_from(burst).unwrap_or(u32::MAX);
                    return Params {
                        interval,
                        limit,
                        burst,
                    };
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Replaces the parameters. Callers must serialise stores (every caller
    /// holds the limiter's quota mutex).
    pub(crate) fn store(&self, params: Params) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.interval.store(params.interval, Ordering::Relaxed);
        self.limit.store(params.limit, Ordering::Relaxed);
        self.burst.store(u64::from(params.burst), Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

#[cold]
#[inline(never)]
fn insufficient(cost: u32, params: &Params) -> RateLimitError {
    RateLimitError::InsufficientCapacity {
        cost,
        burst: params.burst,
    }
}

/// Admits `cost` at `now` if the bucket has room, moving the TAT.
#[inline]
pub(crate) fn acquire(
    tat: &AtomicU64,
    params: &Params,
    now: u64,
    cost: u32,
) -> Result<(), RateLimitError> {
    if cost > params.burst {
        return Err(insufficient(cost, params));
    }
    // cost <= burst, so this cannot exceed `limit`, which fits in a u64.
    let increment = params.interval * u64::from(cost);
    let horizon = now.saturating_add(params.limit);
    // Relaxed is enough: the TAT publishes no other data, and all updates
    // of this one location are totally ordered by the CAS.
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        let next = current.max(now).saturating_add(increment);
        if next > horizon {
            return Err(limited(next, params, now));
        }
        match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// Whether `cost` would be admitted at `now`, without consuming anything.
#[inline]
pub(crate) fn peek(tat: u64, params: &Params, now: u64, cost: u32) -> Result<(), RateLimitError> {
    if cost > params.burst {
        return Err(insufficient(cost, params));
    }
    let next = tat
        .max(now)
        .saturating_add(params.interval * u64::from(cost));
    if next > now.saturating_add(params.limit) {
        return Err(limited(next, params, now));
    }
    Ok(())
}

#[inline]
fn limited(next: u64, params: &Params, now: u64) -> RateLimitError {
    RateLimitError::Limited(NotUntil {
        ready_at: Timestamp::from_nanos(next - params.limit),
        now: Timestamp::from_nanos(now),
    })
}

/// Re-expresses the cost consumed so far (the TAT's lead over `now`) from
/// the units of `old` in those of `new`, so that a quota change keeps the
/// number of units used: 8 of 10 used stays 8 used, now of 20.
pub(crate) fn rescale(tat: &AtomicU64, old: &Params, new: &Params, now: u64) {
    if old.interval == new.interval {
        return;
    }
    // fetch_update fails only when the closure declines (nothing owed).
    let _ = tat.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
        (current > now).then(|| {
            let owed = u128::from(current - now) * u128::from(new.interval)
                / u128::from(old.interval.max(1));
            now.saturating_add(u64::try_from(owed).unwrap_or(u64::MAX))
        })
    });
}

/// The whole units of cost available at `now`.
pub(crate) fn available(tat: u64, params: &Params, now: u64) -> u32 {
    let used = tat.saturating_sub(now);
    let free = params.limit.saturating_sub(used) / params.interval.max(1);
    u32::try_from(free).unwrap_or(u32::MAX).min(params.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        interval: 10,
        limit: 30,
        burst: 3,
    };

    #[test]
    fn admits_burst_then_refills() {
        let tat = AtomicU64::new(0);
        for _ in 0..3 {
            acquire(&tat, &P, 100, 1).unwrap();
        }
        let err = acquire(&tat, &P, 100, 1).unwrap_err();
        assert_eq!(err.wait_time(), Some(std::time::Duration::from_nanos(10)));
        assert_eq!(err.ready_at(), Some(Timestamp::from_nanos(110)));
        acquire(&tat, &P, 110, 1).unwrap();
        assert!(acquire(&tat, &P, 110, 1).is_err());
    }

    #[test]
    fn cost_counts_several_units() {
        let tat = AtomicU64::new(0);
        acquire(&tat, &P, 100, 2).unwrap();
        assert_eq!(available(tat.load(Ordering::Relaxed), &P, 100), 1);
        assert!(peek(tat.load(Ordering::Relaxed), &P, 100, 2).is_err());
        assert!(matches!(
            acquire(&tat, &P, 100, 4),
            Err(RateLimitError::InsufficientCapacity { cost: 4, burst: 3 })
        ));
        acquire(&tat, &P, 100, 0).unwrap();
    }

    #[test]
    fn rescale_keeps_units_used() {
        let tat = AtomicU64::new(0);
        acquire(&tat, &P, 100, 2).unwrap(); // 2 of 3 used: TAT 120
        let faster = Params {
            interval: 5,
            limit: 30,
            burst: 6,
        };
        rescale(&tat, &P, &faster, 100);
        assert_eq!(
            tat.load(Ordering::Relaxed),
            110,
            "still 2 units owed, at 5 ns each"
        );
        assert_eq!(available(110, &faster, 100), 4);
        rescale(&tat, &faster, &P, 200);
        assert_eq!(tat.load(Ordering::Relaxed), 110, "nothing owed: untouched");
    }

    #[test]
    fn params_cell_round_trips() {
        let cell = ParamsCell::new(P);
        assert_eq!(cell.load(), P);
        let q = Params {
            interval: 1,
            limit: 5,
            burst: 5,
        };
        cell.store(q);
        assert_eq!(cell.load(), q);
    }
}
