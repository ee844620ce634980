//! The in-process tier (L1): moka, bounded by bytes.
//!
//! Each entry weighs its key, headers and body (`Entry::weight`); when the
//! total passes `max_bytes` moka evicts. Its policy is TinyLFU (admission by
//! estimated frequency, then LRU): a flood of one-off keys cannot push out
//! the entries that are actually hit. Entries leave at the end of their last
//! stale window (per-entry expiry).

use super::entry::Entry;
use super::key;
use crate::telemetry;
use moka::Expiry;
use moka::notification::RemovalCause;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every variant of one key (the key's base).
    Key(String),
    /// Every key that starts with this.
    Prefix(String),
    /// Every entry with this tag.
    Tag(String),
}

impl Purge {
    /// `key`, `prefix` or `tag`.
    pub fn kind(&self) -> &'static str {
        match self {
            Purge::Key(_) => "key",
            Purge::Prefix(_) => "prefix",
            Purge::Tag(_) => "tag",
        }
    }

    /// The key, prefix or tag.
    pub fn value(&self) -> &str {
        match self {
            Purge::Key(v) | Purge::Prefix(v) | Purge::Tag(v) => v,
        }
    }

    /// Whether this purge removes `entry` stored under `k`.
    pub fn matches(&self, k: &str, entry: &Entry) -> bool {
        match self {
            Purge::Key(want) => key::base(k) == key::base(want),
            Purge::Prefix(p) => k.starts_with(p.as_str()),
            Purge::Tag(t) => entry.tags.iter().any(|have| have == t),
        }
    }
}

/// The in-process tier.
pub struct MemoryTier {
    cache: moka::future::Cache<Arc<str>, Arc<Entry>>,
}

struct UntilUseless;

impl Expiry<Arc<str>, Arc<Entry>> for UntilUseless {
    fn expire_after_create(&self, _: &Arc<str>, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(left(e))
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(left(e))
    }
}

fn left(e: &Entry) -> Duration {
    let now = super::freshness::now_ms();
    Duration::from_millis(e.freshness.keep_until_ms().saturating_sub(now))
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (by `Entry::weight`).
    pub fn new(max_bytes: u64) -> MemoryTier {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Arc<str>, e: &Arc<Entry>| e.weight(k))
            .expire_after(UntilUseless)
            .support_invalidation_closures()
            .eviction_listener(|_k, _v, cause| {
                if cause == RemovalCause::Size {
                    telemetry::cache_evicted();
                }
            })
            .build();
        MemoryTier { cache }
    }

    /// The entry under `key`, if any is still of use.
    pub async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key).await
    }

    /// Stores an entry.
    pub async fn insert(&self, key: &str, entry: Arc<Entry>) {
        self.cache.insert(key.into(), entry).await;
    }

    /// Removes what `purge` names. Lazy inside moka, but from this call on no
    /// lookup returns a removed entry.
    pub fn purge(&self, purge: &Purge) {
        let p = purge.clone();
        if self
            .cache
            .invalidate_entries_if(move |k, e| p.matches(k, e))
            .is_err()
        {
            // Only when invalidation closures are off, which `new` turns on;
            // dropping everything is the safe fallback.
            self.cache.invalidate_all();
        }
    }

    /// Drops every entry (after missed purge broadcasts).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Runs moka's deferred bookkeeping (evictions, expiries, purges).
    pub async fn maintain(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Bytes held (by weight).
    pub fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Entries held.
    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }
}
