//! Id claims between the shared space and the tenants that read from it.
//!
//! A tenant reading `Practitioner` from `shared` must never hold a
//! `Practitioner/x` while `shared` holds one too: merged reads would show
//! two resources under one address. Checking the read model first is racy
//! (both sides can check, then both write), so every create of a covered
//! type writes the id's claim subject ([`id_claim_subject`]) in the same
//! atomic batch as the resource, expecting the claim's last sequence. Two
//! racing creates of one id therefore serialise on that subject: the loser's
//! batch is refused and its retry sees the winner.
//!
//! The claim lists who created the id (tenant names and `shared`). Deletes
//! do not touch it: a holder counts only while the stream says its resource
//! is live, which is read fresh at decision time.
//!
//! A server-assigned id (`POST`) needs no atomic batch. Nobody else can know
//! it before its resource is on the stream, so no rival can race for it; the
//! claim is appended first ([`fresh_claim`]) and the resource right after.
//! Anyone who learns the id later also finds the claim, and a claim whose
//! resource never arrived counts for nothing, like one whose resource was
//! deleted. This matters for speed: JetStream stages every atomic batch in
//! a directory of its own on disk (measured: ~70 ms per two-message batch
//! under load, and it slowed every other publish; docs/findings.md).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use schemas::subject::{id_claim_subject, resource_subject};
use schemas::{ResourceId, ResourceType, TenantId};

use crate::CommandError;
use crate::resources::current_of;
use crate::store::{BatchMessage, EventStore};

/// Schema tag of a claim's payload.
pub const ID_CLAIM_SCHEMA: &str = "fhirstream.id-claim/1";

/// Which creates of a writer claim their id, decided at the edge from the
/// deployment's shareable types and the tenant's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedIds {
    /// For the shared space: every shareable type. For a tenant: the types
    /// it reads from the shared space. Empty: no claims.
    pub types: Vec<ResourceType>,
}

impl SharedIds {
    /// No type is shared with anyone: creates claim nothing.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn covers(&self, rt: ResourceType) -> bool {
        self.types.contains(&rt)
    }
}

/// The payload of a claim subject's last message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaim {
    pub schema: String,
    /// Who created the id, oldest first (`shared` or tenant names).
    pub holders: Vec<TenantId>,
}

/// The other holders whose liveness decides whether `writer` may create
/// the id: for a tenant only `shared` (tenants may share ids with each
/// other: identifiers and ids are unique per tenant); for `shared` every
/// tenant that claimed it.
pub fn rivals(claim: &IdClaim, writer: &TenantId) -> Vec<TenantId> {
    claim.holders.iter().filter(|h| *h != writer && (writer.is_shared() || h.is_shared())).cloned().collect()
}

/// Decides a create given which rivals still hold the id live: refused if
/// any does; otherwise the claim after this create (dead rivals dropped,
/// the writer added once).
pub fn decide_claim(claim: &IdClaim, writer: &TenantId, live_rivals: &[TenantId]) -> Result<IdClaim, Collision> {
    if !live_rivals.is_empty() {
        return Err(if writer.is_shared() { Collision::HeldByTenant } else { Collision::HeldByShared });
    }
    let dead = rivals(claim, writer);
    let mut holders: Vec<TenantId> = claim.holders.iter().filter(|h| !dead.contains(h)).cloned().collect();
    if !holders.contains(writer) {
        holders.push(writer.clone());
    }
    Ok(IdClaim { schema: ID_CLAIM_SCHEMA.into(), holders })
}

/// Why an id may not be created; the messages name no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    HeldByShared,
    HeldByTenant,
}

impl Collision {
    pub fn message(self, rt: ResourceType, id: &ResourceId) -> String {
        match self {
            Self::HeldByShared => format!(
                "{rt}/{id} is a shared resource; it can be changed only through the shared space (/fhir/shared)"
            ),
            Self::HeldByTenant => {
                format!(
                    "{rt}/{id} is already used by a tenant that reads {rt} from the shared space; choose another id"
                )
            }
        }
    }
}

