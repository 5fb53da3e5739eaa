//! The write side of fhirstream.
//!
//! A write is decided by a pure function of the resource's current version
//! and the request ([`decide`]), then published as one event to JetStream
//! with the resource subject's expected last sequence, so two writers can
//! never both produce version N+1. The stream is the source of truth; this
//! crate never touches the read models.

pub mod applied;
pub mod batch_slots;
pub mod bundle;
pub mod context;
pub mod criteria;
pub mod decide;
pub mod index_cap;
pub mod resources;
pub mod shared_ids;
pub mod store;
pub mod tenants;
pub mod transaction;

pub use applied::AppliedWatch;
pub use batch_slots::BatchLimits;
pub use context::{NoProfiles, ProfileSource, WriteContext};
pub use resources::{Commands, Written};
pub use shared_ids::SharedIds;
pub use store::{EventStore, StreamNames};

use schemas::Version;
use schemas::validate::ValidationError;

/// Why a write was not done. Variants are what a caller acts on; only the
/// HTTP edge turns them into status codes.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The body is not a resource this URL accepts.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A request that is malformed beyond a single resource (e.g. a Bundle).
    #[error("{0}")]
    BadRequest(String),
    /// The resource a write needs does not exist (PATCH of nothing).
    #[error("{0}")]
    NotFound(String),
    /// Well-formed but cannot be carried out (a failing JSON Patch `test`).
    #[error("{0}")]
    Unprocessable(String),
    /// A conditional operation's criteria matched several resources.
    #[error("the conditional criteria match {0} resources; they must match at most one")]
    MultipleMatches(usize),
    /// `If-Match` named a version that is not the current one.
    #[error("the resource is at version {current:?}, not the version in If-Match")]
    PreconditionFailed { current: Option<Version> },
    /// Another writer changed the resource between our read and our write.
    #[error("the resource was changed concurrently by another request; read it again and retry")]
    Conflict,
    /// The id belongs to the shared space, or to a tenant that reads this
    /// type from it (the message names no tenant).
    #[error("{0}")]
    IdTaken(String),
    /// The tenant already exists (create) or does not (configure, delete).
    #[error("tenant '{0}' already exists")]
    TenantExists(String),
    #[error("tenant '{0}' does not exist")]
    TenantNotFound(String),
    /// The request is larger than one atomic commit can be.
    #[error("{0}")]
    TooLarge(String),
    /// NATS is unreachable or did not answer in time; nothing is known to
    /// have been written.
    #[error("the event stream is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}
