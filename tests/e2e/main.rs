//! End-to-end tests: real sockets, real upstream servers, the gateway on port 0.

mod common;
mod smoke;
