//! Whether a message on fhirstream's streams is a genuine event for the
//! subject it was found on.
//!
//! The subject is what NATS permissions, purges and consumer filters act
//! on, but anything that can make the server publish on a subject can
//! place a message there: a JetStream API reply sent to a reply subject
//! inside `fhir.{other}.>` carries the replied-to message's headers and
//! body. So no reader trusts a message for what its subject says; it
//! accepts it only when the envelope names exactly that subject and the
//! message carries the headers fhirstream's own writes set, agreeing with
//! the envelope. Everything else is skipped (and counted by the reader),
//! never served. The rule lives here, once, so every reader applies the
//! same one.

use crate::event::{RESOURCE_EVENT_SCHEMA, ResourceEvent, TENANT_EVENT_SCHEMA, TenantEvent};
use crate::subject::parse_resource_subject;
use crate::tenant::TenantId;

/// Header carrying an event's resource version, so the write side can read
/// a subject's state without decoding the envelope.
pub const VERSION_HEADER: &str = "Fhirstream-Version";
/// Header carrying an event's op (`create`, `update`, `delete`).
pub const OP_HEADER: &str = "Fhirstream-Op";
/// JetStream's de-duplication header; every fhirstream write sets it to the
/// envelope's `event_id`.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Why a message is not a genuine event for its subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGenuine {
    #[error("the subject is not an event subject")]
    Subject,
    #[error("the message lacks fhirstream's write header {0}")]
    MissingHeader(&'static str),
    #[error("the payload is not an event envelope: {0}")]
    Envelope(String),
    #[error("the envelope's {0} does not match the message")]
    Mismatch(&'static str),
}

impl NotGenuine {
    /// A short, fixed label for metrics (bounded cardinality).
    pub fn reason(&self) -> &'static str {
        match self {
            NotGenuine::Subject => "subject",
            NotGenuine::MissingHeader(_) => "headers",
            NotGenuine::Envelope(_) => "envelope",
            NotGenuine::Mismatch(_) => "mismatch",
        }
    }
}

/// Accepts a resource event found on `subject` with the given headers
/// (`header(name)` returns a header's value) only when its envelope names
/// that tenant, type and id, and its `Nats-Msg-Id`, version and op headers
/// agree with the envelope.
pub fn genuine_resource_event<'h>(
    subject: &str,
    header: impl Fn(&str) -> Option<&'h str>,
    payload: &[u8],
) -> Result<ResourceEvent, NotGenuine> {
    let addr = parse_resource_subject(subject).map_err(|_| NotGenuine::Subject)?;
    let msg_id = header(MSG_ID_HEADER).ok_or(NotGenuine::MissingHeader(MSG_ID_HEADER))?;
    let version = header(VERSION_HEADER).ok_or(NotGenuine::MissingHeader(VERSION_HEADER))?;
    let op = header(OP_HEADER).ok_or(NotGenuine::MissingHeader(OP_HEADER))?;
    let event: ResourceEvent = serde_json::from_slice(payload).map_err(|e| NotGenuine::Envelope(e.to_string()))?;
    if event.schema != RESOURCE_EVENT_SCHEMA {
        return Err(NotGenuine::Mismatch("schema"));
    }
    if event.tenant != addr.tenant {
        return Err(NotGenuine::Mismatch("tenant"));
    }
    if event.resource_type != addr.resource_type {
        return Err(NotGenuine::Mismatch("resource type"));
    }
    if event.id != addr.id {
        return Err(NotGenuine::Mismatch("id"));
    }
    if msg_id != event.event_id.to_string() {
        return Err(NotGenuine::Mismatch("event id"));
    }
    if version != event.version.to_string() {
        return Err(NotGenuine::Mismatch("version"));
    }
    if op != op_name(event.op) {
        return Err(NotGenuine::Mismatch("op"));
    }
    Ok(event)
}

/// Accepts a tenant event found on `fhirstream.tenants.{tenant}` only when
/// its envelope names that tenant and its `Nats-Msg-Id` is the event's id.
pub fn genuine_tenant_event<'h>(
    subject: &str,
    header: impl Fn(&str) -> Option<&'h str>,
    payload: &[u8],
) -> Result<TenantEvent, NotGenuine> {
    let tenant =
        subject.strip_prefix("fhirstream.tenants.").and_then(|t| TenantId::parse(t).ok()).ok_or(NotGenuine::Subject)?;
    let msg_id = header(MSG_ID_HEADER).ok_or(NotGenuine::MissingHeader(MSG_ID_HEADER))?;
    let event: TenantEvent = serde_json::from_slice(payload).map_err(|e| NotGenuine::Envelope(e.to_string()))?;
    if event.schema != TENANT_EVENT_SCHEMA {
        return Err(NotGenuine::Mismatch("schema"));
    }
    if event.tenant != tenant {
        return Err(NotGenuine::Mismatch("tenant"));
    }
    if msg_id != event.event_id.to_string() {
        return Err(NotGenuine::Mismatch("event id"));
    }
    Ok(event)
}

