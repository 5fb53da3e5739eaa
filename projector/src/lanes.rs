//! Projection lanes: one consumed batch split into parts that are applied
//! at once, each in its own transaction on its own connection.
//!
//! One projector connection kept one PostgreSQL backend busy while the
//! other cores idled (docs/findings.md, "Projection lanes"). Splitting a
//! batch lets PostgreSQL write its parts in parallel. Which lane an event
//! takes does not matter for correctness: the batch function is
//! order-independent (migration 0009), so two versions of one resource in
//! two lanes still leave the newer one current. Routing by resource keeps
//! a resource's versions in one lane anyway, so lanes seldom wait on each
//! other's row locks; a multi-event commit (a transaction Bundle) stays
//! whole, because a commit is applied in one PostgreSQL transaction.

use std::hash::{Hash as _, Hasher as _};

use schemas::ResourceEvent;

use crate::apply::Sequenced;

/// Below this many events a batch is applied whole: splitting a handful of
/// events costs more round trips than it saves.
pub const SPLIT_FROM: usize = 64;

/// The lane of an event among `lanes`.
pub fn lane_of(e: &ResourceEvent, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if e.commit.count > 1 {
        e.commit.id.hash(&mut h);
    } else {
        (e.tenant.as_str(), e.resource_type.as_str(), e.id.as_str()).hash(&mut h);
    }
    (h.finish() % lanes.max(1) as u64) as usize
}

/// Splits a batch into at most `lanes` non-empty parts, each in stream
/// order; a small batch stays one part.
pub fn split(events: Vec<Sequenced>, lanes: usize) -> Vec<Vec<Sequenced>> {
    if lanes <= 1 || events.len() < SPLIT_FROM {
        return if events.is_empty() { Vec::new() } else { vec![events] };
    }
    let mut parts: Vec<Vec<Sequenced>> = (0..lanes).map(|_| Vec::new()).collect();
    for s in events {
        let lane = lane_of(&s.event, lanes);
        parts[lane].push(s);
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Actor, Commit, EventOp, ResourceId, ResourceType, TenantId, Version};

    fn ev(seq: u64, id: &str, version: u64, commit: Commit) -> Sequenced {
        Sequenced::new(
            seq,
            ResourceEvent {
                schema: schemas::event::RESOURCE_EVENT_SCHEMA.into(),
                event_id: uuid::Uuid::now_v7(),
                tenant: TenantId::parse("acme").unwrap(),
                resource_type: ResourceType::parse("Patient").unwrap(),
                id: ResourceId::parse(id).unwrap(),
                version: Version::new(version).unwrap(),
                op: EventOp::Update,
                at: schemas::event::now(),
                actor: Actor::default(),
                commit,
                resource: None,
            },
        )
    }

    #[test]
    fn every_version_of_a_resource_takes_the_same_lane_in_stream_order() {
        let events: Vec<Sequenced> = (0..200)
            .map(|i| ev(i + 1, &format!("p{}", i % 20), i / 20 + 1, Commit::single(uuid::Uuid::now_v7())))
            .collect();
        let parts = split(events, 4);
        assert!(parts.len() > 1, "200 events over 20 resources use several lanes");
        let mut seen = std::collections::HashMap::new();
        for (lane, part) in parts.iter().enumerate() {
            assert!(part.windows(2).all(|w| w[0].seq < w[1].seq), "stream order within a lane");
            for s in part {
                assert_eq!(*seen.entry(s.event.id.as_str().to_owned()).or_insert(lane), lane);
            }
        }
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 200, "nothing lost or doubled");
    }

    #[test]
    fn a_multi_event_commit_stays_in_one_lane() {
        let id = uuid::Uuid::now_v7();
        let events: Vec<Sequenced> =
            (0..100).map(|i| ev(i + 1, &format!("p{i}"), 1, Commit { id, index: i as u32, count: 100 })).collect();
        let parts = split(events, 4);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), 100);
    }

    #[test]
    fn a_small_batch_is_applied_whole() {
        let events: Vec<Sequenced> =
            (0..10).map(|i| ev(i + 1, &format!("p{i}"), 1, Commit::single(uuid::Uuid::now_v7()))).collect();
        assert_eq!(split(events, 4).len(), 1);
        assert!(split(Vec::new(), 4).is_empty());
    }
}
