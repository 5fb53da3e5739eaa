//! Turning a batch of events into rows: pure, so the folding rules are
//! tested without a database.
//!
//! Rows are laid out column by column because the store binds each column
//! as one array and inserts the whole batch with a single `unnest`. They
//! borrow from the events, so a batch is never copied, even when retried.

use std::collections::HashMap;

use schemas::search::{self, IndexEntry, IndexValue};
use schemas::{EventOp, ResourceEvent};

/// A consumed event with its stream sequence.
#[derive(Debug)]
pub struct Sequenced {
    pub seq: u64,
    pub event: ResourceEvent,
    /// Its search index entries when extracted ahead of [`plan`] (the live
    /// projector does so while the previous batch is being written);
    /// `None`: `plan` extracts them.
    pub index: Option<Vec<IndexEntry>>,
}

impl Sequenced {
    pub fn new(seq: u64, event: ResourceEvent) -> Self {
        Self { seq, event, index: None }
    }

    /// With its index entries extracted now: the CPU-heavy part of
    /// planning a batch (parsing the body and evaluating every search
    /// parameter), done here so that it can overlap other work.
    pub fn indexed(seq: u64, event: ResourceEvent) -> Self {
        let index = Some(index_entries(&event));
        Self { seq, event, index }
    }
}

/// The `resource_versions` rows of a batch, one vector per column.
#[derive(Debug, Default, PartialEq)]
pub struct VersionRows<'a> {
    pub tenant_id: Vec<&'a str>,
    pub resource_type: Vec<&'static str>,
    pub id: Vec<&'a str>,
    pub version: Vec<i64>,
    pub op: Vec<&'static str>,
    pub last_updated: Vec<chrono::DateTime<chrono::Utc>>,
    pub seq: Vec<i64>,
    pub resource: Vec<Option<&'a str>>,
}

/// The `resources` rows of a batch: one per resource, its newest version.
#[derive(Debug, Default, PartialEq)]
pub struct CurrentRows<'a> {
    pub tenant_id: Vec<&'a str>,
    pub resource_type: Vec<&'static str>,
    pub id: Vec<&'a str>,
    pub version: Vec<i64>,
    pub deleted: Vec<bool>,
    pub last_updated: Vec<chrono::DateTime<chrono::Utc>>,
    pub seq: Vec<i64>,
}

/// The `search_values` rows of a batch: the index entries of every current
/// row that is not a delete (see migration 0004 for the column meanings).
#[derive(Debug, Default, PartialEq)]
pub struct IndexRows<'a> {
    pub tenant_id: Vec<&'a str>,
    pub resource_type: Vec<&'static str>,
    pub id: Vec<&'a str>,
    pub seq: Vec<i64>,
    pub param: Vec<&'static str>,
    pub kind: Vec<&'static str>,
    pub text_norm: Vec<Option<String>>,
    pub text_exact: Vec<Option<String>>,
    pub system: Vec<Option<String>>,
    pub code: Vec<Option<String>>,
    pub unit: Vec<Option<String>>,
    pub lo: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    pub hi: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    pub num: Vec<Option<String>>,
    pub ref_type: Vec<Option<&'static str>>,
    pub ref_id: Vec<Option<String>>,
}

impl<'a> IndexRows<'a> {
    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    fn push(&mut self, e: &'a ResourceEvent, seq: u64, entry: IndexEntry) {
        let mut row = Row { kind: "u", ..Row::default() };
        match entry.value {
            IndexValue::String { normalized, exact } => {
                row.kind = "s";
                row.text_norm = Some(normalized);
                row.text_exact = Some(exact);
            }
            IndexValue::Token { system, code, text } => {
                row.kind = "t";
                (row.system, row.code, row.text_norm) = (system, code, text);
            }
            IndexValue::Date(range) => {
                row.kind = "d";
                (row.lo, row.hi) = (Some(range.lo), Some(range.hi));
            }
            IndexValue::Reference { target_type, target_id, url } => {
                row.kind = "r";
                row.ref_type = target_type.map(|t| t.as_str());
                row.ref_id = target_id;
                row.text_exact = Some(url);
            }
            IndexValue::Number { value } => {
                row.kind = "n";
                row.num = Some(value);
            }
            IndexValue::Quantity { value, system, code, unit } => {
                row.kind = "q";
                row.num = Some(value);
                (row.system, row.code, row.unit) = (system, code, unit);
            }
            IndexValue::Uri { uri } => row.text_exact = Some(uri),
        }
        self.tenant_id.push(e.tenant.as_str());
        self.resource_type.push(e.resource_type.as_str());
        self.id.push(e.id.as_str());
        self.seq.push(seq as i64);
        self.param.push(entry.param);
        self.kind.push(row.kind);
        self.text_norm.push(row.text_norm);
        self.text_exact.push(row.text_exact);
        self.system.push(row.system);
        self.code.push(row.code);
        self.unit.push(row.unit);
        self.lo.push(row.lo);
        self.hi.push(row.hi);
        self.num.push(row.num);
        self.ref_type.push(row.ref_type);
        self.ref_id.push(row.ref_id);
    }
}

