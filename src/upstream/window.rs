//! A sliding window of counters in fixed slots: what the retry budget and
//! the circuit breaker measure rates over. Cheap to update (one slot), exact
//! to a slot's length, and driven by tokio's clock so tests can pause time.

use std::time::Duration;
use tokio::time::Instant;

/// Two counters (e.g. calls and failures) summed over the last `slots × slot_len`.
#[derive(Debug)]
pub struct Window {
    origin: Instant,
    slot_len: Duration,
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot of time (since `origin`) this holds; stale ones are ignored.
    index: u64,
    a: u64,
    b: u64,
}

/// The number of slots a window is split into: each slot is a tenth of it.
const SLOTS: u32 = 10;

impl Window {
    /// A window of length `len`.
    pub fn new(len: Duration) -> Self {
        let slot_len = (len / SLOTS).max(Duration::from_millis(1));
        Window {
            origin: Instant::now(),
            slot_len,
            slots: vec![Slot::default(); SLOTS as usize],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        // Slot 0 is never used, so a zeroed slot is always stale.
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
            + 1
    }

    /// Adds to the counters of the current slot.
    pub fn add(&mut self, now: Instant, a: u64, b: u64) {
        let index = self.index(now);
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(index % n) as usize];
        if slot.index != index {
            *slot = Slot { index, a: 0, b: 0 };
        }
        slot.a += a;
        slot.b += b;
    }

    /// The sums over the window.
    pub fn sums(&self, now: Instant) -> (u64, u64) {
        let index = self.index(now);
        let n = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|s| s.index <= index && s.index + n > index)
            .fold((0, 0), |(a, b), s| (a + s.a, b + s.b))
    }

    /// The counters of the current slot only.
    pub fn current(&self, now: Instant) -> (u64, u64) {
        let index = self.index(now);
        let slot = &self.slots[(index % self.slots.len() as u64) as usize];
        if slot.index == index {
            (slot.a, slot.b)
        } else {
            (0, 0)
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = Slot::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_expire_slot_by_slot() {
        let mut w = Window::new(Duration::from_secs(10));
        let t0 = Instant::now();
        w.add(t0, 5, 1);
        w.add(t0 + Duration::from_secs(5), 3, 3);
        assert_eq!(w.sums(t0 + Duration::from_secs(5)), (8, 4));
        assert_eq!(w.current(t0 + Duration::from_secs(5)), (3, 3));
        // Ten seconds after the first slot it has left the window.
        assert_eq!(w.sums(t0 + Duration::from_millis(10_500)), (3, 3));
        assert_eq!(w.sums(t0 + Duration::from_secs(16)), (0, 0));
        w.clear();
        assert_eq!(w.sums(t0 + Duration::from_secs(5)), (0, 0));
    }
}
