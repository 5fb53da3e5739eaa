//! The projector: folds fhirstream's events into PostgreSQL read models.
//!
//! One durable JetStream consumer per projector reads `fhir.>` in stream
//! order and applies events in batches. Each batch is one PostgreSQL
//! transaction that also advances the projector's checkpoint, and is acked
//! only after it commits: a crash or a redelivery can neither lose nor
//! double an event. A PostgreSQL advisory lock keeps one active instance
//! per projector, so a second instance is a hot standby, not a competitor.

pub mod apply;
pub mod consumer;
pub mod migrate;
pub mod registry;
pub mod store;
pub mod tenants;

pub use consumer::{Projector, ProjectorConfig};
pub use registry::{TenantRegistry, TenantState};

/// What can go wrong while projecting.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// PostgreSQL refused or is unreachable; the batch will be retried.
    #[error("the read-model database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// NATS refused or is unreachable.
    #[error("the event stream failed: {0}")]
    Stream(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}
