//! End-to-end tests: real sockets, real upstream servers, the gateway on port 0.

mod cli;
mod common;
mod demo;
mod failures;
mod graph;
mod hardening;
mod merge;
mod metrics;
mod proxy;
mod ratelimit;
mod redis_fixture;
mod security;
mod smoke;