/// One `search_values` row before it is split into columns.
#[derive(Default)]
struct Row {
    kind: &'static str,
    text_norm: Option<String>,
    text_exact: Option<String>,
    system: Option<String>,
    code: Option<String>,
    unit: Option<String>,
    lo: Option<chrono::DateTime<chrono::Utc>>,
    hi: Option<chrono::DateTime<chrono::Utc>>,
    num: Option<String>,
    ref_type: Option<&'static str>,
    ref_id: Option<String>,
}

/// Everything one batch writes, and the checkpoint it moves to.
#[derive(Debug, Default, PartialEq)]
pub struct BatchRows<'a> {
    pub versions: VersionRows<'a>,
    pub current: CurrentRows<'a>,
    /// The index of the current rows; the store first removes every index
    /// row of the resources in `current`, then inserts these.
    pub index: IndexRows<'a>,
    /// The highest sequence in the batch (even of skipped events), or the
    /// old checkpoint when the batch held nothing new.
    pub checkpoint: u64,
}

impl BatchRows<'_> {
    pub fn is_empty(&self) -> bool {
        self.versions.seq.is_empty()
    }
}

pub fn op_name(op: EventOp) -> &'static str {
    match op {
        EventOp::Create => "create",
        EventOp::Update => "update",
        EventOp::Delete => "delete",
    }
}

