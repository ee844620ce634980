//! Whether the gateway takes traffic, for `/readyz`: not before its listener
//! is bound, and not once it drains for shutdown (so a load balancer or a
//! Kubernetes readiness probe stops sending it requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// A shared readiness flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicU8>);

/// Where the gateway is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Config loaded, listener not bound yet.
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: finishing in-flight requests, taking no new ones.
    Draining,
}

impl Readiness {
    /// The listener is bound.
    pub fn ready(&self) {
        // Never back from draining to ready.
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Shutdown has begun.
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.0.load(Ordering::SeqCst) {
            STARTING => State::Starting,
            READY => State::Ready,
            _ => State::Draining,
        }
    }
}
