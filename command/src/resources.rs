//! Resource writes: create, update, delete.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, value::RawValue};
use uuid::Uuid;

use schemas::event::{RESOURCE_EVENT_SCHEMA, instant, now};
use schemas::subject::resource_subject;
use schemas::validate::{Expect, Issue, Rules, check_resource_with, parse_json};
use schemas::{Actor, Commit, EventOp, ResourceEvent, ResourceId, ResourceType, TenantId, Version};

use crate::CommandError;
use crate::context::WriteContext;
use crate::decide::{Current, Decision, Intent, decide, decide_after};
use crate::index_cap::check_cost;
use crate::shared_ids::{SharedIds, claim_for_create, fresh_claim};
use crate::store::{BatchMessage, EventStore, LastEvent, OP_HEADER, VERSION_HEADER};

/// How often a PUT without If-Match re-decides after losing an id-claim
/// race to another tenant (which claims the same id legitimately).
const CLAIM_RETRIES: usize = 3;

/// The outcome of a write that appended an event.
#[derive(Debug)]
pub struct Written {
    pub resource_type: ResourceType,
    pub id: ResourceId,
    pub version: Version,
    pub op: EventOp,
    pub last_updated: DateTime<Utc>,
    /// Stream sequence of the event (what read-your-writes waits for).
    pub seq: u64,
    /// The stored resource JSON; `None` for a delete.
    pub resource: Option<Box<RawValue>>,
    /// Validation warnings (unknown elements a tenant lets through, claimed
    /// profiles it does not know): for `Prefer: return=OperationOutcome`.
    pub warnings: Vec<Issue>,
    /// The event as appended at `seq`, for a writer that applies its own
    /// write to the read model instead of waiting for the projector.
    pub event: ResourceEvent,
}

/// The resource write service.
#[derive(Clone)]
pub struct Commands {
    store: EventStore,
}

impl Commands {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// `POST /{type}`: stores the body under a new server-assigned id.
    pub async fn create(&self, cx: &WriteContext<'_>, rt: ResourceType, body: &[u8]) -> Result<Written, CommandError> {
        let checked = validate(cx, body, Expect::Create(rt)).await?;
        let id = ResourceId::generate();
        let decision = decide(None, Intent::Put { if_match: None })?.context("a create always appends")?;
        let mut written = self
            .append(cx.tenant, cx.actor, cx.shared_ids, rt, Id::Generated(id), decision, Some(checked.resource))
            .await?;
        written.warnings = checked.warnings;
        Ok(written)
    }

    /// `PUT /{type}/{id}`: updates the resource, or creates it with the
    /// client's id.
    pub async fn update(
        &self,
        cx: &WriteContext<'_>,
        rt: ResourceType,
        id: ResourceId,
        body: &[u8],
        if_match: Option<Version>,
    ) -> Result<Written, CommandError> {
        let (tenant, actor, shared_ids) = (cx.tenant, cx.actor, cx.shared_ids);
        let checked = validate(cx, body, Expect::Update(rt, &id)).await?;
        let warnings = checked.warnings;
        let mut resource = Some(checked.resource);
        let mut attempt = 0;
        loop {
            let (tail, current) = self.current(tenant, rt, &id).await?;
            let decision = decide_after(tail, current, Intent::Put { if_match })?.context("a put always appends")?;
            let claimed = decision.op == EventOp::Create && shared_ids.covers(rt);
            // Keep a copy only while a lost claim race may be retried.
            let body = if claimed && attempt < CLAIM_RETRIES { resource.clone() } else { resource.take() };
            match self.append(tenant, actor, shared_ids, rt, Id::Chosen(id.clone()), decision, body).await {
                Err(CommandError::Conflict) if claimed && if_match.is_none() && attempt < CLAIM_RETRIES => {
                    attempt += 1;
                }
                Ok(mut written) => {
                    written.warnings = warnings;
                    return Ok(written);
                }
                Err(e) => return Err(lost_race(e, if_match)),
            }
        }
    }