/// Folds a batch over the read model at `checkpoint`: events at or below the
/// checkpoint were applied before (a redelivery) and are skipped; each
/// resource's current row is its highest version in the batch.
pub fn plan(events: &[Sequenced], checkpoint: u64) -> BatchRows<'_> {
    let mut rows = BatchRows { checkpoint, ..Default::default() };
    let mut newest: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (i, s) in events.iter().enumerate() {
        rows.checkpoint = rows.checkpoint.max(s.seq);
        if s.seq <= checkpoint {
            continue;
        }
        let e = &s.event;
        let v = &mut rows.versions;
        v.tenant_id.push(e.tenant.as_str());
        v.resource_type.push(e.resource_type.as_str());
        v.id.push(e.id.as_str());
        v.version.push(e.version.get() as i64);
        v.op.push(op_name(e.op));
        v.last_updated.push(e.at);
        v.seq.push(s.seq as i64);
        v.resource.push(e.resource.as_deref().map(|r| r.get()));
        newest
            .entry((e.tenant.as_str(), e.resource_type.as_str(), e.id.as_str()))
            .and_modify(|j| {
                if events[*j].event.version < e.version {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let mut current: Vec<usize> = newest.into_values().collect();
    current.sort_unstable();
    for i in current {
        let (seq, e) = (events[i].seq, &events[i].event);
        let c = &mut rows.current;
        c.tenant_id.push(e.tenant.as_str());
        c.resource_type.push(e.resource_type.as_str());
        c.id.push(e.id.as_str());
        c.version.push(e.version.get() as i64);
        c.deleted.push(e.op == EventOp::Delete);
        c.last_updated.push(e.at);
        c.seq.push(seq as i64);
        match &events[i].index {
            Some(entries) => entries.iter().for_each(|entry| rows.index.push(e, seq, entry.clone())),
            None => index_event(&mut rows.index, e, seq),
        }
    }
    rows
}

/// Appends the `search_values` rows of an event's body (none for a delete).
/// The projector indexes each batch's current versions with it, and
/// `verify` computes what the index must hold with it.
pub fn index_event<'a>(rows: &mut IndexRows<'a>, e: &'a ResourceEvent, seq: u64) {
    for entry in index_entries(e) {
        rows.push(e, seq, entry);
    }
}

/// The search index entries of an event's body (none for a delete).
fn index_entries(e: &ResourceEvent) -> Vec<IndexEntry> {
    let Some(body) = e.resource.as_deref() else { return Vec::new() };
    // A body that is not JSON cannot have been accepted by the write side;
    // if one appears anyway it is stored but not indexed.
    match serde_json::from_str::<serde_json::Value>(body.get()) {
        Ok(json) => search::index(e.resource_type, &json),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Actor, Commit, ResourceId, ResourceType, TenantId, Version};
    use serde_json::value::RawValue;

    fn ev(seq: u64, tenant: &str, id: &str, version: u64, op: EventOp) -> Sequenced {
        Sequenced::new(
            seq,
            ResourceEvent {
                schema: schemas::event::RESOURCE_EVENT_SCHEMA.into(),
                event_id: uuid::Uuid::now_v7(),
                tenant: TenantId::parse(tenant).unwrap(),
                resource_type: ResourceType::parse("Patient").unwrap(),
                id: ResourceId::parse(id).unwrap(),
                version: Version::new(version).unwrap(),
                op,
                at: schemas::event::now(),
                actor: Actor::default(),
                commit: Commit::single(uuid::Uuid::now_v7()),
                resource: (op != EventOp::Delete)
                    .then(|| RawValue::from_string(format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#)).unwrap()),
            },
        )
    }

    #[test]
    fn every_version_is_kept_and_the_newest_becomes_current() {
        let batch = [
            ev(1, "a", "p", 1, EventOp::Create),
            ev(2, "a", "p", 2, EventOp::Update),
            ev(3, "b", "p", 1, EventOp::Create),
            ev(4, "a", "p", 3, EventOp::Delete),
        ];
        let rows = plan(&batch, 0);
        assert_eq!(rows.versions.version, vec![1, 2, 1, 3]);
        assert_eq!(rows.current.tenant_id, vec!["b", "a"]);
        assert_eq!(rows.current.version, vec![1, 3]);
        assert_eq!(rows.current.deleted, vec![false, true]);
        assert_eq!(rows.versions.resource[3], None);
        assert_eq!(rows.checkpoint, 4);
    }

    #[test]
    fn entries_extracted_ahead_plan_the_same_rows_as_entries_extracted_by_plan() {
        let named = |seq, id: &str, version, op| {
            let mut s = ev(seq, "a", id, version, op);
            s.event.resource = (op != EventOp::Delete).then(|| {
                RawValue::from_string(format!(
                    r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"Chalmers","given":["Peter"]}}],"gender":"male"}}"#
                ))
                .unwrap()
            });
            s
        };
        let batch =
            [named(1, "p", 1, EventOp::Create), named(2, "q", 1, EventOp::Create), named(3, "p", 2, EventOp::Update)];
        let ahead: Vec<Sequenced> = batch.iter().map(|s| Sequenced::indexed(s.seq, s.event.clone())).collect();
        let (late, early) = (plan(&batch, 0), plan(&ahead, 0));
        assert!(late.index.len() > 4, "the bodies are indexed: {}", late.index.len());
        assert_eq!(early, late);
    }

    #[test]
    fn a_redelivered_batch_writes_nothing_and_keeps_the_checkpoint() {
        let batch = [ev(5, "a", "p", 1, EventOp::Create), ev(6, "a", "q", 1, EventOp::Create)];
        let rows = plan(&batch, 6);
        assert!(rows.is_empty());
        assert!(rows.current.id.is_empty());
        assert_eq!(rows.checkpoint, 6);
    }

    #[test]
    fn a_partly_redelivered_batch_applies_only_the_new_events() {
        let batch = [ev(5, "a", "p", 1, EventOp::Create), ev(6, "a", "p", 2, EventOp::Update)];
        let rows = plan(&batch, 5);
        assert_eq!(rows.versions.seq, vec![6]);
        assert_eq!(rows.current.version, vec![2]);
    }
}
