//! The bulkhead of one upstream: at most `max_in_flight` calls at once.
//! A call over the cap fails at once (503, kind `overloaded`) instead of
//! queueing, so a stalled upstream holds a bounded number of sockets and
//! tasks, and the rest of the gateway keeps serving.

use super::CallError;
use crate::telemetry;
use tokio::sync::{Semaphore, SemaphorePermit};

/// One upstream's in-flight cap.
#[derive(Debug)]
pub struct Bulkhead {
    upstream: String,
    slots: Semaphore,
}

impl Bulkhead {
    /// A cap of `max_in_flight`.
    pub fn new(upstream: &str, max_in_flight: usize) -> Self {
        Bulkhead {
            upstream: upstream.to_string(),
            slots: Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS)),
        }
    }

    /// A slot, held until dropped, or `Overloaded` when all are taken.
    pub fn try_enter(&self) -> Result<SemaphorePermit<'_>, CallError> {
        self.slots.try_acquire().map_err(|_| {
            telemetry::bulkhead_rejected(&self.upstream);
            CallError::Overloaded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_calls_over_the_cap_and_frees_slots() {
        let b = Bulkhead::new("t", 2);
        let one = b.try_enter().unwrap();
        let _two = b.try_enter().unwrap();
        assert_eq!(b.try_enter().unwrap_err(), CallError::Overloaded);
        drop(one);
        assert!(b.try_enter().is_ok());
    }
}
