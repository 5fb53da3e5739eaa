//! Executing planned Bundles (and single conditional or PATCH writes, which
//! are one-entry transactions): read what the stream says, decide every
//! entry, then append all events as one atomic commit.

use std::collections::HashMap;

use anyhow::Context as _;
use futures::future::try_join_all;
use serde_json::{Map, Value, json, value::RawValue};
use uuid::Uuid;

use schemas::event::{RESOURCE_EVENT_SCHEMA, now};
use schemas::subject::{criteria_claim_subject, resource_subject};
use schemas::validate::{Expect, Rules, ValidationError, check_resource_with};
use schemas::{Commit, EventOp, ResourceEvent, ResourceId, ResourceType, TenantId, Version};

use crate::bundle::{self, BundleError, Criteria, Entry, Method, Planned};
use crate::context::WriteContext;
use crate::decide::{Current, Intent, decide_after};
use crate::index_cap::check_cost;
use crate::resources::{current_of, op_str, stamp};
use crate::shared_ids::claim_for_create;
use crate::store::{BatchMessage, EventStore, OP_HEADER, SubjectTail, VERSION_HEADER};
use crate::{CommandError, Commands, Written};

/// What happened to one entry.
#[derive(Debug)]
pub enum EntryResult {
    /// 201: a new resource.
    Created(Written),
    /// 200: a new version of an existing resource.
    Updated(Written),
    /// 204: deleted (`None`: there was nothing to delete).
    Deleted(Option<Written>),
    /// 200: a conditional create matched this existing resource.
    Existing { rt: ResourceType, id: ResourceId, version: Version, resource: Option<Box<RawValue>> },
    /// A GET entry, for the caller to read after the commit is applied.
    Read { rt: ResourceType, id: ResourceId },
    /// A GET entry without an id: a search, for the caller to run after the
    /// commit is applied (`query` is its query string).
    Search { rt: ResourceType, query: String },
}

/// A failed transaction: which entry, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{error}", index.map(|i| format!("entry[{i}]: ")).unwrap_or_default())]
pub struct EntryFailure {
    /// The failing entry, when one entry is to blame.
    pub index: Option<usize>,
    #[source]
    pub error: CommandError,
}

/// The outcome of a committed transaction.
#[derive(Debug)]
pub struct TxOutcome {
    /// Per entry, in the Bundle's original order.
    pub results: Vec<EntryResult>,
    /// The stream sequence of the commit's last event, if it wrote any.
    pub last_seq: Option<u64>,
}

/// Ids that a conditional entry matched in the read model (from search),
/// keyed by entry index. The claim subjects are checked here as well.
pub type ReadModelMatches = HashMap<usize, Vec<ResourceId>>;

fn fail(index: usize) -> impl FnOnce(CommandError) -> EntryFailure {
    move |error| EntryFailure { index: Some(index), error }
}

fn whole(error: CommandError) -> EntryFailure {
    EntryFailure { index: None, error }
}

fn bundle_failure(e: BundleError) -> EntryFailure {
    match e {
        BundleError::Entry { index, message } => {
            EntryFailure { index: Some(index), error: CommandError::BadRequest(message) }
        }
        BundleError::Invalid { index, error } => {
            EntryFailure { index: Some(index), error: CommandError::Invalid(error) }
        }
        other => whole(CommandError::BadRequest(other.to_string())),
    }
}

/// How often a transaction with conditional entries is decided again after
/// losing a race for a criteria claim.
const CONDITIONAL_RETRIES: usize = 3;

/// A conditional entry's resolution.
enum Match {
    None,
    One(ResourceId),
}

