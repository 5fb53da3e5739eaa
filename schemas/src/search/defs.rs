//! The search parameters of each resource type (generated data, loaded once).

use crate::ResourceType;

use super::ParamKind;

/// A search parameter as the server supports it.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub name: &'static str,
    pub kind: ParamKind,
    /// The canonical URL of the official definition.
    pub url: &'static str,
    /// For references: the resource types it may point at.
    pub targets: Vec<ResourceType>,
}

/// Every supported parameter of `rt`, including the common ones
/// (`_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`).
pub fn params(_rt: ResourceType) -> &'static [SearchParam] {
    &[]
}

/// The supported parameter `name` of `rt`.
pub fn param(rt: ResourceType, name: &str) -> Option<&'static SearchParam> {
    params(rt).iter().find(|p| p.name == name)
}

/// Names of official parameters of `rt` that are not supported (composite,
/// special, or an expression the extractor cannot evaluate).
pub fn unsupported(_rt: ResourceType) -> &'static [&'static str] {
    &[]
}
