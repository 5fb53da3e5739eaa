//! Evaluating the compiled parameter paths over a resource's JSON.

use serde_json::Value;

use crate::ResourceType;

use super::IndexEntry;

/// The index entries of a resource, for every parameter of its type except
/// `_id` and `_lastUpdated` (the read model has those as columns).
pub fn index(_rt: ResourceType, _resource: &Value) -> Vec<IndexEntry> {
    Vec::new()
}