impl Commands {
    /// Runs a transaction: every entry is decided before anything is
    /// written, and all writes are one atomic commit, so a failure leaves
    /// no event at all.
    pub async fn transaction(
        &self,
        cx: &WriteContext<'_>,
        mut entries: Vec<Entry>,
        read_model: &ReadModelMatches,
        mut new_id: impl FnMut(&Entry) -> ResourceId,
    ) -> Result<TxOutcome, EntryFailure> {
        // A conditional create (or update that creates) that loses the race
        // for its criteria claim is decided again: the claim now names the
        // winner, so the loser answers with it instead of a 409.
        let conditional = entries.iter().any(|e| e.if_none_exist.is_some() || e.conditional.is_some());
        let mut attempt = 0;
        loop {
            let again = (conditional && attempt < CONDITIONAL_RETRIES).then(|| entries.clone());
            match self.attempt(cx, entries, read_model, &mut new_id).await {
                Err(EntryFailure { index: None, error: CommandError::Conflict }) if again.is_some() => {
                    attempt += 1;
                    entries = again.unwrap_or_default();
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        cx: &WriteContext<'_>,
        entries: Vec<Entry>,
        read_model: &ReadModelMatches,
        new_id: impl FnMut(&Entry) -> ResourceId,
    ) -> Result<TxOutcome, EntryFailure> {
        let (tenant, actor, shared_ids) = (cx.tenant, cx.actor, cx.shared_ids);
        let store = self.store();
        let count = entries.len();
        // The rules of every written entry, resolved once (a PATCH's result
        // is held to the profiles enforced on its type).
        let no_body = Map::new();
        let rules = cx
            .rules(entries.iter().filter_map(|e| match (e.method, e.body.as_ref()) {
                (Method::Post | Method::Put, Some(Value::Object(body))) => Some((e.rt, body)),
                (Method::Patch, _) => Some((e.rt, &no_body)),
                _ => None,
            }))
            .await
            .map_err(whole)?;

        // 1. Conditional entries: what do they match?
        let mut existing = HashMap::new();
        let mut claims: Vec<(usize, String, Option<u64>)> = Vec::new();
        for e in &entries {
            let criteria = e.if_none_exist.as_ref().or(e.conditional.as_ref());
            let Some(criteria) = criteria else { continue };
            let (found, claim) = resolve(store, tenant, e, criteria, read_model.get(&e.index)).await?;
            match found {
                Match::One(id) => {
                    existing.insert(e.index, id);
                }
                Match::None if e.method != Method::Delete => {
                    if let Some((subject, seq)) = claim {
                        claims.push((e.index, subject, seq));
                    }
                }
                Match::None => {}
            }
        }
        let conditional_create_matched: Vec<usize> = entries
            .iter()
            .filter(|e| e.if_none_exist.is_some() && existing.contains_key(&e.index))
            .map(|e| e.index)
            .collect();
        let deletes_matching_nothing: Vec<usize> = entries
            .iter()
            .filter(|e| e.method == Method::Delete && e.conditional.is_some() && !existing.contains_key(&e.index))
            .map(|e| e.index)
            .collect();

        // 2. Ids, references and order.
        let planned = bundle::plan(entries, new_id, &existing, &rules).map_err(bundle_failure)?;

        // 3. Split what is written from what is only looked at, keeping the
        //    processing order; the written entries are consumed below, so
        //    their bodies move into the events without a copy.
        let mut writes: Vec<Planned> = Vec::with_capacity(planned.len());
        let mut reads = Vec::new();
        let mut matched = Vec::new();
        for p in planned {
            let i = p.entry.index;
            if p.entry.method == Method::Get {
                reads.push((i, p.entry.rt, p.id, p.entry.search));
            } else if conditional_create_matched.contains(&i) {
                matched.push((i, p.entry.rt, p.id));
            } else if !deletes_matching_nothing.contains(&i) {
                writes.push(p);
            }
        }
        let currents = try_join_all(writes.iter().map(|p| async {
            let subject = resource_subject(tenant, p.entry.rt, &p.id);
            let needs_read = p.entry.method != Method::Post;
            let tail = if needs_read {
                store.resource_tail(&subject).await.map_err(fail(p.entry.index))?
            } else {
                SubjectTail::default()
            };
            Ok::<_, EntryFailure>(tail)
        }))
        .await?;

        // 4. Decide every write first, so the commit's size is known before
        //    any event is built; deletes of nothing append no event.
        let mut decided = Vec::with_capacity(writes.len());
        let mut skipped_deletes = Vec::new();
        for (p, tail) in writes.into_iter().zip(currents) {
            let i = p.entry.index;
            let last = tail.last;
            let current = last.as_ref().map(current_of).transpose().map_err(fail(i))?;
            let intent = match p.entry.method {
                Method::Delete => Intent::Delete { if_match: p.entry.if_match },
                _ => Intent::Put { if_match: p.entry.if_match },
            };
            match decide_after(tail.seq, current, intent).map_err(fail(i))? {
                Some(decision) => decided.push((p, current, last, decision)),
                None => skipped_deletes.push(i),
            }
        }
        let commit = Uuid::now_v7();
        let at = now();
        let count_events = decided.len() as u32;
        let mut messages = Vec::with_capacity(decided.len() + claims.len());
        let mut id_claims = Vec::new();
        // Per written entry, in commit order: (entry index, op, result).
        let mut written: Vec<(usize, EventOp, Written)> = Vec::with_capacity(decided.len());
        for (k, (p, current, last, decision)) in decided.into_iter().enumerate() {
            let i = p.entry.index;
            let resource = match p.entry.method {
                Method::Patch => {
                    // What one event can carry bounds what a patch may grow to.
                    let max = store.jetstream().client().server_info().max_payload;
                    let last = last.as_ref().map(|l| &l.payload[..]);
                    let doc = patched(&p, current, last, max).map_err(fail(i))?;
                    // A patch may add a `meta.profile` claim: its profile is
                    // looked up now, as for any write that claims one.
                    let claimed = cx.with_claims(&rules, &doc).await.map_err(fail(i))?;
                    Some(validate_patched(doc, &p, claimed.as_ref().unwrap_or(&rules)).map_err(fail(i))?)
                }
                _ => p.resource,
            };
            let resource = match resource {
                Some(mut r) => {
                    stamp(&mut r, &p.id, decision.version, &at);
                    let raw = serde_json::value::to_raw_value(&r)
                        .context("serialize the resource")
                        .map_err(|e| fail(i)(e.into()))?;
                    let (max_bytes, max_rows) = (store.max_resource_bytes(), store.max_index_rows());
                    check_cost(p.entry.rt, &mut r, raw.get().len(), max_bytes, max_rows).map_err(fail(i))?;
                    Some(raw)
                }
                None => None,
            };
            let event = ResourceEvent {
                schema: RESOURCE_EVENT_SCHEMA.into(),
                event_id: Uuid::now_v7(),
                tenant: tenant.clone(),
                resource_type: p.entry.rt,
                id: p.id,
                version: decision.version,
                op: decision.op,
                at,
                actor: actor.clone(),
                commit: Commit { id: commit, index: k as u32, count: count_events },
                resource,
            };
            let payload = serde_json::to_vec(&event).context("serialize the event").map_err(|e| fail(i)(e.into()))?;
            if decision.op == EventOp::Create {
                let claim = claim_for_create(store, tenant, shared_ids, event.resource_type, &event.id);
                id_claims.extend(claim.await.map_err(fail(i))?);
            }
            messages.push(BatchMessage {
                subject: resource_subject(tenant, event.resource_type, &event.id),
                event_id: event.event_id,
                expected_seq: decision.expected_seq,
                headers: vec![
                    (VERSION_HEADER, decision.version.to_string()),
                    (OP_HEADER, op_str(decision.op).to_owned()),
                ],
                payload,
            });
            let w = Written {
                resource_type: event.resource_type,
                id: event.id.clone(),
                version: event.version,
                op: event.op,
                last_updated: event.at,
                seq: 0,
                resource: event.resource.clone(),
                warnings: vec![],
                event,
            };
            written.push((i, decision.op, w));
        }
        // Claims follow the resource events, so the commit's resource events
        // keep the first sequences.
        messages.extend(id_claims);
        for (index, subject, seq) in claims {
            let Some((_, _, w)) = written.iter().find(|(i, ..)| *i == index) else { continue };
            let payload = json!({
                "schema": "fhirstream.criteria-claim/1",
                "tenant": tenant, "resource_type": w.resource_type, "id": w.id, "version": w.version,
            });
            messages.push(BatchMessage {
                subject,
                event_id: Uuid::now_v7(),
                expected_seq: seq.unwrap_or(0),
                headers: Vec::new(),
                payload: payload.to_string().into_bytes(),
            });
        }

        // 5. One atomic commit. A refused batch does not say which
        //    expectation failed; every entry was checked just before, so it
        //    is a concurrent writer: no index.
        let seqs = store.append_batch(&commit.simple().to_string(), messages).await.map_err(whole)?;
        // The read model's progress is measured in resource events; the
        // identifier claims that follow them are never projected.
        let last_seq = written.len().checked_sub(1).and_then(|k| seqs.get(k)).copied();
        let mut by_entry: HashMap<usize, EntryResult> = HashMap::new();
        for ((i, op, mut w), seq) in written.into_iter().zip(seqs) {
            w.seq = seq;
            let result = match op {
                EventOp::Create => EntryResult::Created(w),
                EventOp::Update => EntryResult::Updated(w),
                EventOp::Delete => EntryResult::Deleted(Some(w)),
            };
            by_entry.insert(i, result);
        }
        for i in skipped_deletes.into_iter().chain(deletes_matching_nothing) {
            by_entry.insert(i, EntryResult::Deleted(None));
        }
        for (i, rt, id, search) in reads {
            let result = match search {
                Some(query) => EntryResult::Search { rt, query },
                None => EntryResult::Read { rt, id },
            };
            by_entry.insert(i, result);
        }
        for (i, rt, id) in matched {
            let last = store
                .last_resource_event(&resource_subject(tenant, rt, &id))
                .await
                .map_err(fail(i))?
                .ok_or_else(|| fail(i)(CommandError::Conflict))?;
            let event: ResourceEvent = serde_json::from_slice(&last.payload)
                .context("decode the matched resource")
                .map_err(|e| fail(i)(e.into()))?;
            by_entry.insert(i, EntryResult::Existing { rt, id, version: event.version, resource: event.resource });
        }
        let results = (0..count)
            .map(|i| {
                by_entry
                    .remove(&i)
                    .ok_or_else(|| whole(CommandError::Internal(anyhow::anyhow!("entry {i} has no result"))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TxOutcome { results, last_seq })
    }
}

/// Decides what a conditional entry matches: the criteria's claim (which
/// conditional writers maintain atomically) and the read model's matches
/// (which also see resources written without conditions). Returns the
/// claim subject and its last sequence, for a write that must claim it.
async fn resolve(
    store: &EventStore,
    tenant: &TenantId,
    e: &Entry,
    criteria: &Criteria,
    read_model: Option<&Vec<ResourceId>>,
) -> Result<(Match, Option<(String, Option<u64>)>), EntryFailure> {
    let mut ids: Vec<ResourceId> = read_model.cloned().unwrap_or_default();
    let subject = criteria_claim_subject(tenant, e.rt, &criteria.canonical());
    let last = store.last_claim(&subject).await.map_err(fail(e.index))?;
    let last_seq = last.as_ref().map(|l| l.seq);
    if let Some(last) = last {
        let claimed = serde_json::from_slice::<Value>(&last.payload)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).and_then(|s| ResourceId::parse(s).ok()));
        if let Some(id) = claimed {
            // A claim counts only while its resource is live.
            let live =
                match store.last_resource_event(&resource_subject(tenant, e.rt, &id)).await.map_err(fail(e.index))? {
                    Some(l) => !current_of(&l).map_err(fail(e.index))?.deleted,
                    None => false,
                };
            if live && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let claim = Some((subject, last_seq));
    match ids.len() {
        0 => Ok((Match::None, claim)),
        1 => Ok((Match::One(ids.remove(0)), None)),
        n => Err(fail(e.index)(CommandError::MultipleMatches(n))),
    }
}

/// Applies a JSON Patch to the current version.
fn patched(
    p: &Planned,
    current: Option<Current>,
    last: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Value, CommandError> {
    let (Some(current), Some(last)) = (current, last) else {
        return Err(CommandError::NotFound(format!("{}/{} is not known", p.entry.rt, p.id)));
    };
    if current.deleted {
        return Err(CommandError::NotFound(format!("{}/{} was deleted", p.entry.rt, p.id)));
    }
    let event: ResourceEvent = serde_json::from_slice(last).context("decode the current version")?;
    let mut doc: Value = match event.resource {
        Some(r) => serde_json::from_str(r.get()).context("decode the current resource")?,
        None => return Err(CommandError::NotFound(format!("{}/{} was deleted", p.entry.rt, p.id))),
    };
    let patch: json_patch::Patch = serde_json::from_value(p.entry.body.clone().unwrap_or(Value::Null))
        .map_err(|e| CommandError::Unprocessable(format!("not a JSON Patch document: {e}")))?;
    patch_bounded(&mut doc, &patch, max_bytes)?;
    Ok(doc)
}

/// Validates a patched resource as any write of it would be.
fn validate_patched(doc: Value, p: &Planned, rules: &Rules) -> Result<Map<String, Value>, CommandError> {
    check_resource_with(doc, Expect::Update(p.entry.rt, &p.id), rules).map(|c| c.resource).map_err(|e| match e {
        // Conformance issues answer as for any write: 422 with every issue.
        e @ ValidationError::NonConformant(_) => CommandError::Invalid(e),
        e => CommandError::Unprocessable(format!("the patched resource is not valid: {e}")),
    })
}

/// Applies a JSON Patch one operation at a time, refusing it once its
/// `copy` operations have copied more than `max_bytes`: a copy of the root
/// doubles the document, so a few dozen of them in a small request would
/// ask for more memory than any machine has. (`add` and `replace` values
/// come from the request body, which is already bounded.)
fn patch_bounded(doc: &mut Value, patch: &json_patch::Patch, max_bytes: usize) -> Result<(), CommandError> {
    let mut copied = 0usize;
    for op in &patch.0 {
        if let json_patch::PatchOperation::Copy(copy) = op
            && let Some(source) = doc.pointer(copy.from.as_str())
        {
            copied = copied.saturating_add(json_size(source, max_bytes.saturating_sub(copied)));
            if copied > max_bytes {
                return Err(CommandError::Unprocessable(format!(
                    "the patch copies more than {max_bytes} bytes, more than one resource may hold"
                )));
            }
        }
        json_patch::patch(doc, std::slice::from_ref(op))
            .map_err(|e| CommandError::Unprocessable(format!("the patch does not apply: {e}")))?;
    }
    Ok(())
}

/// About the serialized size of `value`, counting no further than just
/// past `cap` (so measuring a huge value costs no more than `cap`).
fn json_size(value: &Value, cap: usize) -> usize {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items);
                items.len() + 2
            }
            Value::Object(map) => {
                for (k, v) in map {
                    total += k.len() + 4;
                    stack.push(v);
                }
                2
            }
        };
        if total > cap {
            break;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_that_keeps_doubling_the_resource_is_refused_early() {
        let mut doc = serde_json::json!({"resourceType": "Patient", "id": "p"});
        let ops: Vec<Value> =
            (0..64).map(|i| serde_json::json!({"op": "copy", "from": "", "path": format!("/x{i}")})).collect();
        let patch: json_patch::Patch = serde_json::from_value(Value::from(ops)).unwrap();
        let err = patch_bounded(&mut doc, &patch, 1 << 20).unwrap_err();
        assert!(matches!(err, CommandError::Unprocessable(ref m) if m.contains("copies more than")), "{err}");
        assert!(json_size(&doc, usize::MAX) < 4 << 20, "stopped before growing far past the bound");
    }

    #[test]
    fn ordinary_patches_apply_in_order() {
        let mut doc = serde_json::json!({"resourceType": "Patient", "id": "p", "name": [{"family": "A"}]});
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "copy", "from": "/name/0", "path": "/name/-"},
            {"op": "replace", "path": "/name/1/family", "value": "B"},
            {"op": "test", "path": "/name/0/family", "value": "A"}
        ]))
        .unwrap();
        patch_bounded(&mut doc, &patch, 1 << 20).unwrap();
        assert_eq!(doc["name"][1]["family"], "B");
    }
}
