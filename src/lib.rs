//! Switchyard: an API aggregation gateway.
pub mod admin;
pub mod cache;
pub mod compose;
pub mod config;
pub mod demo;
pub mod exec;
pub mod limit;
pub mod plan;
pub mod server;
pub mod telemetry;
pub mod upstream;

#[cfg(test)]
mod properties;
