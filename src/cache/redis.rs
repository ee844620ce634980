//! The shared tier (L2) in Redis, and the purge broadcast over pub/sub.
//!
//! Layout (PREFIX is `redis.key_prefix`, default `switchyard`, as a hash
//! tag): `{PREFIX}:cache:e:KEY` holds an `Entry` record with a PX expiry at
//! the end of its last stale window; `{PREFIX}:cache:t:TAG` is the set of
//! keys with that tag. Purges are published on `{PREFIX}:cache:purge`; every
//! instance (this one included) applies them to its in-process tier.
//!
//! Every Redis failure degrades to "not found" plus a metric and a
//! rate-limited log line: a request never fails because Redis did. After a
//! failure Redis is left alone for a moment (`BACKOFF`) so that an outage
//! costs each request nothing, not a timeout.

use super::entry::Entry;
use super::freshness::now_ms;
use super::memory::Purge;
use crate::telemetry;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Longest one Redis command may take: a cache lookup must cost far less
/// than the upstream call it would save.
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is skipped this long, so an outage does not add a
/// timeout to every request.
const BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per this interval about Redis trouble.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often an idle subscription checks that its cache still exists.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Keys deleted per round trip when purging by prefix.
const SCAN_COUNT: usize = 500;

/// The Redis tier of one gateway instance.
pub struct RedisTier {
    client: redis::Client,
    conn: ConnectionManager,
    /// Skip Redis until this (unix ms) after a failure.
    down_until: AtomicU64,
    log: LogLimiter,
    /// Identifies this instance's broadcasts.
    origin: String,
    /// `{PREFIX}:cache:e:`: entry keys.
    entry: String,
    /// `{PREFIX}:cache:t:`: tag sets.
    tag: String,
    /// `{PREFIX}:cache:purge`: the purge broadcast channel.
    channel: String,
}

