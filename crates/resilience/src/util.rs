//! Small internal helpers shared by the primitives: cache padding, lock
//! helpers that shrug off poisoning, duration conversions, jitter and a fast
//! seeded hasher.

use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Pads and aligns a value to its own cache line (two lines on x86_64, where
/// the adjacent-line prefetcher pulls pairs), so that a hot atomic does not
/// share a line with read-mostly data.
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    repr(align(64))
)]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Locks a mutex. Our critical sections never run user code, so a poisoned
/// lock only means another thread panicked between two plain stores: the
/// data is still consistent and we keep going.
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks an `RwLock`, ignoring poisoning (see [`lock`]).
#[inline]
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks an `RwLock`, ignoring poisoning (see [`lock`]).
#[inline]
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A uniformly random duration in `[0, max]`.
pub(crate) fn random_up_to(max: Duration) -> Duration {
    let max = nanos(max);
    if max == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(0..=max))
}

/// Scales `base` by a random factor in `[1 - fraction, 1 + fraction]`.
pub(crate) fn jitter_by_fraction(base: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 || base.is_zero() {
        return base;
    }
    let factor = 1.0 + fraction * (fastrand::f64() * 2.0 - 1.0);
    base.mul_f64(factor.max(0.0))
}

/// `value` as an `f64`; exact up to 2^53, which every count here stays below.
#[inline]
#[allow(clippy::cast_precision_loss)]
pub(crate) fn as_f64(value: u64) -> f64 {
    value as f64
}

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // Truncation is the point: fold the high half onto the low half.
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = (product as u64, (product >> 64) as u64);
    low ^ high
}

/// The default hasher of [`KeyedRateLimiter`](crate::KeyedRateLimiter).
///
/// A folded-multiply hasher (the construction behind foldhash and wyhash),
/// seeded at random per limiter. It hashes a short key in a few
/// nanoseconds, where std's SipHash takes about fifteen, and the random seed
/// keeps collisions from being chosen in advance. Where keys come from an
/// adversary who can observe timings, plug in
/// [`std::collections::hash_map::RandomState`] with
/// [`KeyedRateLimiter::with_hasher`](crate::KeyedRateLimiter::with_hasher).
#[derive(Debug, Clone, Copy)]
pub struct FastBuildHasher {
    seed: u64,
    finish_seed: u64,
}

impl FastBuildHasher {
    /// A hasher with fresh random seeds.
    pub fn new() -> Self {
        Self {
            seed: fastrand::u64(..),
            finish_seed: fastrand::u64(..) | 1,
        }
    }

    /// A hasher with fixed seeds, for reproducible tests.
    pub fn with_seeds(seed: u64, finish_seed: u64) -> Self {
        Self {
            seed,
            finish_seed: finish_seed | 1,
        }
    }
}

impl Default for FastBuildHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FastBuildHasher {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            state: self.seed,
            finish_seed: self.finish_seed,
        }
    }
}

/// The [`Hasher`] built by [`FastBuildHasher`].
#[derive(Debug, Clone)]
pub struct FastHasher {
    state: u64,
    finish_seed: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length goes into the top byte so "a" and "a\0" differ.
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = folded_multiply(self.state ^ value, MULTIPLIER);
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        // Truncation intended: the two halves are hashed one after the other.
        #[allow(clippy::cast_possible_truncation)]
        let low = value as u64;
        self.write_u64(low);
        self.write_u64((value >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.state, self.finish_seed)
    }
}

/// A [`BuildHasher`] for maps keyed by an already well-mixed `u64` hash.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrehashedBuild;

impl BuildHasher for PrehashedBuild {
    type Hasher = Prehashed;

    #[inline]
    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

/// Passes a `u64` through unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are ever hashed; fold anything else in safely.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::Hash;

    fn hash<T: Hash + ?Sized>(build: &FastBuildHasher, value: &T) -> u64 {
        build.hash_one(value)
    }

    #[test]
    fn fast_hasher_spreads_sequential_keys() {
        let build = FastBuildHasher::with_seeds(1, 2);
        let hashes: HashSet<u64> = (0_u64..10_000).map(|k| hash(&build, &k)).collect();
        assert_eq!(hashes.len(), 10_000);
        // The top 7 bits (hashbrown's control byte) must take many values too.
        let tops: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tops.len() > 100, "only {} distinct top bytes", tops.len());
    }

    #[test]
    fn fast_hasher_distinguishes_padding() {
        let build = FastBuildHasher::with_seeds(7, 9);
        assert_ne!(hash(&build, &b"a"[..]), hash(&build, &b"a\0"[..]));
        assert_ne!(hash(&build, "ab"), hash(&build, "ba"));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let d = jitter_by_fraction(Duration::from_secs(10), 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11));
            assert!(random_up_to(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
