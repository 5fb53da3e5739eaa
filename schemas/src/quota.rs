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

/// The usage-metrics bucket of a tenant among `buckets` (`None`: off):
/// the first four bytes of SHA-256 of its name, big-endian, modulo
/// `buckets`. Metrics carry the bucket, never the name, so their
/// cardinality is bounded and they reveal no tenant; an operator finds a
/// tenant's bucket with the same formula, e.g.
/// `echo $(( 0x$(printf %s acme | sha256sum | cut -c1-8) % 64 ))`.
pub fn usage_bucket(tenant: &crate::TenantId, buckets: u32) -> Option<u32> {
    use sha2::{Digest, Sha256};
    if buckets == 0 {
        return None;
    }
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Some(head % buckets)
}

/// The cap that applies to a tenant: its override, else the node's default.
pub fn effective_cap(node_default: usize, tenant_override: Option<usize>) -> usize {
    tenant_override.unwrap_or(node_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_buckets_are_stable_bounded_and_off_at_zero() {
        let t = crate::TenantId::parse("acme").unwrap();
        // The documented shell formula: printf %s acme | sha256sum | cut -c1-8
        assert_eq!(usage_bucket(&t, 64), Some(0x822b_33ad % 64));
        assert_eq!(usage_bucket(&t, 0), None);
        for name in ["a", "b", "clinic-1", "clinic-2"] {
            assert!(usage_bucket(&crate::TenantId::parse(name).unwrap(), 8).unwrap() < 8);
        }
    }

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
