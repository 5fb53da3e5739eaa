//! The committed envelope schemas describe what the code writes, and they
//! reject what it must never write.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::event_schema_errors;

fn event(op: &str) -> Value {
    let e = schemas::ResourceEvent {
        schema: schemas::event::RESOURCE_EVENT_SCHEMA.into(),
        event_id: uuid::Uuid::now_v7(),
        tenant: schemas::TenantId::parse("acme").unwrap(),
        resource_type: schemas::ResourceType::parse("Patient").unwrap(),
        id: schemas::ResourceId::parse("p.1").unwrap(),
        version: schemas::Version::new(2).unwrap(),
        op: serde_json::from_value(json!(op)).unwrap(),
        at: schemas::event::now(),
        actor: schemas::Actor { sub: "alice".into(), client: Some("app".into()) },
        commit: schemas::Commit { id: uuid::Uuid::now_v7(), index: 0, count: 1 },
        resource: (op != "delete").then(|| {
            serde_json::value::to_raw_value(
                &json!({"resourceType": "Patient", "id": "p.1", "meta": {"versionId": "2"}}),
            )
            .unwrap()
        }),
    };
    serde_json::to_value(e).unwrap()
}

#[test]
fn events_as_the_code_writes_them_match_the_schema() {
    for op in ["create", "update", "delete"] {
        assert_eq!(event_schema_errors(&event(op)), Vec::<String>::new(), "{op}");
    }
    let tenant = schemas::TenantEvent::new(
        schemas::TenantId::parse("acme").unwrap(),
        schemas::TenantEventOp::Configured,
        schemas::Actor::default(),
        "Acme".into(),
        schemas::TenantConfig { allowed_types: Some(vec!["Patient".into()]), ..Default::default() },
    );
    assert!(event_schema_errors(&serde_json::to_value(tenant).unwrap()).is_empty());
}

#[test]
fn the_schema_rejects_malformed_events() {
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: Vec<Mutation> = vec![
        ("version 0", |e| e["version"] = json!(0)),
        ("unknown op", |e| e["op"] = json!("merge")),
        ("tenant with a dot", |e| e["tenant"] = json!("a.b")),
        ("id with a wildcard", |e| e["id"] = json!("a*")),
        ("extra field", |e| e["extra"] = json!(1)),
        ("no commit", |e| {
            e.as_object_mut().unwrap().remove("commit");
        }),
        ("event id not a uuid", |e| e["event_id"] = json!("nope")),
        ("update without resource", |e| {
            e.as_object_mut().unwrap().remove("resource");
        }),
    ];
    for (what, mutate) in mutations {
        let mut e = event("update");
        mutate(&mut e);
        assert!(!event_schema_errors(&e).is_empty(), "{what} should be rejected");
    }
    let mut delete = event("delete");
    delete["resource"] = json!({"resourceType": "Patient", "id": "p.1", "meta": {}});
    assert!(!event_schema_errors(&delete).is_empty(), "a delete carries no resource");
}
