//! [`KeyedRateLimiter`]: one GCRA bucket per key, with per-key quotas and a
//! bounded number of keys.
//!
//! Keys live in a fixed number of shards, each a `RwLock` around a hash map
//! keyed by the key's 64-bit hash (hashed once per call). A check on an
//! existing key takes the shard's read lock, finds the bucket and runs the
//! same lock-free GCRA step as [`RateLimiter`](crate::RateLimiter); only a
//! new key takes the write lock.
//!
//! A key whose bucket is full (its TAT is in the past) is *idle*: dropping
//! it loses nothing, since a new bucket starts full. When a shard reaches
//! its share of `max_keys`, idle keys are dropped first; if every key is
//! active, the [`KeyOverflow`] policy decides.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::gcra::{self, Params, ParamsCell};
use super::{Quota, RateLimitError};
use crate::clock::SharedClock;
use crate::error::{ConfigError, at_least};
use crate::instrument::{self, Counter, Gauge};
use crate::util::{CachePadded, FastBuildHasher, PrehashedBuild, lock, read, write};

/// What a [`KeyedRateLimiter`] does with a new key when its shard is full
/// of active keys (none idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyOverflow {
    /// Drop the key closest to idle (the smallest TAT) to make room. Memory
    /// stays bounded; the dropped key starts again with a full bucket if it
    /// comes back, so under sustained key churn a key may get more than its
    /// quota.
    #[default]
    EvictLeastRecent,
    /// Refuse the new key with [`RateLimitError::TooManyKeys`]. Quotas are
    /// never exceeded; new keys wait until older ones go idle.
    Reject,
}

/// A rate limiter with one bucket per key.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{KeyedRateLimiter, ManualClock, Quota};
///
/// let clock = ManualClock::new();
/// let limiter: KeyedRateLimiter<String> = KeyedRateLimiter::builder(Quota::per_hour(2))
///     .clock(clock.clone())
///     .max_keys(10_000)
///     .build()?;
/// limiter.set_quota_for("busy-repo".to_owned(), Quota::per_hour(5))?;
///
/// assert!(limiter.check("api", 1).is_ok()); // &str looks up String keys
/// assert!(limiter.check("api", 1).is_ok());
/// assert!(limiter.check("api", 1).is_err());
/// for _ in 0..5 {
///     assert!(limiter.check("busy-repo", 1).is_ok());
/// }
/// assert_eq!(limiter.len(), 2);
/// clock.advance(Duration::from_secs(3600));
/// assert_eq!(limiter.retain_recent(), 2); // both idle again: dropped, nothing lost
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
pub struct KeyedRateLimiter<K, S = FastBuildHasher> {
    inner: Arc<Inner<K, S>>,
}

impl<K, S> Clone for KeyedRateLimiter<K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

type Labeler<K> = Arc<dyn Fn(&K) -> String + Send + Sync>;

struct Inner<K, S> {
    shards: Box<[CachePadded<RwLock<Shard<K>>>]>,
    shard_mask: usize,
    hasher: S,
    default: ParamsCell,
    /// The default quota; its lock serialises stores into `default`.
    default_quota: Mutex<Quota>,
    max_keys: AtomicUsize,
    shard_capacity: AtomicUsize,
    len: AtomicUsize,
    overflow: KeyOverflow,
    clock: SharedClock,
    name: Option<Arc<str>>,
    rejections: Option<Counter>,
    keys_gauge: Option<Gauge>,
    labeler: Option<Labeler<K>>,
}

struct Shard<K> {
    keys: HashedMap<K, KeyState>,
    overrides: HashedMap<K, Arc<Override>>,
}

struct KeyState {
    tat: AtomicU64,
    custom: Option<Arc<Override>>,
    rejections: Option<Counter>,
}

struct Override {
    params: ParamsCell,
    quota: Mutex<Quota>,
}

