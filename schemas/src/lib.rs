//! The contract crate of fhirstream: the types every other part agrees on.
//!
//! Tenants, resource types and ids are parsed here once, at the edge, into
//! newtypes that cannot hold an invalid value; subjects are built only from
//! those newtypes, so no input can widen a subject. The event envelopes are
//! the versioned wire format of the stream. Nothing here does I/O.

pub mod event;
pub mod genuine;
pub mod outcome;
pub mod quota;
pub mod r4;
pub mod resource;
pub mod scope;
pub mod search;
pub mod snapshot;
pub mod subject;
pub mod subset;
pub mod tenant;
pub mod validate;

pub use event::{Actor, Commit, EventOp, Incarnation, ResourceEvent, TenantEvent, TenantEventOp};
pub use outcome::{IssueCode, OperationOutcome};
pub use resource::{ResourceId, ResourceType, Version};
pub use snapshot::SnapshotName;
pub use tenant::{TenantConfig, TenantId};
