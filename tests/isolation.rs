//! Tenant isolation in the core loop: another tenant's resource is
//! indistinguishable from one that never existed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome, fingerprint};

#[tokio::test]
async fn a_resource_of_tenant_a_is_a_plain_404_from_tenant_b() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let res = app
        .put(&a, "Patient/shared-id", &json!({"resourceType": "Patient", "id": "shared-id", "gender": "female"}))
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = app.post(&a, "Patient", &json!({"resourceType": "Patient"})).await.json().await.unwrap();
    let server_id = created["id"].as_str().unwrap();

    for id in ["shared-id", server_id] {
        // An id of the same length that exists nowhere.
        let never = format!("z{}", &id[1..]);
        for suffix in ["", "/_history", "/_history/1"] {
            let existing_elsewhere = fingerprint(app.get(&b, &format!("Patient/{id}{suffix}")).await).await;
            let never_existed = fingerprint(app.get(&b, &format!("Patient/{never}{suffix}")).await).await;
            assert_eq!(existing_elsewhere.0, 404, "{id}{suffix}");
            // Same status, same headers; the body differs only by the id echoed back.
            assert_eq!(existing_elsewhere.0, never_existed.0);
            assert_eq!(existing_elsewhere.1, never_existed.1, "{id}{suffix}");
            assert_eq!(existing_elsewhere.2.replace(id, "ID"), never_existed.2.replace(&never, "ID"), "{id}{suffix}");
            assert!(!existing_elsewhere.2.contains(&a), "the other tenant's name never appears");
        }
    }
}

#[tokio::test]
async fn the_same_id_in_two_tenants_is_two_independent_resources() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    app.put(&a, "Patient/p1", &json!({"resourceType": "Patient", "id": "p1", "gender": "female"})).await;
    app.put(&a, "Patient/p1", &json!({"resourceType": "Patient", "id": "p1", "gender": "other"})).await;
    // B's PUT with the same id creates B's own version 1, never touching A's.
    let res = app.put(&b, "Patient/p1", &json!({"resourceType": "Patient", "id": "p1", "gender": "male"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "W/\"1\"");
    let in_a: Value = app.get(&a, "Patient/p1").await.json().await.unwrap();
    let in_b: Value = app.get(&b, "Patient/p1").await.json().await.unwrap();
    assert_eq!((in_a["gender"].as_str(), in_a["meta"]["versionId"].as_str()), (Some("other"), Some("2")));
    assert_eq!((in_b["gender"].as_str(), in_b["meta"]["versionId"].as_str()), (Some("male"), Some("1")));
    // Deleting in B leaves A alone; If-Match is checked against B's version only.
    let res = app.http.delete(app.fhir(&b, "Patient/p1")).header("if-match", "W/\"2\"").send().await.unwrap();
    assert_outcome(res, 412).await;
    assert_eq!(app.http.delete(app.fhir(&b, "Patient/p1")).send().await.unwrap().status(), 204);
    assert_eq!(app.get(&a, "Patient/p1").await.status(), 200);
    let history: Value = app.get(&b, "Patient/p1/_history").await.json().await.unwrap();
    assert_eq!(history["total"], 2);
    assert!(!history.to_string().contains(&a));
}

#[tokio::test]
async fn a_body_cannot_move_a_resource_into_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let body = json!({
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:fhirstream:tenant", "code": b}], "security": [{"code": b}]},
        "extension": [{"url": "urn:fhirstream:tenant", "valueString": b}]
    });
    let created: Value = app.post(&a, "Patient", &body).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get(&a, &format!("Patient/{id}")).await.status(), 200);
    assert_eq!(app.get(&b, &format!("Patient/{id}")).await.status(), 404);
    assert_eq!(app.stream_count(&format!("fhir.{a}.>")).await, 1);
    assert_eq!(app.stream_count(&format!("fhir.{b}.>")).await, 0);
}