/// Builds a [`KeyedRateLimiter`].
#[must_use]
pub struct KeyedRateLimiterBuilder<K, S = FastBuildHasher> {
    quota: Quota,
    clock: Option<SharedClock>,
    name: Option<Arc<str>>,
    max_keys: usize,
    shards: Option<usize>,
    overflow: KeyOverflow,
    hasher: S,
    labeler: Option<Labeler<K>>,
}

impl<K, S> fmt::Debug for KeyedRateLimiterBuilder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiterBuilder")
            .field("quota", &self.quota)
            .field("name", &self.name)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

/// The default bound on the number of keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

impl<K, S> KeyedRateLimiterBuilder<K, S> {
    /// The clock (default: [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Into<SharedClock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    /// A name: the `key` label of `orchex_rate_limiter_rejections_total`
    /// (unless [`label_keys`](Self::label_keys) is set) and the `name` label
    /// of `orchex_rate_limiter_keys`. Without a name no metrics are recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Counts rejections per key: each key's counter gets
    /// `key = labeler(&key)`, created once when the key is first seen. Use
    /// it only for a bounded set of keys (e.g. repository names).
    pub fn label_keys(mut self, labeler: impl Fn(&K) -> String + Send + Sync + 'static) -> Self {
        self.labeler = Some(Arc::new(labeler));
        self
    }

