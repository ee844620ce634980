//! End-to-end tests: real sockets, real upstream servers, the gateway on port 0.

mod cache;
mod cli;
mod common;
mod dashboard_browser;
mod demo;
mod failures;
mod graph;
mod hardening;
mod merge;
mod metrics;
mod observability;
mod process;
mod proxy;
mod ratelimit;
mod redis_fixture;
mod security;
mod smoke;
mod trace_context;