    /// `DELETE /{type}/{id}`: `Ok(None)` when there was nothing to delete.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        actor: &Actor,
        rt: ResourceType,
        id: ResourceId,
        if_match: Option<Version>,
    ) -> Result<Option<Written>, CommandError> {
        let (tail, current) = self.current(tenant, rt, &id).await?;
        let Some(decision) = decide_after(tail, current, Intent::Delete { if_match })? else {
            return Ok(None);
        };
        let written = self
            .append(tenant, actor, &SharedIds::none(), rt, Id::Chosen(id), decision, None)
            .await
            .map_err(|e| lost_race(e, if_match))?;
        Ok(Some(written))
    }

    /// What the stream says about a resource now: its subject's last
    /// sequence and its current (genuine) state.
    async fn current(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &ResourceId,
    ) -> Result<(u64, Option<Current>), CommandError> {
        let subject = resource_subject(tenant, rt, id);
        let tail = self.store.resource_tail(&subject).await?;
        let current = tail.last.as_ref().map(current_of).transpose()?;
        Ok((tail.seq, current))
    }

    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        tenant: &TenantId,
        actor: &Actor,
        shared_ids: &SharedIds,
        rt: ResourceType,
        id: Id,
        decision: Decision,
        resource: Option<Map<String, Value>>,
    ) -> Result<Written, CommandError> {
        let (id, generated) = match id {
            Id::Generated(id) => (id, true),
            Id::Chosen(id) => (id, false),
        };
        let at = now();
        let resource = match resource {
            Some(mut r) => {
                stamp(&mut r, &id, decision.version, &at);
                let raw = serde_json::value::to_raw_value(&r).context("serialize the resource")?;
                check_cost(rt, &mut r, raw.get().len(), self.store.max_resource_bytes(), self.store.max_index_rows())?;
                Some(raw)
            }
            None => None,
        };
        let event = ResourceEvent {
            schema: RESOURCE_EVENT_SCHEMA.into(),
            event_id: Uuid::now_v7(),
            tenant: tenant.clone(),
            resource_type: rt,
            id,
            version: decision.version,
            op: decision.op,
            at,
            actor: actor.clone(),
            commit: Commit::single(Uuid::now_v7()),
            resource,
        };
        let payload = serde_json::to_vec(&event).context("serialize the event")?;
        let headers = [(VERSION_HEADER, decision.version.to_string()), (OP_HEADER, op_str(decision.op).to_owned())];
        let subject = resource_subject(tenant, rt, &event.id);
        let claim = match decision.op {
            EventOp::Create if generated => fresh_claim(tenant, shared_ids, rt, &event.id)?,
            EventOp::Create => claim_for_create(&self.store, tenant, shared_ids, rt, &event.id).await?,
            _ => None,
        };
        let seq = match claim {
            None => self.store.append(subject, event.event_id, decision.expected_seq, &headers, payload).await?,
            // The claim first: see shared_ids on why this needs no batch.
            Some(claim) if generated => {
                self.store.append(claim.subject, claim.event_id, claim.expected_seq, &[], claim.payload).await?;
                self.store.append(subject, event.event_id, decision.expected_seq, &headers, payload).await?
            }
            Some(claim) => {
                // The resource and its id claim land together or not at all.
                let resource = BatchMessage {
                    subject,
                    event_id: event.event_id,
                    expected_seq: decision.expected_seq,
                    headers: headers.into_iter().collect(),
                    payload,
                };
                let seqs =
                    self.store.append_batch(&event.commit.id.simple().to_string(), vec![resource, claim]).await?;
                seqs.first().copied().context("a committed batch has sequences")?
            }
        };
        Ok(Written {
            resource_type: event.resource_type,
            id: event.id.clone(),
            version: event.version,
            op: event.op,
            last_updated: event.at,
            seq,
            resource: event.resource.clone(),
            warnings: vec![],
            event,
        })
    }
}

/// Parses a body and validates it under the rules of its tenant and of the
/// profiles it claims.
async fn validate(
    cx: &WriteContext<'_>,
    body: &[u8],
    expect: Expect<'_>,
) -> Result<schemas::validate::Checked, CommandError> {
    let rt = match expect {
        Expect::Create(rt) | Expect::Update(rt, _) => rt,
    };
    let value = parse_json(body)?;
    let rules = match value.as_object() {
        Some(map) => cx.rules([(rt, map)]).await?,
        None => Rules::default(),
    };
    Ok(check_resource_with(value, expect, &rules)?)
}

/// Where a written resource's id came from, which decides how its id is
/// claimed (see `shared_ids`).
enum Id {
    /// Generated by the server for this create: nobody else can know it yet.
    Generated(ResourceId),
    /// Named by the client, or an existing resource's.
    Chosen(ResourceId),
}

/// Sets what the server owns in a stored resource: its id and
/// `meta.versionId`/`meta.lastUpdated`; other `meta` elements are kept.
pub fn stamp(resource: &mut Map<String, Value>, id: &ResourceId, version: Version, at: &DateTime<Utc>) {
    resource.insert("id".into(), Value::String(id.as_str().to_owned()));
    let meta = resource.entry("meta").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert("lastUpdated".into(), Value::String(instant(at)));
    }
}

/// Reads a subject's state from the last event's headers, falling back to
/// its envelope.
pub(crate) fn current_of(last: &LastEvent) -> Result<Current, CommandError> {
    let header = |name: &str| last.headers.get(name).map(|v| v.as_str().to_owned());
    let (version, op) = match (header(VERSION_HEADER), header(OP_HEADER)) {
        (Some(v), Some(op)) => (Version::parse(&v).context("read the version header")?, op),
        _ => {
            let event: ResourceEvent = serde_json::from_slice(&last.payload).context("decode the last event")?;
            (event.version, op_str(event.op).to_owned())
        }
    };
    Ok(Current { version, deleted: op == "delete", seq: last.seq })
}

pub(crate) fn op_str(op: EventOp) -> &'static str {
    match op {
        EventOp::Create => "create",
        EventOp::Update => "update",
        EventOp::Delete => "delete",
    }
}

/// A lost race is a failed precondition for a client that sent If-Match
/// (its version is no longer current) and a conflict for one that did not.
fn lost_race(e: CommandError, if_match: Option<Version>) -> CommandError {
    match (e, if_match) {
        (CommandError::Conflict, Some(_)) => CommandError::PreconditionFailed { current: None },
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_sets_id_and_version_and_keeps_other_meta() {
        let mut r: Map<String, Value> = serde_json::from_str(
            r#"{"resourceType":"Patient","id":"old","meta":{"versionId":"9","profile":["http://x"]}}"#,
        )
        .unwrap();
        let at = now();
        stamp(&mut r, &ResourceId::parse("new").unwrap(), Version::FIRST, &at);
        assert_eq!(r["id"], "new");
        assert_eq!(r["meta"]["versionId"], "1");
        assert_eq!(r["meta"]["lastUpdated"], instant(&at));
        assert_eq!(r["meta"]["profile"][0], "http://x");
    }
}