    /// The most keys kept (default [`DEFAULT_MAX_KEYS`]), rounded up to a
    /// multiple of the shard count.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The number of shards, rounded up to a power of two (default: four
    /// per CPU, between 4 and 64, and no more than `max_keys`).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// What to do with a new key when the limiter is full of active keys.
    pub fn overflow(mut self, overflow: KeyOverflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Uses another hasher for keys (e.g. `RandomState`).
    pub fn hasher<S2>(self, hasher: S2) -> KeyedRateLimiterBuilder<K, S2> {
        KeyedRateLimiterBuilder {
            quota: self.quota,
            clock: self.clock,
            name: self.name,
            max_keys: self.max_keys,
            shards: self.shards,
            overflow: self.overflow,
            hasher,
            labeler: self.labeler,
        }
    }

    /// Checks the settings and builds the limiter.
    pub fn build(self) -> Result<KeyedRateLimiter<K, S>, ConfigError> {
        let params = self.quota.params()?;
        at_least("max_keys", self.max_keys, 1)?;
        let shard_count = if let Some(n) = self.shards {
            at_least("shards", n, 1)?;
            n.next_power_of_two()
        } else {
            let cpus = std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get);
            (cpus * 4)
                .next_power_of_two()
                .clamp(4, 64)
                .min(self.max_keys.next_power_of_two())
        };
        let shards = (0..shard_count)
            .map(|_| {
                CachePadded(RwLock::new(Shard {
                    keys: HashedMap::new(),
                    overrides: HashedMap::new(),
                }))
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let wanted = instrument::wanted(self.name.as_deref());
        let label = self.name.as_deref().unwrap_or_default().to_owned();
        Ok(KeyedRateLimiter {
            inner: Arc::new(Inner {
                shards,
                shard_mask: shard_count - 1,
                hasher: self.hasher,
                default: ParamsCell::new(params),
                default_quota: Mutex::new(self.quota),
                max_keys: AtomicUsize::new(self.max_keys),
                shard_capacity: AtomicUsize::new(self.max_keys.div_ceil(shard_count)),
                len: AtomicUsize::new(0),
                overflow: self.overflow,
                clock: self.clock.unwrap_or_default(),
                rejections: (wanted && self.labeler.is_none()).then(|| {
                    Counter::new(
                        "orchex_rate_limiter_rejections_total",
                        &[("key", label.clone())],
                    )
                }),
                keys_gauge: wanted
                    .then(|| Gauge::new("orchex_rate_limiter_keys", &[("name", label)])),
                labeler: if wanted { self.labeler } else { None },
                name: self.name,
            }),
        })
    }
}

impl<K> KeyedRateLimiter<K, FastBuildHasher>
where
    K: Hash + Eq + Clone,
{
    /// A limiter with the default settings.
    pub fn new(quota: Quota) -> Result<Self, ConfigError> {
        Self::builder(quota).build()
    }

    /// A builder, with `quota` as the default quota of every key.
    pub fn builder(quota: Quota) -> KeyedRateLimiterBuilder<K, FastBuildHasher> {
        KeyedRateLimiterBuilder {
            quota,
            clock: None,
            name: None,
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            overflow: KeyOverflow::default(),
            hasher: FastBuildHasher::new(),
            labeler: None,
        }
    }
}

impl<K, S> KeyedRateLimiter<K, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// A limiter with the default settings and another hasher.
    pub fn with_hasher(quota: Quota, hasher: S) -> Result<Self, ConfigError> {
        KeyedRateLimiter::<K>::builder(quota).hasher(hasher).build()
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> &RwLock<Shard<K>> {
        // hashbrown indexes with the low bits and tags with the top seven:
        // pick the shard from bits in between so neither loses entropy.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash >> 40) as usize & self.inner.shard_mask;
        &self.inner.shards[index]
    }

    /// Admits a call of `cost` units for `key` now, or says when it could be.
    ///
    /// Looks the key up by reference (`&str` for `String` keys) and clones it
    /// only the first time it is seen.
    #[inline]
    pub fn check<Q>(&self, key: &Q, cost: u32) -> Result<(), RateLimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = self.shard_of(hash);
        {
            let guard = read(shard);
            if let Some(state) = guard.keys.get(hash, key) {
                // Read the clock once the bucket is found: the lookup's
                // loads then overlap with the counter read.
                let now = inner.clock.now().as_nanos();
                let result = gcra::acquire(&state.tat, &inner.params_of(state), now, cost);
                if result.is_err() {
                    inner.rejected(state);
                }
                return result;
            }
        }
        self.check_new(shard, hash, key, inner.clock.now().as_nanos(), cost)
    }

    #[cold]
    fn check_new<Q>(
        &self,
        shard: &RwLock<Shard<K>>,
        hash: u64,
        key: &Q,
        now: u64,
        cost: u32,
    ) -> Result<(), RateLimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        let mut guard = write(shard);
        if let Some(state) = guard.keys.get(hash, key) {
            // Another thread added it meanwhile.
            let result = gcra::acquire(&state.tat, &inner.params_of(state), now, cost);
            if result.is_err() {
                inner.rejected(state);
            }
            return result;
        }
        let custom = guard.overrides.get(hash, key).cloned();
        let params = custom
            .as_ref()
            .map_or_else(|| inner.default.load(), |o| o.params.load());
        // A new bucket is full, so only an impossible cost can fail here;
        // refuse it without keeping the key.
        gcra::peek(0, &params, now, cost)?;
        if guard.keys.len() >= inner.shard_capacity.load(Ordering::Relaxed) {
            inner.make_room(&mut guard, now)?;
        }
        let owned = key.to_owned();
        let rejections = inner.labeler.as_ref().map(|label| {
            Counter::new(
                "orchex_rate_limiter_rejections_total",
                &[("key", label(&owned))],
            )
        });
        let state = KeyState {
            tat: AtomicU64::new(0),
            custom,
            rejections,
        };
        gcra::acquire(&state.tat, &params, now, cost)?;
        guard.keys.insert(hash, owned, state);
        let len = inner.len.fetch_add(1, Ordering::Relaxed) + 1;
        inner.publish_len(len);
        Ok(())
    }

