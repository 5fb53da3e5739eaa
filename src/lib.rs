//! fhirstream: an event-sourced, multitenant FHIR R4 resource store.
//!
//! This crate is the binary's library half: configuration, the HTTP edge
//! and start-up wiring. The domain lives in the workspace crates
//! (`schemas`, `command`, `projector`, `query`).

pub mod cli;
pub mod config;
pub mod config_file;
pub mod export;
pub mod http;
pub mod import;
pub mod natsauth;
pub mod profiles;
pub mod replay;
pub mod revalidate;
pub mod serve;
pub mod startup;
pub mod telemetry;
pub mod tenancy;