/// Reads the claim of `rt/id`, checks its rivals on the stream and returns
/// the claim message to append with the create, or `None` when the writer
/// does not claim `rt`.
pub(crate) async fn claim_for_create(
    store: &EventStore,
    writer: &TenantId,
    shared_ids: &SharedIds,
    rt: ResourceType,
    id: &ResourceId,
) -> Result<Option<BatchMessage>, CommandError> {
    if !shared_ids.covers(rt) {
        return Ok(None);
    }
    let subject = id_claim_subject(rt, id);
    let last = store.last_claim(&subject).await?;
    let claim = match &last {
        Some(l) => serde_json::from_slice(&l.payload).unwrap_or_default(),
        None => IdClaim::default(),
    };
    let mut live = Vec::new();
    for rival in rivals(&claim, writer) {
        if let Some(event) = store.last_resource_event(&resource_subject(&rival, rt, id)).await?
            && !current_of(&event)?.deleted
        {
            live.push(rival);
        }
    }
    let next = decide_claim(&claim, writer, &live).map_err(|c| CommandError::IdTaken(c.message(rt, id)))?;
    claim_message(subject, last.map_or(0, |l| l.seq), &next).map(Some)
}

/// The claim of an id the server has just generated: its claim subject is
/// empty, so there is nothing to read and nobody to collide with.
pub(crate) fn fresh_claim(
    writer: &TenantId,
    shared_ids: &SharedIds,
    rt: ResourceType,
    id: &ResourceId,
) -> Result<Option<BatchMessage>, CommandError> {
    if !shared_ids.covers(rt) {
        return Ok(None);
    }
    let claim = IdClaim { schema: ID_CLAIM_SCHEMA.into(), holders: vec![writer.clone()] };
    claim_message(id_claim_subject(rt, id), 0, &claim).map(Some)
}

/// The message appending `claim` to its subject, expecting `expected_seq`.
fn claim_message(subject: String, expected_seq: u64, claim: &IdClaim) -> Result<BatchMessage, CommandError> {
    let payload = serde_json::to_vec(claim).map_err(|e| CommandError::Internal(e.into()))?;
    Ok(BatchMessage { subject, event_id: Uuid::now_v7(), expected_seq, headers: Vec::new(), payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn claim(holders: &[&str]) -> IdClaim {
        IdClaim { schema: ID_CLAIM_SCHEMA.into(), holders: holders.iter().map(|h| t(h)).collect() }
    }

    #[test]
    fn a_tenant_only_has_to_fear_the_shared_space() {
        assert_eq!(rivals(&claim(&["a", "shared", "b"]), &t("c")), vec![t("shared")]);
        assert!(rivals(&claim(&["a", "b"]), &t("c")).is_empty());
    }

    #[test]
    fn the_shared_space_has_to_fear_every_tenant_that_claimed_the_id() {
        assert_eq!(rivals(&claim(&["a", "shared", "b"]), &t("shared")), vec![t("a"), t("b")]);
    }

    #[test]
    fn a_live_rival_refuses_the_create_and_the_message_names_no_tenant() {
        let rt = ResourceType::parse("Practitioner").unwrap();
        let id = ResourceId::parse("x").unwrap();
        let err = decide_claim(&claim(&["acme"]), &t("shared"), &[t("acme")]).unwrap_err();
        assert_eq!(err, Collision::HeldByTenant);
        assert!(!err.message(rt, &id).contains("acme"));
        let err = decide_claim(&claim(&["shared"]), &t("acme"), &[t("shared")]).unwrap_err();
        assert_eq!(err, Collision::HeldByShared);
    }

    #[test]
    fn dead_rivals_are_dropped_and_the_writer_is_added_once() {
        let next = decide_claim(&claim(&["a", "shared"]), &t("a"), &[]).unwrap();
        assert_eq!(next.holders, vec![t("a")]);
        let next = decide_claim(&claim(&["a", "b"]), &t("shared"), &[]).unwrap();
        assert_eq!(next.holders, vec![t("shared")]);
        let next = decide_claim(&claim(&["a"]), &t("b"), &[]).unwrap();
        assert_eq!(next.holders, vec![t("a"), t("b")]);
        assert_eq!(decide_claim(&IdClaim::default(), &t("a"), &[]).unwrap().schema, ID_CLAIM_SCHEMA);
    }
}
