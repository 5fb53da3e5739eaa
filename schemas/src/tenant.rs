//! Tenant names and tenant configuration.
//!
//! The tenant-id contract: a `TenantId` matches
//! `^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`, so it is safe as a NATS subject
//! token, a URL path segment and a SQL value without escaping. Storage may
//! rely on that; it must not assume a tenant exists just because its name
//! parses — existence is the registry's business.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Names that can never be created as tenants: `shared` is the space of
/// shared resources, `admin` and `metadata` would shadow routes.
pub const RESERVED_TENANT_NAMES: &[&str] = &["shared", "admin", "metadata"];

/// The name of the shared-resources space (`/fhir/shared`).
pub const SHARED: &str = "shared";

/// A validated tenant name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// Why a string is not a tenant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("tenant name must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    Malformed,
    #[error("tenant name '{0}' is reserved")]
    Reserved(String),
}

impl TenantId {
    /// Parses a tenant name as it appears in a URL or subject; accepts the
    /// reserved `shared` space, which is addressable but not creatable.
    pub fn parse(s: &str) -> Result<Self, TenantIdError> {
        let b = s.as_bytes();
        let ok_inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
        let ok_edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let valid =
            !b.is_empty() && b.len() <= 63 && b.iter().all(ok_inner) && ok_edge(&b[0]) && ok_edge(&b[b.len() - 1]);
        if valid { Ok(Self(s.to_owned())) } else { Err(TenantIdError::Malformed) }
    }

    /// Parses a name for a tenant that is about to be created: reserved
    /// names are refused.
    pub fn parse_new(s: &str) -> Result<Self, TenantIdError> {
        let id = Self::parse(s)?;
        if RESERVED_TENANT_NAMES.contains(&s) {
            return Err(TenantIdError::Reserved(s.to_owned()));
        }
        Ok(id)
    }

    /// The shared-resources space.
    pub fn shared() -> Self {
        Self(SHARED.to_owned())
    }

    pub fn is_shared(&self) -> bool {
        self.0 == SHARED
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A tenant's configuration, carried whole in every tenant event so the
/// registry is a simple fold (last event wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Resource types this tenant may use; `None` means every R4 type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_types: Option<Vec<String>>,
    /// Shareable types this tenant reads from `shared`; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_reads: Option<Vec<String>>,
    /// Largest accepted request body in bytes; `None` means the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// The FHIR version the tenant speaks; only `4.0.1` for now, stored so
    /// that tenants on other versions can come later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_version: Option<String>,
    /// What writes are validated against beyond base R4 (strictness,
    /// enforced profiles); `None` means strict base rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<crate::validate::ValidationPolicy>,
    /// This tenant's overrides of the node's per-tenant quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<crate::quota::TenantQuotas>,
}

impl TenantConfig {
    /// Checks that every type named is an R4 resource type.
    pub fn validate(&self) -> Result<(), String> {
        for (field, types) in [("allowed_types", &self.allowed_types), ("shared_reads", &self.shared_reads)] {
            for t in types.iter().flatten() {
                crate::ResourceType::parse(t).map_err(|e| format!("{field}: {e}"))?;
            }
        }
        if let Some(v) = &self.validation {
            v.check()?;
        }
        if let Some(q) = &self.quotas {
            q.check()?;
        }
        if self.max_body_bytes == Some(0) {
            return Err("max_body_bytes must be positive".into());
        }
        if let Some(v) = &self.fhir_version
            && v != crate::r4::FHIR_VERSION
        {
            return Err(format!("fhir_version: only {} is supported, not '{v}'", crate::r4::FHIR_VERSION));
        }
        Ok(())
    }

    /// Whether this tenant may use resources of `resource_type`.
    pub fn allows(&self, resource_type: &str) -> bool {
        self.allowed_types.as_ref().is_none_or(|types| types.iter().any(|t| t == resource_type))
    }

    /// Which of the deployment's shareable types this tenant reads from the
    /// shared space: those it may use and has not opted out of.
    pub fn reads_from_shared(&self, shareable: &[crate::ResourceType]) -> Vec<crate::ResourceType> {
        shareable
            .iter()
            .copied()
            .filter(|rt| self.allows(rt.as_str()))
            .filter(|rt| self.shared_reads.as_ref().is_none_or(|only| only.iter().any(|t| t == rt.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_parse() {
        for n in ["a", "acme", "clinic-42", "0", "a-b-c", &"x".repeat(63)] {
            assert!(TenantId::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn names_that_could_break_a_subject_or_path_are_refused() {
        for n in ["", "-a", "a-", "Acme", "a.b", "a*", ">", "a b", "a_b", "a/b", "é", &"x".repeat(64)] {
            assert_eq!(TenantId::parse(n), Err(TenantIdError::Malformed), "{n:?}");
        }
    }

    #[test]
    fn reserved_names_are_addressable_but_not_creatable() {
        assert!(TenantId::parse("shared").unwrap().is_shared());
        for n in RESERVED_TENANT_NAMES {
            assert!(matches!(TenantId::parse_new(n), Err(TenantIdError::Reserved(_))));
        }
    }

    #[test]
    fn a_config_naming_a_non_r4_type_is_invalid() {
        let bad = TenantConfig { allowed_types: Some(vec!["Patient".into(), "Nope".into()]), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("Nope"));
        assert!(TenantConfig::default().validate().is_ok());
    }

    #[test]
    fn a_tenant_reads_the_shareable_types_it_may_use_and_did_not_opt_out_of() {
        let rt = |s: &str| crate::ResourceType::parse(s).unwrap();
        let shareable = [rt("Practitioner"), rt("Organization"), rt("Location")];
        assert_eq!(TenantConfig::default().reads_from_shared(&shareable), shareable.to_vec());
        let cfg = TenantConfig {
            allowed_types: Some(vec!["Patient".into(), "Practitioner".into(), "Location".into()]),
            shared_reads: Some(vec!["Practitioner".into(), "Organization".into()]),
            ..Default::default()
        };
        assert_eq!(cfg.reads_from_shared(&shareable), vec![rt("Practitioner")]);
    }

    #[test]
    fn config_without_allowed_types_allows_everything() {
        let all = TenantConfig::default();
        assert!(all.allows("Patient"));
        let some = TenantConfig { allowed_types: Some(vec!["Patient".into()]), ..Default::default() };
        assert!(some.allows("Patient"));
        assert!(!some.allows("Observation"));
    }
}
