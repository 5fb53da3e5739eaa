//! Defence in depth on the stream: a message placed on a tenant's subjects
//! that is not fhirstream's own event for that subject (another tenant's
//! envelope, as a reply-subject injection would relay it; a message without
//! the write headers; garbage) is skipped and counted by every reader — the
//! write side's current version and PATCH base, the projector, the change
//! feed, the tenant registry, replay and verify — never served, never a 500.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

/// An envelope of `tenant`'s `Patient/{id}` with consistent write headers
/// (its own message id, version and op): genuine in every respect except,
/// when published elsewhere, its subject.
fn envelope(tenant: &str, id: &str, version: u64, family: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let event_id = uuid::Uuid::now_v7();
    let body = json!({
        "schema": "fhirstream.resource-event/1", "event_id": event_id, "tenant": tenant,
        "resource_type": "Patient", "id": id, "version": version, "op": "update",
        "at": "2026-01-01T00:00:00.000Z", "actor": {"sub": "mallory"},
        "commit": {"id": uuid::Uuid::now_v7(), "index": 0, "count": 1},
        "resource": {"resourceType": "Patient", "id": id, "name": [{"family": family}],
            "meta": {"versionId": version.to_string(), "lastUpdated": "2026-01-01T00:00:00.000Z"}}
    });
    let headers = vec![
        ("Nats-Msg-Id", event_id.to_string()),
        ("Fhirstream-Version", version.to_string()),
        ("Fhirstream-Op", "update".into()),
    ];
    (headers, body.to_string().into_bytes())
}

async fn etag(res: reqwest::Response, status: u16) -> (String, Value) {
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let code = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(code, status, "{body:#}");
    (etag, body)
}

async fn skipped_count(app: &TestApp, reader: &str) -> u64 {
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("fhirstream_stream_messages_skipped_total{") && l.contains(&format!("reader=\"{reader}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn another_tenants_envelope_on_a_resource_subject_is_never_the_resources_current_version() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("forger").await, app.tenant("victim").await);
    assert_eq!(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    // Tenant A's event (consistent headers and all) lands on B's subject,
    // as a JetStream reply sent to a forged reply subject would.
    let (headers, payload) = envelope(&a, "p", 5, "Injected");
    app.publish_forged(&format!("fhir.{b}.Patient.p"), &headers, &payload).await;

    let put = app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p", "gender": "female"})).await;
    let (tag, _) = etag(put, 200).await;
    assert_eq!(tag, "W/\"2\"", "the next version follows B's own version 1, not the forged 5");

    // PATCH reads its base from the stream: it must be B's version 2.
    let (headers, payload) = envelope(&a, "p", 9, "Injected");
    app.publish_forged(&format!("fhir.{b}.Patient.p"), &headers, &payload).await;
    let patch = app
        .authed(app.http.patch(app.fhir(&b, "Patient/p")))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "add", "path": "/active", "value": true}]).to_string())
        .send()
        .await
        .unwrap();
    let (tag, body) = etag(patch, 200).await;
    assert_eq!(tag, "W/\"3\"");
    assert_eq!(body["gender"], "female", "the patch applies to B's resource: {body:#}");
    assert!(body.get("name").is_none(), "nothing of the forged body: {body:#}");

    app.wait_caught_up(Duration::from_secs(20)).await;
    let (tag, body) = etag(app.get(&b, "Patient/p").await, 200).await;
    assert_eq!((tag.as_str(), body["active"].clone()), ("W/\"3\"", json!(true)));
    let history: Value = app.get(&b, "Patient/p/_history").await.json().await.unwrap();
    assert_eq!(history["total"], 3, "the projector skipped both forgeries: {history:#}");
    assert!(!history.to_string().contains("Injected"));
    assert!(skipped_count(&app, "write").await >= 2, "the write side counted what it skipped");
    assert!(skipped_count(&app, "projector").await >= 2, "the projector counted what it skipped");
}

#[tokio::test]
async fn a_message_without_fhirstreams_write_headers_is_skipped_even_with_a_matching_envelope() {
    let app = TestApp::spawn().await;
    let b = app.tenant("headless").await;
    assert_eq!(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    let (_, payload) = envelope(&b, "p", 7, "Headless");
    app.publish_forged(&format!("fhir.{b}.Patient.p"), &[], &payload).await;

    let (tag, _) = etag(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await, 200).await;
    assert_eq!(tag, "W/\"2\"");
    app.wait_caught_up(Duration::from_secs(20)).await;
    let history: Value = app.get(&b, "Patient/p/_history").await.json().await.unwrap();
    assert_eq!(history["total"], 2, "{history:#}");
    assert!(!history.to_string().contains("Headless"));
}

#[tokio::test]
async fn a_subject_holding_only_garbage_is_created_at_version_one_and_reads_as_not_found_before() {
    let app = TestApp::spawn().await;
    let b = app.tenant("garbage").await;
    app.publish_forged(&format!("fhir.{b}.Patient.g"), &[], b"{\"type\":\"io.nats.jetstream.api.v1.x\"}").await;
    app.wait_caught_up(Duration::from_secs(20)).await;
    assert_outcome(app.get(&b, "Patient/g").await, 404).await;
    let delete = app.authed(app.http.delete(app.fhir(&b, "Patient/g"))).send().await.unwrap();
    assert!(delete.status().is_success(), "deleting nothing is fine, not a 500: {}", delete.status());

    let (tag, _) = etag(app.put(&b, "Patient/g", &json!({"resourceType": "Patient", "id": "g"})).await, 201).await;
    assert_eq!(tag, "W/\"1\"", "the write follows the garbage's sequence but is version 1");
    // A transaction entry reads the same tail.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "g", "active": true}, "request": {"method": "PUT", "url": "Patient/g"}},
        {"resource": {"resourceType": "Patient", "id": "h"}, "request": {"method": "PUT", "url": "Patient/h"}}
    ]});
    app.publish_forged(&format!("fhir.{b}.Patient.g"), &[], b"garbage").await;
    let res = app.authed(app.http.post(app.fhir(&b, ""))).json(&bundle).send().await.unwrap();
    let (_, body) = etag(res, 200).await;
    assert_eq!(body["entry"][0]["response"]["etag"], "W/\"2\"", "{body:#}");
}

