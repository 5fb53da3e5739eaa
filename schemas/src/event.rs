//! The event envelopes: the versioned wire format of fhirstream's streams.
//!
//! Events are facts in the past tense and carry everything a projector or an
//! analytics consumer needs, so nobody has to call back into the server.
//! The JSON Schema of each envelope is committed under `schemas/json/`.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::resource::{ResourceId, ResourceType, Version};
use crate::tenant::{TenantConfig, TenantId};

/// The JSON Schema of [`ResourceEvent`] (`schemas/json/`, versioned by
/// file name), for consumers and for tests that check every event.
pub const RESOURCE_EVENT_JSON_SCHEMA: &str = include_str!("../json/resource-event.v1.schema.json");
/// The JSON Schema of [`TenantEvent`].
pub const TENANT_EVENT_JSON_SCHEMA: &str = include_str!("../json/tenant-event.v1.schema.json");

/// Schema tag of [`ResourceEvent`].
pub const RESOURCE_EVENT_SCHEMA: &str = "fhirstream.resource-event/1";
/// Schema tag of [`TenantEvent`].
pub const TENANT_EVENT_SCHEMA: &str = "fhirstream.tenant-event/1";

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventOp {
    Create,
    Update,
    Delete,
}

/// Who caused an event: the token subject and the client it was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// The write a group of events belongs to: a transaction Bundle is one
/// commit of `count` events; a single write is a commit of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: Uuid,
    pub index: u32,
    pub count: u32,
}

impl Commit {
    /// The commit of a single, stand-alone write.
    pub fn single(id: Uuid) -> Self {
        Self { id, index: 0, count: 1 }
    }
}

/// One change to one resource: `fhirstream.resource-event/1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceEvent {
    pub schema: String,
    /// UUID v7; also the `Nats-Msg-Id` of the message, for de-duplication.
    pub event_id: Uuid,
    pub tenant: TenantId,
    pub resource_type: ResourceType,
    pub id: ResourceId,
    pub version: Version,
    pub op: EventOp,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub commit: Commit,
    /// The resource as stored, with `meta.versionId` and `meta.lastUpdated`;
    /// absent on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
}

/// What happened to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantEventOp {
    Created,
    Configured,
    Deleted,
}

/// One change to the tenant registry: `fhirstream.tenant-event/1`. Every
/// event carries the whole name and configuration, so the registry's state
/// is simply the last event of each tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantEvent {
    pub schema: String,
    pub event_id: Uuid,
    pub tenant: TenantId,
    pub op: TenantEventOp,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub name: String,
    #[serde(default)]
    pub config: TenantConfig,
    /// The life of the tenant this event belongs to: its creation event.
    /// Absent on events written before incarnations were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Incarnation>,
}

/// One life of a tenant name: the event that created it. A name deleted
/// and created again is a new incarnation, and tokens issued before it
/// must not open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The creation event's time.
    pub at: DateTime<Utc>,
    /// The creation event's id.
    pub event_id: Uuid,
    /// Whether the name had an earlier, deleted incarnation.
    #[serde(default)]
    pub recreated: bool,
}

impl TenantEvent {
    pub fn new(tenant: TenantId, op: TenantEventOp, actor: Actor, name: String, config: TenantConfig) -> Self {
        Self {
            schema: TENANT_EVENT_SCHEMA.to_owned(),
            event_id: Uuid::now_v7(),
            tenant,
            op,
            at: now(),
            actor,
            name,
            config,
            incarnation: None,
        }
    }

    /// A creation event, which starts an incarnation of its own.
    pub fn created(tenant: TenantId, actor: Actor, name: String, config: TenantConfig, recreated: bool) -> Self {
        let mut event = Self::new(tenant, TenantEventOp::Created, actor, name, config);
        event.incarnation = Some(Incarnation { at: event.at, event_id: event.event_id, recreated });
        event
    }
}

/// The server's clock at the precision FHIR `instant`s and PostgreSQL
/// `timestamptz` share, so a timestamp survives projection bit for bit.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// FHIR `instant` text of a timestamp, e.g. `2026-11-29T14:55:03.120Z`.
pub fn instant(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_event_round_trips_with_the_documented_field_names() {
        let ev = ResourceEvent {
            schema: RESOURCE_EVENT_SCHEMA.into(),
            event_id: Uuid::now_v7(),
            tenant: TenantId::parse("acme").unwrap(),
            resource_type: ResourceType::parse("Patient").unwrap(),
            id: ResourceId::parse("p.1").unwrap(),
            version: Version::FIRST,
            op: EventOp::Create,
            at: now(),
            actor: Actor { sub: "alice".into(), client: None },
            commit: Commit::single(Uuid::now_v7()),
            resource: Some(RawValue::from_string(r#"{"resourceType":"Patient","id":"p.1"}"#.into()).unwrap()),
        };
        let json: serde_json::Value = serde_json::to_value(&ev).unwrap();
        for field in [
            "schema",
            "event_id",
            "tenant",
            "resource_type",
            "id",
            "version",
            "op",
            "at",
            "actor",
            "commit",
            "resource",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["op"], "create");
        assert_eq!(json["version"], 1);
        let back: ResourceEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back.id.as_str(), "p.1");
    }

    #[test]
    fn a_delete_event_has_no_resource_field() {
        let json = serde_json::json!({
            "schema": RESOURCE_EVENT_SCHEMA, "event_id": Uuid::now_v7(), "tenant": "acme",
            "resource_type": "Patient", "id": "x", "version": 2, "op": "delete",
            "at": "2026-01-01T00:00:00.000Z", "actor": {"sub": "a"},
            "commit": {"id": Uuid::now_v7(), "index": 0, "count": 1}
        });
        let ev: ResourceEvent = serde_json::from_value(json).unwrap();
        assert!(ev.resource.is_none());
        assert!(!serde_json::to_string(&ev).unwrap().contains("\"resource\""));
    }

    #[test]
    fn an_event_naming_an_invalid_tenant_does_not_parse() {
        let json = serde_json::json!({
            "schema": RESOURCE_EVENT_SCHEMA, "event_id": Uuid::now_v7(), "tenant": "a.b",
            "resource_type": "Patient", "id": "x", "version": 1, "op": "create",
            "at": "2026-01-01T00:00:00.000Z", "actor": {"sub": "a"},
            "commit": {"id": Uuid::now_v7(), "index": 0, "count": 1}
        });
        assert!(serde_json::from_value::<ResourceEvent>(json).is_err());
    }
}
