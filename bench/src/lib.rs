//! fhirstream-bench: the load generator and raw baselines behind
//! `make bench` (issue 10).
//!
//! It runs as its own process against a server it is pointed at, drives the
//! HTTP scenarios ([`scenarios`]: P1 CRUD mix, P3 read by id, P5
//! read-your-writes vs eventual), measures what NATS and PostgreSQL on the
//! same machine do for the same work with nothing in between ([`raw`]), and
//! reports each figure beside its baseline ([`report`]): a table on stdout,
//! JSON, and a PNG chart. Scenarios that need features the server does not
//! have yet (P2 import, P4 isolation, P6 replay) are reported as "not yet
//! implemented", never estimated.

// Tests may unwrap: a panic is how a test reports.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod http;
pub mod payloads;
pub mod pgstat;
pub mod probe;
pub mod projstat;
pub mod raw;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod stats;