#[tokio::test]
async fn the_change_feed_serves_only_genuine_events_of_the_tenant() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("feed-forger").await, app.tenant("feed-victim").await);
    let mut feed = app.authed(app.http.get(app.fhir(&b, "$events?since=0"))).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let (headers, payload) = envelope(&a, "p", 1, "Injected");
    app.publish_forged(&format!("fhir.{b}.Patient.p"), &headers, &payload).await;
    app.publish_forged(&format!("fhir.{b}.Patient.q"), &[], b"not an event").await;
    assert_eq!(app.put(&b, "Patient/real", &json!({"resourceType": "Patient", "id": "real"})).await.status(), 201);

    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\"id\":\"real\"") {
        let chunk = tokio::time::timeout_at(deadline, feed.chunk()).await.expect("the genuine event arrives");
        text.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
    }
    assert!(!text.contains("Injected") && !text.contains("not an event"), "{text}");
    assert_eq!(text.matches("\ndata:").count() + usize::from(text.starts_with("data:")), 1, "{text}");
    assert!(skipped_count(&app, "feed").await >= 2);
}

#[tokio::test]
async fn garbage_on_a_tenant_subject_never_makes_a_tenant_answer_500() {
    let app = TestApp::spawn().await;
    let b = app.tenant("reg").await;
    assert_eq!(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    app.publish_forged(&format!("fhirstream.tenants.{b}"), &[], b"garbage").await;
    // Another tenant's genuine-looking event on B's subject, deleting it.
    let other = json!({"schema": "fhirstream.tenant-event/1", "event_id": uuid::Uuid::now_v7(), "tenant": "someone",
        "op": "deleted", "at": "2026-01-01T00:00:00.000Z", "actor": {"sub": "m"}, "name": "x"});
    let id = other["event_id"].as_str().unwrap().to_owned();
    app.publish_forged(&format!("fhirstream.tenants.{b}"), &[("Nats-Msg-Id", id)], other.to_string().as_bytes()).await;
    // An unknown name with only garbage on its subject.
    let ghost = format!("ghost-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.publish_forged(&format!("fhirstream.tenants.{ghost}"), &[], b"garbage").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(app.get(&b, "Patient/p").await.status(), 200, "B is still live");
    assert_outcome(app.get(&ghost, "Patient/p").await, 404).await;
    // The command side reads the same tail: B can be configured, the ghost created.
    let admin = |req: reqwest::RequestBuilder| app.authed(req);
    let res =
        admin(app.http.put(app.url(&format!("/admin/tenants/{b}")))).json(&json!({"name": "B"})).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res =
        admin(app.http.post(app.url("/admin/tenants"))).json(&json!({"id": ghost, "name": "G"})).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(app.put(&ghost, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);

    // A fresh fold of the registry from the stream (what `fhirstream
    // tenants list` and a starting node read): B is live there too.
    let js = async_nats::jetstream::new(app.nats.client().await);
    let stream = js.get_stream("FHIRSTREAM_TENANTS").await.unwrap();
    let listed: Vec<String> =
        projector::registry::snapshot(&stream).await.unwrap().into_iter().map(|t| t.id.to_string()).collect();
    assert!(listed.contains(&b) && listed.contains(&ghost), "{listed:?}");
    assert!(skipped_count(&app, "registry").await >= 1);
}

#[tokio::test]
async fn verify_and_replay_skip_forged_messages_exactly_as_the_projector_does() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("rv-forger").await, app.tenant("rv-victim").await);
    assert_eq!(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    let (headers, payload) = envelope(&a, "p", 2, "Injected");
    app.publish_forged(&format!("fhir.{b}.Patient.p"), &headers, &payload).await;
    let (_, payload) = envelope(&b, "x", 1, "Headless");
    app.publish_forged(&format!("fhir.{b}.Patient.x"), &[], &payload).await;
    app.wait_caught_up(Duration::from_secs(20)).await;

    // In process, with the library's own replay and verify (a spawned CLI
    // would be whatever binary the shared target directory holds now).
    let pool = app.db.pool().await;
    let js = async_nats::jetstream::new(app.nats.client().await);
    let tenant = schemas::TenantId::parse(&b).unwrap();
    let opts = projector::replay::ReplayOptions {
        stream: "FHIR".into(),
        projector: "main".into(),
        batch_size: 100,
        restart: false,
    };
    let report = projector::replay::verify(&pool, &js, &tenant, &opts, 10, &|_| {}).await.unwrap();
    assert!(report.identical, "{report:?}");
    assert_eq!((report.events, report.expected.resources), (1, 1), "only B's own event is folded");
    projector::replay::replay_live(&pool, &js, &tenant, &opts, &|_| {}).await.unwrap();
    let history: Value = app.get(&b, "Patient/p/_history").await.json().await.unwrap();
    assert_eq!(history["total"], 1, "{history:#}");
    assert_outcome(app.get(&b, "Patient/x").await, 404).await;
}
