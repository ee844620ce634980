//! End-to-end tests: real sockets, real upstream servers, the gateway on port 0.

mod attacks;
mod cli;
mod common;
mod demo;
mod failures;
mod faults;
mod graph;
mod hardening;
mod kit;
mod lifecycle;
mod merge;
mod metrics;
mod proxy;
mod redis_fixture;
mod resilience;
mod security;
mod smoke;
mod tls;