    /// What [`check`](Self::check) would answer now, without consuming or
    /// adding the key.
    pub fn peek<Q>(&self, key: &Q, cost: u32) -> Result<(), RateLimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = inner.clock.now().as_nanos();
        let guard = read(self.shard_of(hash));
        if let Some(state) = guard.keys.get(hash, key) {
            gcra::peek(
                state.tat.load(Ordering::Relaxed),
                &inner.params_of(state),
                now,
                cost,
            )
        } else {
            let params = guard
                .overrides
                .get(hash, key)
                .map_or_else(|| inner.default.load(), |o| o.params.load());
            gcra::peek(0, &params, now, cost)
        }
    }

    /// Whole units of cost `key` could use now.
    pub fn available<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = inner.clock.now().as_nanos();
        let guard = read(self.shard_of(hash));
        if let Some(state) = guard.keys.get(hash, key) {
            gcra::available(
                state.tat.load(Ordering::Relaxed),
                &inner.params_of(state),
                now,
            )
        } else {
            guard
                .overrides
                .get(hash, key)
                .map_or_else(|| inner.default.load(), |o| o.params.load())
                .burst
        }
    }

    /// Gives `key` its own quota, replacing any earlier one. The key's
    /// bucket keeps its state (the units it used stay used). Overrides are configuration: they are kept
    /// when the key is evicted and do not count towards `max_keys`.
    pub fn set_quota_for(&self, key: K, quota: Quota) -> Result<(), ConfigError> {
        let params = quota.params()?;
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(&key);
        let now = inner.clock.now().as_nanos();
        let mut guard = write(self.shard_of(hash));
        if let Some(existing) = guard.overrides.get(hash, &key) {
            let mut current = lock(&existing.quota);
            let old = existing.params.load();
            existing.params.store(params);
            *current = quota;
            drop(current);
            if let Some(state) = guard.keys.get(hash, &key) {
                gcra::rescale(&state.tat, &old, &params, now);
            }
            return Ok(());
        }
        let custom = Arc::new(Override {
            params: ParamsCell::new(params),
            quota: Mutex::new(quota),
        });
        if let Some(state) = guard.keys.get_mut(hash, &key) {
            gcra::rescale(&state.tat, &inner.default.load(), &params, now);
            state.custom = Some(Arc::clone(&custom));
        }
        guard.overrides.insert(hash, key, custom);
        Ok(())
    }

    /// Removes `key`'s own quota (it falls back to the default, keeping the
    /// units it used) and returns it.
    pub fn remove_quota_for<Q>(&self, key: &Q) -> Option<Quota>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = inner.clock.now().as_nanos();
        let mut guard = write(self.shard_of(hash));
        let removed = guard.overrides.remove(hash, key)?;
        if let Some(state) = guard.keys.get_mut(hash, key) {
            gcra::rescale(
                &state.tat,
                &removed.params.load(),
                &inner.default.load(),
                now,
            );
            state.custom = None;
        }
        let quota = *lock(&removed.quota);
        Some(quota)
    }

    /// The quota that applies to `key`.
    pub fn quota_for<Q>(&self, key: &Q) -> Quota
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.inner.hasher.hash_one(key);
        let guard = read(self.shard_of(hash));
        match guard.overrides.get(hash, key) {
            Some(custom) => *lock(&custom.quota),
            None => self.default_quota(),
        }
    }

    /// Forgets `key`'s bucket (its quota override, if any, stays).
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.inner.hasher.hash_one(key);
        let removed = write(self.shard_of(hash)).keys.remove(hash, key).is_some();
        if removed {
            let len = self.inner.len.fetch_sub(1, Ordering::Relaxed) - 1;
            self.inner.publish_len(len);
        }
        removed
    }
}