impl RedisTier {
    /// A tier for `url`; connects lazily (a Redis that is down at start is
    /// only a miss). Needs a tokio runtime.
    pub fn new(url: &str, key_prefix: &str) -> redis::RedisResult<RedisTier> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let origin = format!("{}-{}", std::process::id(), now_ms());
        Ok(RedisTier {
            client,
            conn,
            down_until: AtomicU64::new(0),
            log: LogLimiter::default(),
            origin,
            entry: format!("{{{key_prefix}}}:cache:e:"),
            tag: format!("{{{key_prefix}}}:cache:t:"),
            channel: format!("{{{key_prefix}}}:cache:purge"),
        })
    }

    /// The entry under `key`; `None` when absent, unreadable or Redis failed.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let bytes: Vec<u8> = self
            .run("get", |mut c| {
                let k = format!("{}{key}", self.entry);
                async move { c.get::<_, Option<Vec<u8>>>(k).await }
            })
            .await
            .flatten()?;
        Entry::decode(&bytes)
    }

    /// Stores an entry (and its tags) until the end of its last stale window.
    pub async fn set(&self, key: &str, entry: &Entry) {
        let ttl_ms = entry.freshness.keep_until_ms().saturating_sub(now_ms());
        if ttl_ms == 0 {
            return;
        }
        let record = entry.encode();
        let tag_secs = ttl_ms.div_ceil(1000);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{}{key}", self.entry))
            .arg(record)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        for tag in &entry.tags {
            let t = format!("{}{tag}", self.tag);
            pipe.cmd("SADD").arg(&t).arg(key).ignore();
            // A tag set lives as long as its longest-lived member: set an
            // expiry if it has none, extend it if this one is later.
            pipe.cmd("EXPIRE").arg(&t).arg(tag_secs).arg("NX").ignore();
            pipe.cmd("EXPIRE").arg(&t).arg(tag_secs).arg("GT").ignore();
        }
        let _: Option<()> = self
            .run("set", |mut c| async move { pipe.query_async(&mut c).await })
            .await;
    }

    /// Deletes what `purge` names from Redis; the number of entries deleted,
    /// `None` when Redis failed.
    pub async fn purge(&self, purge: &Purge) -> Option<u64> {
        match purge {
            Purge::Key(k) => {
                let base = super::key::base(k);
                let exact = format!("{}{base}", self.entry);
                let mut n: u64 = self
                    .run("purge", |mut c| async move { c.del(exact).await })
                    .await?;
                let pattern = format!(
                    "{}{}{}*",
                    glob_escape(&self.entry),
                    glob_escape(base),
                    super::key::VARIANT
                );
                n += self.delete_matching(pattern).await?;
                Some(n)
            }
            Purge::Prefix(p) => {
                self.delete_matching(format!("{}{}*", glob_escape(&self.entry), glob_escape(p)))
                    .await
            }
            Purge::Tag(t) => {
                let set = format!("{}{t}", self.tag);
                let s = set.clone();
                let keys: Vec<String> = self
                    .run("purge", |mut c| async move { c.smembers(s).await })
                    .await?;
                let mut doomed: Vec<String> =
                    keys.iter().map(|k| format!("{}{k}", self.entry)).collect();
                doomed.push(set);
                let n: u64 = self
                    .run("purge", |mut c| async move { c.del(doomed).await })
                    .await?;
                Some(n.saturating_sub(1).min(keys.len() as u64))
            }
        }
    }

    async fn delete_matching(&self, pattern: String) -> Option<u64> {
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        // Bounded: a purge walks the keyspace once, at most this many rounds.
        for _ in 0..100_000 {
            let p = pattern.clone();
            let (next, keys): (u64, Vec<String>) = self
                .run("purge", |mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(p)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let n: u64 = self
                    .run("purge", |mut c| async move { c.del(keys).await })
                    .await?;
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Some(deleted)
    }

    /// Tells every instance about a purge; `false` when Redis failed.
    pub async fn publish(&self, purge: &Purge) -> bool {
        let message = format!("{}\n{}\n{}", self.origin, purge.kind(), purge.value());
        let channel = self.channel.clone();
        self.run("publish", |mut c| async move {
            c.publish::<_, _, ()>(channel, message).await
        })
        .await
        .is_some()
    }

    /// Applies every instance's purges to the in-process tier for as long
    /// as the cache lives. After a lost subscription the whole tier is cleared: purges
    /// sent meanwhile were missed, and a stale entry is worse than a miss.
    pub fn listen(self: &Arc<Self>, cache: Weak<super::Inner>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut lost = false;
            loop {
                let Some(tier) = me.upgrade() else { return };
                let (client, channel) = (tier.client.clone(), tier.channel.clone());
                drop(tier);
                let subscribed = async {
                    let mut ps = client.get_async_pubsub().await?;
                    ps.subscribe(channel).await?;
                    Ok::<_, redis::RedisError>(ps)
                };
                match tokio::time::timeout(OP_TIMEOUT * 4, subscribed).await {
                    Ok(Ok(mut ps)) => {
                        if lost && let Some(c) = cache.upgrade() {
                            c.clear();
                        }
                        let mut messages = ps.on_message();
                        loop {
                            // Wake now and then to notice a cache that is gone.
                            let msg = match tokio::time::timeout(IDLE_CHECK, messages.next()).await
                            {
                                Ok(Some(msg)) => msg,
                                Ok(None) => break,
                                Err(_) if cache.strong_count() == 0 => return,
                                Err(_) => continue,
                            };
                            let Some(c) = cache.upgrade() else { return };
                            let Ok(text) = msg.get_payload::<String>() else {
                                continue;
                            };
                            if let Some(p) = parse_message(&text) {
                                c.apply_purge(&p);
                                telemetry::cache_purged(p.kind(), "broadcast");
                            }
                        }
                        lost = true;
                    }
                    Ok(Err(e)) => {
                        lost = true;
                        if let Some(t) = me.upgrade() {
                            t.failed("subscribe", &e.to_string());
                        }
                    }
                    Err(_) => {
                        lost = true;
                        if let Some(t) = me.upgrade() {
                            t.failed("subscribe", "timed out");
                        }
                    }
                }
                tokio::time::sleep(BACKOFF).await;
            }
        });
    }

    /// Runs one command with the op timeout; failures are counted, logged
    /// (rate-limited) and become `None`.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if now_ms() < self.down_until.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(OP_TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(op, "timed out");
                None
            }
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        telemetry::cache_redis_error(op);
        self.down_until
            .store(now_ms() + BACKOFF.as_millis() as u64, Ordering::Relaxed);
        self.log.warn(op, error);
    }
}

/// `ORIGIN\nKIND\nVALUE`.
fn parse_message(text: &str) -> Option<Purge> {
    let mut parts = text.splitn(3, '\n');
    let (_origin, kind, value) = (parts.next()?, parts.next()?, parts.next()?);
    let value = value.to_string();
    match kind {
        "key" => Some(Purge::Key(value)),
        "prefix" => Some(Purge::Prefix(value)),
        "tag" => Some(Purge::Tag(value)),
        _ => None,
    }
}

/// Escapes Redis glob characters so a prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One log line per `LOG_INTERVAL`, saying how many were held back.
#[derive(Default)]
struct LogLimiter {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    fn warn(&self, op: &str, error: &str) {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let held_back = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                op,
                error,
                held_back,
                "Redis cache tier failed; serving as a miss (next message in at most 10s)"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_parse_and_globs_are_escaped() {
        assert_eq!(
            parse_message("o\ntag\nproduct:7"),
            Some(Purge::Tag("product:7".into()))
        );
        assert_eq!(
            parse_message("o\nkey\nroute GET /a?b=1\nx"),
            Some(Purge::Key("route GET /a?b=1\nx".into()))
        );
        assert_eq!(parse_message("o\nnuke\nx"), None);
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
