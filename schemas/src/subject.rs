//! NATS subjects of fhirstream, built only from validated newtypes.
//!
//! A resource event lives on `fhir.{tenant}.{ResourceType}.{id-token}`.
//! FHIR ids may contain `.`, which separates subject tokens, but never `_`;
//! so the id token is the id with every `.` written as `_`. That mapping is
//! a bijection between FHIR ids and tokens, and since tenants, types and
//! ids are validated, no input can add a token or a wildcard.

use crate::resource::{ResourceId, ResourceType};
use crate::tenant::TenantId;

/// Subjects of the resource stream.
pub const RESOURCE_SUBJECTS: &str = "fhir.>";
/// Subjects of the tenant-registry stream.
pub const TENANT_SUBJECTS: &str = "fhirstream.tenants.>";
/// Core-NATS subject on which a projector announces the stream sequence it
/// has applied, so writers can wait for read-your-writes without polling.
pub fn applied_subject(projector: &str) -> String {
    format!("fhirstream.applied.{projector}")
}

/// The subject token that stands for a resource id.
pub fn id_token(id: &ResourceId) -> String {
    id.as_str().replace('.', "_")
}

/// The subject of one resource's events.
pub fn resource_subject(tenant: &TenantId, rt: ResourceType, id: &ResourceId) -> String {
    format!("fhir.{tenant}.{rt}.{}", id_token(id))
}

/// Every event of one tenant.
pub fn tenant_filter(tenant: &TenantId) -> String {
    format!("fhir.{tenant}.>")
}

/// Every resource event of one tenant, without its identifier claims
/// (those have five tokens): what a replay of the tenant reads.
pub fn tenant_resource_filter(tenant: &TenantId) -> String {
    format!("fhir.{tenant}.*.*")
}

/// The subject of a tenant's lifecycle events.
pub fn tenant_subject(tenant: &TenantId) -> String {
    format!("fhirstream.tenants.{tenant}")
}

/// The subject of a criteria claim: `fhir.{tenant}.{Type}._key.{hash}`.
/// Conditional writes claim the canonical form of the criteria they are
/// conditioned on here, in the same atomic batch as the resource, so two
/// racing conditional creates with the same criteria cannot both succeed.
/// Five tokens, so resource filters `fhir.*.*.*` and `fhir.{t}.{Type}.*`
/// never match it; the token is a SHA-256 of the criteria, so no search
/// value (often PHI, an identifier) appears in a subject.
pub fn criteria_claim_subject(tenant: &TenantId, rt: ResourceType, canonical_criteria: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical_criteria.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("fhir.{tenant}.{rt}._key.{hex}")
}

/// The subject of an id claim: `fhir._ids.{Type}._id.{id-token}`.
/// Creates of a shareable type, in the shared space or in a tenant that
/// reads that type from it, claim the id here in the same atomic batch as
/// the resource, so a tenant and the shared space can never both create
/// `Type/id` (the collision rule of DESIGN section 6). `_ids` is no valid
/// tenant name, so no tenant's filter or permission ever matches it, and
/// with five tokens no resource filter does either.
pub fn id_claim_subject(rt: ResourceType, id: &ResourceId) -> String {
    format!("fhir._ids.{rt}._id.{}", id_token(id))
}

/// Subjects of resource events only (exactly four tokens).
pub const RESOURCE_EVENT_SUBJECTS: &str = "fhir.*.*.*";

/// The parts of a resource subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAddress {
    pub tenant: TenantId,
    pub resource_type: ResourceType,
    pub id: ResourceId,
}

/// Why a subject is not a resource subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a fhirstream resource subject")]
pub struct SubjectError(String);

/// Parses `fhir.{tenant}.{type}.{id-token}` back into its parts.
pub fn parse_resource_subject(subject: &str) -> Result<ResourceAddress, SubjectError> {
    let err = || SubjectError(subject.chars().take(200).collect());
    let mut parts = subject.split('.');
    let (Some("fhir"), Some(t), Some(rt), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err());
    };
    if id.contains('.') {
        return Err(err());
    }
    Ok(ResourceAddress {
        tenant: TenantId::parse(t).map_err(|_| err())?,
        resource_type: ResourceType::parse(rt).map_err(|_| err())?,
        id: ResourceId::parse(&id.replace('_', ".")).map_err(|_| err())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(t: &str, rt: &str, id: &str) -> (TenantId, ResourceType, ResourceId) {
        (TenantId::parse(t).unwrap(), ResourceType::parse(rt).unwrap(), ResourceId::parse(id).unwrap())
    }

    #[test]
    fn ids_with_dots_and_dashes_round_trip_through_the_subject() {
        for id in ["a", "a.b.c", "-.-", "1.2.840.10008", "x-y", "...", "A.b-C.9"] {
            let (t, rt, id) = addr("acme", "Patient", id);
            let s = resource_subject(&t, rt, &id);
            assert_eq!(s.split('.').count(), 4, "{s}");
            let back = parse_resource_subject(&s).unwrap();
            assert_eq!((back.tenant, back.resource_type, back.id), (t, rt, id));
        }
    }

    #[test]
    fn subjects_never_hold_wildcards_or_whitespace() {
        let (t, rt, id) = addr("a-1", "Observation", "x.y");
        let s = resource_subject(&t, rt, &id);
        assert!(!s.contains(['*', '>', ' ', '\t', '\n']));
        assert_eq!(s, "fhir.a-1.Observation.x_y");
    }

    #[test]
    fn id_claims_match_no_tenant_filter_and_no_resource_filter() {
        let (_, rt, id) = addr("acme", "Practitioner", "p.1");
        let s = id_claim_subject(rt, &id);
        assert_eq!(s, "fhir._ids.Practitioner._id.p_1");
        assert!(TenantId::parse("_ids").is_err(), "the claim space must not be a tenant name");
        assert!(parse_resource_subject(&s).is_err());
        assert_eq!(s.split('.').count(), 5);
    }

    #[test]
    fn identifier_claims_hide_the_identifier_and_never_look_like_resource_subjects() {
        let (t, rt, _) = addr("acme", "Patient", "x");
        let s = criteria_claim_subject(&t, rt, "identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-ssn%7C999-12-3456");
        assert!(!s.contains("999"));
        assert_eq!(s.split('.').count(), 5);
        assert!(parse_resource_subject(&s).is_err());
        assert_ne!(
            s,
            criteria_claim_subject(&t, rt, "identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-ssn%7C999-12-3457")
        );
    }

    #[test]
    fn foreign_or_malformed_subjects_do_not_parse() {
        for s in [
            "fhir.acme.Patient",
            "fhir.acme.Patient.a.b",
            "fhir.Acme.Patient.a",
            "fhir.acme.Nope.a",
            "fhirx.acme.Patient.a",
            "fhir.acme.Patient.*",
            "fhir.acme.Patient.>",
            "fhir.acme.Patient.",
        ] {
            assert!(parse_resource_subject(s).is_err(), "{s}");
        }
    }
}