/// The op as the `Fhirstream-Op` header writes it.
pub fn op_name(op: crate::EventOp) -> &'static str {
    match op {
        crate::EventOp::Create => "create",
        crate::EventOp::Update => "update",
        crate::EventOp::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn envelope(tenant: &str, id: &str, event_id: uuid::Uuid) -> Vec<u8> {
        serde_json::json!({
            "schema": RESOURCE_EVENT_SCHEMA, "event_id": event_id, "tenant": tenant,
            "resource_type": "Patient", "id": id, "version": 2, "op": "update",
            "at": "2026-01-01T00:00:00.000Z", "actor": {"sub": "a"},
            "commit": {"id": uuid::Uuid::now_v7(), "index": 0, "count": 1},
            "resource": {"resourceType": "Patient", "id": id}
        })
        .to_string()
        .into_bytes()
    }

    fn headers(event_id: uuid::Uuid) -> HashMap<&'static str, String> {
        HashMap::from([
            (MSG_ID_HEADER, event_id.to_string()),
            (VERSION_HEADER, "2".into()),
            (OP_HEADER, "update".into()),
        ])
    }

    fn check(subject: &str, h: &HashMap<&'static str, String>, payload: &[u8]) -> Result<ResourceEvent, NotGenuine> {
        genuine_resource_event(subject, |n| h.get(n).map(String::as_str), payload)
    }

    #[test]
    fn an_event_written_by_fhirstream_on_its_own_subject_is_genuine() {
        let id = uuid::Uuid::now_v7();
        let ev = check("fhir.b.Patient.x_1", &headers(id), &envelope("b", "x.1", id)).unwrap();
        assert_eq!(ev.id.as_str(), "x.1");
    }

    #[test]
    fn an_envelope_of_another_tenant_type_or_id_is_not_genuine_for_the_subject() {
        let id = uuid::Uuid::now_v7();
        let (h, p) = (headers(id), envelope("b", "x", id));
        assert_eq!(check("fhir.a.Patient.x", &h, &p).unwrap_err(), NotGenuine::Mismatch("tenant"));
        assert_eq!(check("fhir.b.Group.x", &h, &p).unwrap_err(), NotGenuine::Mismatch("resource type"));
        assert_eq!(check("fhir.b.Patient.y", &h, &p).unwrap_err(), NotGenuine::Mismatch("id"));
        assert_eq!(check("fhir.b.Patient._key.y", &h, &p).unwrap_err(), NotGenuine::Subject);
    }

    #[test]
    fn a_message_without_the_write_headers_or_with_headers_that_disagree_is_not_genuine() {
        let id = uuid::Uuid::now_v7();
        let p = envelope("b", "x", id);
        for missing in [MSG_ID_HEADER, VERSION_HEADER, OP_HEADER] {
            let mut h = headers(id);
            h.remove(missing);
            assert_eq!(check("fhir.b.Patient.x", &h, &p).unwrap_err(), NotGenuine::MissingHeader(missing));
        }
        for (name, value, what) in [
            (MSG_ID_HEADER, uuid::Uuid::now_v7().to_string(), "event id"),
            (VERSION_HEADER, "1".into(), "version"),
            (OP_HEADER, "create".into(), "op"),
        ] {
            let mut h = headers(id);
            h.insert(name, value);
            assert_eq!(check("fhir.b.Patient.x", &h, &p).unwrap_err(), NotGenuine::Mismatch(what));
        }
    }

    #[test]
    fn garbage_and_api_replies_are_not_genuine() {
        let id = uuid::Uuid::now_v7();
        for payload in [&b"not json"[..], br#"{"type":"io.nats.jetstream.api.v1.consumer_info_response"}"#, b""] {
            assert!(matches!(check("fhir.b.Patient.x", &headers(id), payload), Err(NotGenuine::Envelope(_))));
        }
    }

    #[test]
    fn a_tenant_event_is_genuine_only_on_its_own_tenant_subject_with_its_message_id() {
        let ev = TenantEvent::new(
            TenantId::parse("acme").unwrap(),
            crate::TenantEventOp::Created,
            crate::Actor::default(),
            "Acme".into(),
            Default::default(),
        );
        let payload = serde_json::to_vec(&ev).unwrap();
        let id = ev.event_id.to_string();
        let ok = |n: &str| (n == MSG_ID_HEADER).then_some(id.as_str());
        assert!(genuine_tenant_event("fhirstream.tenants.acme", ok, &payload).is_ok());
        assert_eq!(
            genuine_tenant_event("fhirstream.tenants.other", ok, &payload).unwrap_err(),
            NotGenuine::Mismatch("tenant")
        );
        assert_eq!(
            genuine_tenant_event("fhirstream.tenants.acme", |_| None, &payload).unwrap_err(),
            NotGenuine::MissingHeader(MSG_ID_HEADER)
        );
        assert!(matches!(
            genuine_tenant_event("fhirstream.tenants.acme", ok, b"garbage"),
            Err(NotGenuine::Envelope(_))
        ));
        assert_eq!(genuine_tenant_event("fhirstream.tenants.A", ok, &payload).unwrap_err(), NotGenuine::Subject);
    }
}
