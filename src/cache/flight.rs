//! Single-flight: concurrent misses for one key share one fetch.
//!
//! The first request for a key starts a flight (a shared future); the others
//! join it and wait for its answer. The map holds the flight only weakly: the
//! fetch runs while any request still waits for it, and when every waiter
//! has gone (clients hung up) the fetch is dropped, which closes its upstream
//! connection, as an uncached call would. A flight removes itself from the
//! map when it ends, finished or dropped.

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Flight<T> = Shared<BoxFuture<'static, T>>;
/// Running flights by key, each with an id (so a flight removes only itself).
type FlightMap<T> = Arc<Mutex<HashMap<Arc<str>, (u64, WeakShared<BoxFuture<'static, T>>)>>>;

/// In-flight fetches by key.
pub struct Flights<T: Clone + Send + Sync + 'static> {
    map: FlightMap<T>,
    next_id: AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Whether a waiter started the flight or joined one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started it: its own fetch ran.
    Leader,
    /// Joined one already running.
    Follower,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Joins the flight for `key`, or starts one with `start()`.
    pub async fn join<F>(&self, key: &str, start: impl FnOnce() -> F) -> (Role, T)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (role, flight) = self.flight(key, start);
        (role, flight.await)
    }

    /// The flight for `key` (joined or started); awaiting it drives it.
    pub fn flight<F>(&self, key: &str, start: impl FnOnce() -> F) -> (Role, Flight<T>)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = map.get(key).and_then(|(_, weak)| weak.upgrade()) {
            return (Role::Follower, running);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key: Arc<str> = key.into();
        let guard = Leave {
            map: self.map.clone(),
            key: key.clone(),
            id,
        };
        let fut = start();
        let flight = async move {
            let _leave = guard;
            fut.await
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            map.insert(key, (id, weak));
        }
        (Role::Leader, flight)
    }

    /// Flights running now.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a flight from the map when it ends (finished or dropped).
struct Leave<T: Clone + Send + Sync + 'static> {
    map: FlightMap<T>,
    key: Arc<str>,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static> Drop for Leave<T> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_joiners_share_one_fetch() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .join("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        7
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (role, v) = t.await.unwrap();
            assert_eq!(v, 7);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert!(flights.is_empty(), "a finished flight leaves the map");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flight_nobody_waits_for_is_dropped() {
        let flights: Flights<u32> = Flights::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = dropped.clone();
        let waiting = flights.join("k", || async move {
            let _d = OnDrop(d);
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        });
        let _ = tokio::time::timeout(Duration::from_millis(10), waiting).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the fetch was cancelled");
        assert!(flights.is_empty());
        let (role, v) = flights.join("k", || async { 2 }).await;
        assert_eq!(
            (role, v),
            (Role::Leader, 2),
            "the next request starts afresh"
        );
    }
}
