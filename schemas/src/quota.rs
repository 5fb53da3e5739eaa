//! A tenant's own quotas: overrides, in its configuration, of the node's
//! per-tenant defaults (the `--tenant-max-*` settings). An operator raises
//! them for a large tenant or lowers them for a noisy one; node-wide limits
//! still bound every tenant together.

use serde::{Deserialize, Serialize};

/// Per-tenant overrides; a field left out takes the node's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Requests in flight on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<usize>,
    /// Change feeds (`$events`) open on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeds: Option<usize>,
    /// `$export` jobs running on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<usize>,
}

impl TenantQuotas {
    /// Every override must be positive: a tenant is cut off by deleting or
    /// restricting it, not by a quota of 0.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in
            [("concurrent_requests", self.concurrent_requests), ("feeds", self.feeds), ("exports", self.exports)]
        {
            if v == Some(0) {
                return Err(format!("quotas.{name} must be positive"));
            }
        }
        Ok(())
    }
}

/// The cap that applies to a tenant: its override, else the node's default.
pub fn effective_cap(node_default: usize, tenant_override: Option<usize>) -> usize {
    tenant_override.unwrap_or(node_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_override_wins_over_the_node_default_and_must_be_positive() {
        assert_eq!(effective_cap(64, None), 64);
        assert_eq!(effective_cap(64, Some(2)), 2);
        assert_eq!(effective_cap(1, Some(3)), 3);
        assert!(TenantQuotas { feeds: Some(0), ..Default::default() }.check().unwrap_err().contains("feeds"));
        assert!(TenantQuotas { exports: Some(1), ..Default::default() }.check().is_ok());
        let parsed: TenantQuotas = serde_json::from_str(r#"{"concurrent_requests": 8}"#).unwrap();
        assert_eq!(parsed.concurrent_requests, Some(8));
        assert!(serde_json::from_str::<TenantQuotas>(r#"{"nope": 1}"#).is_err());
    }
}
