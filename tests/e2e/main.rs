//! End-to-end tests: real sockets, real upstream servers, the gateway on port 0.

mod attacks;
mod body_reads;
mod cache;
mod cli;
mod common;
mod dashboard_browser;
mod demo;
mod failures;
mod faults;
mod graph;
mod hardening;
mod kit;
mod lifecycle;
mod merge;
mod metrics;
mod observability;
mod process;
mod proxy;
mod ratelimit;
mod redis_fixture;
mod resilience;
mod security;
mod smoke;
mod tls;
mod trace_context;
