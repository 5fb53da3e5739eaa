//! The projector: folds fhirstream's events into PostgreSQL read models.
//!
//! One durable JetStream consumer per projector reads `fhir.>` in stream
//! order and applies events in batches. Each batch is one PostgreSQL
//! transaction that also advances the projector's checkpoint, and is acked
//! only after it commits: a crash or a redelivery can neither lose nor
//! double an event. A PostgreSQL advisory lock keeps one active instance
//! per projector, so a second instance is a hot standby, not a competitor.
//!
//! Beside the live projection, [`replay`] rebuilds one tenant's read model
//! from the stream (or a point-in-time snapshot of it) and verifies a read
//! model against the stream, with the same folding code.

pub mod apply;
pub mod consumer;
pub mod genuine;
pub mod lanes;
pub mod migrate;
pub mod refusal;
pub mod registry;
pub mod replay;
mod staging;
mod statistics;
pub mod store;
pub mod tenant_events;
pub mod tenants;
pub mod verify;

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
    /// Another replay of the tenant holds its lock.
    #[error("another replay of tenant {0} is running")]
    ReplayRunning(schemas::TenantId),
    /// The named projector has never run against this database; replaying
    /// to its (absent) checkpoint would empty the tenant.
    #[error("no projector named '{0}' has a checkpoint in this database")]
    UnknownProjector(String),
    /// The tenant is not in the read model's `tenants` table, or was deleted
    /// or re-created while a replay ran.
    #[error("tenant {0} is not in the read model (unknown, deleted or re-created)")]
    UnknownTenant(schemas::TenantId),
    /// A snapshot name that cannot name a schema.
    #[error("'{0}' cannot name a snapshot: use 1 to 54 characters of a-z, 0-9 and _")]
    InvalidSnapshotName(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}