impl<K, S> KeyedRateLimiter<K, S> {
    /// The number of keys held now.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on the number of keys.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys.load(Ordering::Relaxed)
    }

    /// The default quota.
    pub fn default_quota(&self) -> Quota {
        *lock(&self.inner.default_quota)
    }

    /// The limiter's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Replaces the default quota. Every key keeps its state (the units it
    /// used stay used); keys with their own quota are not affected. Visits
    /// every key once, one shard at a time.
    pub fn reconfigure(&self, quota: Quota) -> Result<(), ConfigError> {
        let params = quota.params()?;
        let inner = &*self.inner;
        let mut current = lock(&inner.default_quota);
        let old = inner.default.load();
        inner.default.store(params);
        *current = quota;
        let now = inner.clock.now().as_nanos();
        for shard in &inner.shards {
            let guard = write(shard);
            guard.keys.for_each(|state| {
                if state.custom.is_none() {
                    gcra::rescale(&state.tat, &old, &params, now);
                }
            });
        }
        Ok(())
    }

    /// Changes the bound on the number of keys. When it shrinks, idle keys
    /// and then (with [`KeyOverflow::EvictLeastRecent`]) the least recent
    /// ones are dropped at once.
    pub fn set_max_keys(&self, max_keys: usize) -> Result<(), ConfigError> {
        at_least("max_keys", max_keys, 1)?;
        let inner = &*self.inner;
        let capacity = max_keys.div_ceil(inner.shards.len());
        inner.max_keys.store(max_keys, Ordering::Relaxed);
        inner.shard_capacity.store(capacity, Ordering::Relaxed);
        let now = inner.clock.now().as_nanos();
        for shard in &inner.shards {
            let mut guard = write(shard);
            if guard.keys.len() > capacity {
                inner.sweep_idle(&mut guard, now);
                if inner.overflow == KeyOverflow::EvictLeastRecent {
                    while guard.keys.len() > capacity {
                        inner.evict_least_recent(&mut guard);
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops every idle key (whose bucket is full again) and returns how
    /// many were dropped. Nothing is lost: a key that comes back starts
    /// with a full bucket, as it would have had. Call it now and then to
    /// give memory back; `check` also does it when a shard is full.
    pub fn retain_recent(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.clock.now().as_nanos();
        inner
            .shards
            .iter()
            .map(|shard| inner.sweep_idle(&mut write(shard), now))
            .sum()
    }

    /// Drops every key (quota overrides stay).
    pub fn clear(&self) {
        let inner = &*self.inner;
        for shard in &inner.shards {
            let mut guard = write(shard);
            let n = guard.keys.len();
            guard.keys = HashedMap::new();
            inner.len.fetch_sub(n, Ordering::Relaxed);
        }
        inner.publish_len(inner.len.load(Ordering::Relaxed));
    }
}

impl<K, S> Inner<K, S> {
    #[inline]
    fn params_of(&self, state: &KeyState) -> Params {
        match &state.custom {
            None => self.default.load(),
            Some(custom) => custom.params.load(),
        }
    }

    #[inline]
    fn rejected(&self, state: &KeyState) {
        if let Some(counter) = state.rejections.as_ref().or(self.rejections.as_ref()) {
            counter.increment(1);
        }
    }

    fn publish_len(&self, len: usize) {
        if let Some(gauge) = &self.keys_gauge {
            gauge.set(crate::util::as_f64(len as u64));
        }
    }

    /// Drops the idle keys of one shard; returns how many.
    fn sweep_idle(&self, shard: &mut Shard<K>, now: u64) -> usize {
        let removed = shard
            .keys
            .retain(|state| state.tat.load(Ordering::Relaxed) > now);
        if removed > 0 {
            let len = self.len.fetch_sub(removed, Ordering::Relaxed) - removed;
            self.publish_len(len);
        }
        removed
    }

    fn evict_least_recent(&self, shard: &mut Shard<K>) {
        if shard
            .keys
            .remove_min_by_key(|state| state.tat.load(Ordering::Relaxed))
        {
            let len = self.len.fetch_sub(1, Ordering::Relaxed) - 1;
            self.publish_len(len);
        }
    }

    /// Makes room for one key in a full shard.
    fn make_room(&self, shard: &mut Shard<K>, now: u64) -> Result<(), RateLimitError> {
        let capacity = self.shard_capacity.load(Ordering::Relaxed);
        self.sweep_idle(shard, now);
        while shard.keys.len() >= capacity {
            match self.overflow {
                KeyOverflow::Reject => {
                    return Err(RateLimitError::TooManyKeys {
                        max_keys: self.max_keys.load(Ordering::Relaxed),
                    });
                }
                KeyOverflow::EvictLeastRecent => self.evict_least_recent(shard),
            }
        }
        Ok(())
    }
}

impl<K, S> fmt::Debug for KeyedRateLimiter<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.name)
            .field("default_quota", &self.default_quota())
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

/// A map keyed by a precomputed 64-bit hash: each hash holds one entry, or
/// several on a (rare) full collision. Hashing happens once, outside.
struct HashedMap<K, V> {
    map: HashMap<u64, Bucket<K, V>, PrehashedBuild>,
    len: usize,
}

enum Bucket<K, V> {
    One(K, V),
    Many(Vec<(K, V)>),
}

impl<K, V> HashedMap<K, V> {
    fn new() -> Self {
        Self {
            map: HashMap::with_hasher(PrehashedBuild),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn get<Q>(&self, hash: u64, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.map.get(&hash)? {
            Bucket::One(k, v) => (k.borrow() == key).then_some(v),
            Bucket::Many(entries) => entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
        }
    }

    fn get_mut<Q>(&mut self, hash: u64, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.map.get_mut(&hash)? {
            Bucket::One(k, v) => ((*k).borrow() == key).then_some(v),
            Bucket::Many(entries) => entries
                .iter_mut()
                .find(|(k, _)| (*k).borrow() == key)
                .map(|(_, v)| v),
        }
    }

    /// Inserts a key known to be absent.
    fn insert(&mut self, hash: u64, key: K, value: V) {
        match self.map.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(Bucket::One(key, value));
            }
            Entry::Occupied(mut slot) => {
                let bucket = slot.get_mut();
                let previous = std::mem::replace(bucket, Bucket::Many(Vec::with_capacity(2)));
                if let Bucket::Many(entries) = bucket {
                    match previous {
                        Bucket::One(k, v) => entries.push((k, v)),
                        Bucket::Many(old) => entries.extend(old),
                    }
                    entries.push((key, value));
                }
            }
        }
        self.len += 1;
    }

    fn remove<Q>(&mut self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let Entry::Occupied(mut slot) = self.map.entry(hash) else {
            return None;
        };
        let removed = match slot.get_mut() {
            Bucket::One(k, _) => {
                if (*k).borrow() != key {
                    return None;
                }
                match slot.remove() {
                    Bucket::One(_, v) => v,
                    Bucket::Many(_) => return None,
                }
            }
            Bucket::Many(entries) => {
                let index = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, v) = entries.swap_remove(index);
                if entries.is_empty() {
                    slot.remove();
                }
                v
            }
        };
        self.len -= 1;
        Some(removed)
    }

    fn for_each(&self, mut f: impl FnMut(&V)) {
        for bucket in self.map.values() {
            match bucket {
                Bucket::One(_, v) => f(v),
                Bucket::Many(entries) => entries.iter().for_each(|(_, v)| f(v)),
            }
        }
    }

    /// Keeps the entries for which `keep` is true; returns how many went.
    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let before = self.len;
        let mut len = 0;
        self.map.retain(|_, bucket| match bucket {
            Bucket::One(_, v) => {
                let kept = keep(v);
                len += usize::from(kept);
                kept
            }
            Bucket::Many(entries) => {
                entries.retain(|(_, v)| keep(v));
                len += entries.len();
                !entries.is_empty()
            }
        });
        self.len = len;
        before - len
    }

    /// Removes the entry with the smallest `key_fn`; false if empty.
    fn remove_min_by_key(&mut self, key_fn: impl Fn(&V) -> u64) -> bool {
        let mut best: Option<(u64, u64, usize)> = None;
        for (&hash, bucket) in &self.map {
            match bucket {
                Bucket::One(_, v) => {
                    let k = key_fn(v);
                    if best.is_none_or(|(b, _, _)| k < b) {
                        best = Some((k, hash, 0));
                    }
                }
                Bucket::Many(entries) => {
                    for (i, (_, v)) in entries.iter().enumerate() {
                        let k = key_fn(v);
                        if best.is_none_or(|(b, _, _)| k < b) {
                            best = Some((k, hash, i));
                        }
                    }
                }
            }
        }
        let Some((_, hash, index)) = best else {
            return false;
        };
        if let Entry::Occupied(mut slot) = self.map.entry(hash) {
            let now_empty = match slot.get_mut() {
                Bucket::One(..) => true,
                Bucket::Many(entries) => {
                    entries.swap_remove(index);
                    entries.is_empty()
                }
            };
            if now_empty {
                slot.remove();
            }
            self.len -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::hash::Hasher;
    use std::time::Duration;

    fn limiter(
        quota: Quota,
        max_keys: usize,
        overflow: KeyOverflow,
    ) -> (KeyedRateLimiter<String>, ManualClock) {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::builder(quota)
            .clock(clock.clone())
            .max_keys(max_keys)
            .shards(1)
            .overflow(overflow)
            .build()
            .unwrap();
        (limiter, clock)
    }

    #[test]
    fn keys_are_independent() {
        let (limiter, _clock) = limiter(Quota::per_minute(1), 100, KeyOverflow::default());
        limiter.check("a", 1).unwrap();
        limiter.check("b", 1).unwrap();
        assert!(limiter.check("a", 1).is_err());
        assert_eq!(limiter.len(), 2);
        assert!(limiter.peek("c", 1).is_ok());
        assert_eq!(limiter.len(), 2, "peek does not add keys");
        assert_eq!(limiter.available("a"), 0);
        assert_eq!(limiter.available("zzz"), 1);
    }

    #[test]
    fn per_key_override_applies_and_keeps_state() {
        let (limiter, clock) = limiter(Quota::per_minute(1), 100, KeyOverflow::default());
        limiter.check("a", 1).unwrap();
        limiter
            .set_quota_for("a".to_owned(), Quota::per_minute(3))
            .unwrap();
        // One unit already used: two more fit under the new quota.
        limiter.check("a", 1).unwrap();
        limiter.check("a", 1).unwrap();
        assert!(limiter.check("a", 1).is_err());
        assert_eq!(limiter.quota_for("a"), Quota::per_minute(3));
        assert_eq!(limiter.quota_for("b"), Quota::per_minute(1));
        // Updating the override in place keeps the bucket too.
        limiter
            .set_quota_for("a".to_owned(), Quota::per_minute(6))
            .unwrap();
        clock.advance(Duration::from_secs(10));
        limiter.check("a", 1).unwrap();
        assert_eq!(limiter.remove_quota_for("a"), Some(Quota::per_minute(6)));
        assert_eq!(limiter.quota_for("a"), Quota::per_minute(1));
    }

    #[test]
    fn override_set_before_first_use() {
        let (limiter, _clock) = limiter(Quota::per_minute(1), 100, KeyOverflow::default());
        limiter
            .set_quota_for("big".to_owned(), Quota::per_minute(5))
            .unwrap();
        for _ in 0..5 {
            limiter.check("big", 1).unwrap();
        }
        assert!(limiter.check("big", 1).is_err());
    }

    #[test]
    fn default_reconfigure_keeps_buckets() {
        let (limiter, _clock) = limiter(Quota::per_minute(2), 100, KeyOverflow::default());
        limiter.check("a", 2).unwrap();
        limiter.reconfigure(Quota::per_minute(3)).unwrap();
        limiter.check("a", 1).unwrap();
        assert!(limiter.check("a", 1).is_err());
        assert_eq!(limiter.default_quota(), Quota::per_minute(3));
    }

    #[test]
    fn idle_keys_are_evicted_first_without_loss() {
        let (limiter, clock) = limiter(Quota::per_second(1), 3, KeyOverflow::Reject);
        for key in ["a", "b", "c"] {
            limiter.check(key, 1).unwrap();
        }
        assert!(matches!(
            limiter.check("d", 1),
            Err(RateLimitError::TooManyKeys { max_keys: 3 })
        ));
        assert_eq!(limiter.len(), 3);
        clock.advance(Duration::from_secs(1));
        limiter.check("d", 1).unwrap();
        assert_eq!(limiter.len(), 1, "the three idle keys were swept");
    }

    #[test]
    fn least_recent_key_is_evicted_when_full() {
        let (limiter, clock) = limiter(Quota::per_hour(2), 2, KeyOverflow::EvictLeastRecent);
        limiter.check("old", 1).unwrap();
        clock.advance(Duration::from_secs(1));
        limiter.check("new", 1).unwrap();
        limiter.check("new", 1).unwrap();
        limiter.check("third", 1).unwrap();
        assert_eq!(limiter.len(), 2);
        // "old" (smallest TAT) went; "new" kept its empty bucket.
        assert!(limiter.check("new", 1).is_err());
        assert_eq!(limiter.available("old"), 2);
    }

    #[test]
    fn shrinking_max_keys_evicts() {
        let (limiter, _clock) = limiter(Quota::per_hour(2), 10, KeyOverflow::EvictLeastRecent);
        for i in 0..10 {
            limiter.check(&format!("k{i}"), 1).unwrap();
        }
        limiter.set_max_keys(4).unwrap();
        assert_eq!(limiter.len(), 4);
        assert_eq!(limiter.max_keys(), 4);
        let kept: Vec<String> = (0..10)
            .map(|i| format!("k{i}"))
            .filter(|k| limiter.available(k.as_str()) == 1)
            .collect();
        assert_eq!(kept.len(), 4);
        assert!(limiter.remove(kept[0].as_str()));
        assert!(!limiter.remove(kept[0].as_str()));
        assert_eq!(limiter.len(), 3);
        limiter.clear();
        assert!(limiter.is_empty());
    }

    #[test]
    fn impossible_cost_does_not_add_key() {
        let (limiter, _clock) = limiter(Quota::per_hour(2), 10, KeyOverflow::default());
        assert!(matches!(
            limiter.check("a", 3),
            Err(RateLimitError::InsufficientCapacity { .. })
        ));
        assert!(limiter.is_empty());
    }

    /// A hasher that sends every key to the same hash, to exercise buckets.
    #[derive(Clone, Default)]
    struct Collide;
    impl BuildHasher for Collide {
        type Hasher = CollideHasher;
        fn build_hasher(&self) -> CollideHasher {
            CollideHasher
        }
    }
    struct CollideHasher;
    impl Hasher for CollideHasher {
        fn write(&mut self, _: &[u8]) {}
        fn finish(&self) -> u64 {
            7
        }
    }

    #[test]
    fn full_hash_collisions_are_handled() {
        let clock = ManualClock::new();
        let limiter: KeyedRateLimiter<u32, Collide> =
            KeyedRateLimiter::<u32>::builder(Quota::per_hour(1))
                .clock(clock)
                .hasher(Collide)
                .max_keys(3)
                .shards(1)
                .build()
                .unwrap();
        for k in 0..3 {
            limiter.check(&k, 1).unwrap();
        }
        for k in 0..3 {
            assert!(limiter.check(&k, 1).is_err());
        }
        assert!(limiter.remove(&1));
        limiter.check(&1, 1).unwrap();
        limiter.check(&3, 1).unwrap();
        assert_eq!(limiter.len(), 3);
        limiter.set_quota_for(2, Quota::per_hour(2)).unwrap();
        limiter.check(&2, 1).unwrap();
    }
}
