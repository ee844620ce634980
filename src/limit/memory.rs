//! The in-process store: one TAT (`u64` nanoseconds) per bucket, in a map
//! split over shards so concurrent requests rarely meet on one lock.
//!
//! Memory stays bounded by traffic, not by history: a bucket whose TAT has
//! passed is *full*, which is exactly what a missing entry means, so such
//! entries can be dropped at any time without changing a decision. Each shard
//! drops them at most once per `SWEEP_INTERVAL`, on an access.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// Shards per store: a power of two well above the core count, so that
/// contention is rare and each shard's sweep is short.
const SHARDS: usize = 64;
/// How often a shard drops full buckets: often enough to keep memory close to
/// the live set, rare enough that the sweep's cost per request is nothing.
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

/// Bucket keys are already random 64-bit SipHash fingerprints; hashing them
/// again would only cost time.
#[derive(Default)]
struct Fingerprint(u64);
impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Buckets = HashMap<u64, u64, BuildHasherDefault<Fingerprint>>;

struct Shard {
    buckets: Buckets,
    next_sweep: u64,
}

/// Keeps shards on their own cache lines.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// A sharded map from bucket fingerprint to TAT.
pub struct MemoryStore {
    shards: Box<[Padded]>,
    seed: RandomState,
}

/// One bucket, locked: read its TAT, then set it (or not).
pub struct Locked<'a> {
    shard: MutexGuard<'a, Shard>,
    key: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with a fresh random seed.
    pub fn new() -> MemoryStore {
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    buckets: Buckets::default(),
                    next_sweep: 0,
                }))
            })
            .collect();
        MemoryStore {
            shards,
            seed: RandomState::new(),
        }
    }

    /// The seed bucket keys are hashed with.
    pub fn seed(&self) -> &RandomState {
        &self.seed
    }

    /// Which shard a fingerprint lives in. The map uses the fingerprint's own
    /// bits, so the shard is picked from a multiplied copy to keep the two
    /// independent.
    pub fn shard_of(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
    }

    /// Locks a bucket's shard; sweeps the shard first if it is due. Returns
    /// how many full buckets the sweep dropped (for the key gauge).
    pub fn lock(&self, key: u64, now: u64) -> (Locked<'_>, usize) {
        let mut shard = self.shards[Self::shard_of(key)]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut dropped = 0;
        if now >= shard.next_sweep {
            shard.next_sweep = now.saturating_add(SWEEP_INTERVAL_NS);
            let before = shard.buckets.len();
            shard.buckets.retain(|_, tat| *tat > now);
            dropped = before - shard.buckets.len();
            // After a flood of one-off keys, give the memory back.
            if shard.buckets.capacity() > 1024 && shard.buckets.capacity() > 4 * shard.buckets.len()
            {
                let keep = shard.buckets.len() * 2;
                shard.buckets.shrink_to(keep);
            }
        }
        (Locked { shard, key }, dropped)
    }

    /// Buckets held (full ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().map(|s| s.buckets.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the maps have allocated (an estimate from their capacity:
    /// key, TAT and hashbrown's control byte per slot).
    pub fn allocated_bytes(&self) -> usize {
        let per_slot = 2 * std::mem::size_of::<u64>() + 1;
        self.shards
            .iter()
            .map(|s| s.0.lock().map(|s| s.buckets.capacity()).unwrap_or(0) * per_slot)
            .sum()
    }

    /// Gives back one emission interval of a bucket (a request it admitted
    /// was rejected by another policy after all).
    pub fn refund(&self, key: u64, interval: u64) {
        let mut shard = self.shards[Self::shard_of(key)]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tat) = shard.buckets.get_mut(&key) {
            *tat = tat.saturating_sub(interval);
        }
    }
}

impl Locked<'_> {
    /// The bucket's TAT (0 for a bucket never seen or already full).
    pub fn tat(&self) -> u64 {
        self.shard.buckets.get(&self.key).copied().unwrap_or(0)
    }

    /// Stores a new TAT; true when the bucket is new.
    pub fn set(&mut self, tat: u64) -> bool {
        self.shard.buckets.insert(self.key, tat).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_buckets_are_swept_and_live_ones_kept() {
        let store = MemoryStore::new();
        for key in 0..10_000u64 {
            let (mut b, _) = store.lock(key, 1);
            b.set(if key % 2 == 0 { 100 } else { 5_000_000_000 });
        }
        assert_eq!(store.len(), 10_000);
        // One access per shard after the sweep interval drops the full half.
        let mut dropped = 0;
        for key in 0..10_000u64 {
            dropped += store.lock(key, 2_000_000_000).1;
        }
        assert_eq!(dropped, 5_000);
        assert_eq!(store.len(), 5_000);
    }

    #[test]
    fn refund_gives_back_one_interval() {
        let store = MemoryStore::new();
        store.lock(7, 0).0.set(300);
        store.refund(7, 100);
        assert_eq!(store.lock(7, 0).0.tat(), 200);
    }
}
