//! Transactions, batches, conditional operations and PATCH.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

async fn post_bundle(app: &TestApp, t: &str, bundle: &Value) -> reqwest::Response {
    app.authed(app.http.post(app.fhir(t, "")))
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap()
}

fn synthea_bundle(name_prefix: &str) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea-r4");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("../shared/data/synthea-r4").map(|e| e.unwrap().path()).collect();
    files.sort();
    let file =
        files.iter().find(|f| f.file_name().unwrap().to_string_lossy().starts_with(name_prefix)).expect("a bundle");
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
    serde_json::from_reader(gz).unwrap()
}

/// Every `reference` string in a JSON value.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("reference", Value::String(r)) => out.push(r.clone()),
                    _ => references(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_synthea_transaction_loads_and_every_urn_reference_resolves_to_a_stored_resource() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("synthea").await;
    let bundle = synthea_bundle("Abdul");
    let n = bundle["entry"].as_array().unwrap().len();
    let res = post_bundle(&app, &t, &bundle).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-fhirstream-projection"], "applied");
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["type"], "transaction-response");
    let entries = reply["entry"].as_array().unwrap();
    assert_eq!(entries.len(), n);
    assert!(entries.iter().all(|e| e["response"]["status"] == "201 Created"));

    // Independently of the server's bookkeeping: every stored resource's
    // references that came from urn:uuid now point at stored resources.
    let mut checked = 0;
    let mut seen = HashSet::new();
    for e in entries {
        let location = e["response"]["location"].as_str().unwrap();
        let path = location.strip_prefix(&app.fhir(&t, "")).unwrap();
        let path = path.split("/_history").next().unwrap();
        let stored: Value = app.get(&t, path).await.json().await.unwrap();
        let mut refs = Vec::new();
        references(&stored, &mut refs);
        for r in refs.into_iter().filter(|r| !r.starts_with('#')) {
            assert!(!r.starts_with("urn:"), "{path} still references {r}");
            if seen.insert(r.clone()) {
                assert_eq!(app.get(&t, &r).await.status(), 200, "{path} -> {r}");
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "the bundle has internal references ({checked})");

    // One commit: every event carries the same commit id and the count.
    let events = app.events(&format!("fhir.{t}.*.*")).await;
    assert_eq!(events.len(), n);
    let commits: HashSet<&str> = events.iter().map(|e| e["commit"]["id"].as_str().unwrap()).collect();
    assert_eq!(commits.len(), 1);
    let indexes: HashSet<u64> = events.iter().map(|e| e["commit"]["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes.len(), n);
    assert!(events.iter().all(|e| e["commit"]["count"] == n as u64));
}

#[tokio::test]
async fn a_transaction_with_one_invalid_entry_leaves_stream_and_read_model_untouched() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("atomic").await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "fine"}, "request": {"method": "PUT", "url": "Patient/fine"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:a"}, "note": []},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let diag = assert_outcome(post_bundle(&app, &t, &bundle).await, 400).await;
    assert!(diag.starts_with("entry[2]"), "{diag}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
    assert!(app.fold_read_model(&t).await.versions.is_empty());

    // A conflicting If-Match is named too, and also writes nothing.
    app.put(&t, "Patient/v", &json!({"resourceType": "Patient", "id": "v"})).await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "v"}, "request": {"method": "PUT", "url": "Patient/v", "ifMatch": "W/\"7\""}}
    ]});
    let diag = assert_outcome(post_bundle(&app, &t, &bundle).await, 412).await;
    assert!(diag.starts_with("entry[1]"), "{diag}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 1);
}

#[tokio::test]
async fn two_transactions_racing_on_one_resource_let_exactly_one_win() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("txrace").await;
    app.put(&t, "Patient/shared", &json!({"resourceType": "Patient", "id": "shared"})).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let http = app.http.clone();
        let url = app.fhir(&t, "");
        let token = app.admin_token.clone().unwrap();
        tasks.push(tokio::spawn(async move {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("racer {i}")}}, "request": {"method": "POST", "url": "Observation"}},
                {"resource": {"resourceType": "Patient", "id": "shared", "gender": "other"}, "request": {"method": "PUT", "url": "Patient/shared", "ifMatch": "W/\"1\""}}
            ]});
            let res = http.post(url).bearer_auth(token).header("content-type", "application/fhir+json").body(bundle.to_string()).send().await.unwrap();
            res.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 409, 412].contains(s)), "{statuses:?}");
    // The losers wrote nothing: one create of the patient, one winning commit of two events.
    assert_eq!(app.stream_count(&format!("fhir.{t}.*.*")).await, 3);
    app.wait_caught_up(std::time::Duration::from_secs(10)).await;
    assert_eq!(app.fold_read_model(&t).await.versions.len(), 3);
}

#[tokio::test]
async fn twenty_concurrent_conditional_creates_make_exactly_one_resource() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("cond").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = app.http.clone();
        let url = app.fhir(&t, "Patient");
        let token = app.admin_token.clone().unwrap();
        tasks.push(tokio::spawn(async move {
            let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]});
            let res = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .header("if-none-exist", "identifier=urn:mrn|42")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (status, body["id"].as_str().map(str::to_owned))
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (status, id) = task.await.unwrap();
        assert!(status == 201 || status == 200, "a loser answers with the winner, never 409: {status}");
        if status == 201 {
            created += 1;
        }
        if let Some(id) = id {
            ids.insert(id);
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every answer names the same resource: {ids:?}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.*")).await, 1);

    // A later conditional create (after projection) finds it through the read model too.
    let res = app
        .authed(app.http.post(app.fhir(&t, "Patient")))
        .header("content-type", "application/fhir+json")
        .header("if-none-exist", "identifier=42")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn conditional_update_and_delete_follow_zero_one_many() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("condupd").await;
    let put = |q: &str, body: Value| {
        app.authed(app.http.put(app.fhir(&t, &format!("Patient?{q}"))))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    // 0 matches: create.
    let res = put(
        "identifier=urn:x|1",
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // 1 match: update it.
    let res = put(
        "identifier=urn:x|1",
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}], "gender": "female"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], id.as_str());
    // Many matches: 412.
    for i in 0..2 {
        app.put(&t, &format!("Patient/dup{i}"), &json!({"resourceType": "Patient", "id": format!("dup{i}"), "identifier": [{"system": "urn:x", "value": "2"}]})).await;
    }
    assert_outcome(put("identifier=urn:x|2", json!({"resourceType": "Patient"})).await.unwrap(), 412).await;
    assert_outcome(app.authed(app.http.delete(app.fhir(&t, "Patient?identifier=urn:x|2"))).send().await.unwrap(), 412)
        .await;
    // Conditional delete of one match, then of none.
    let res = app.authed(app.http.delete(app.fhir(&t, "Patient?identifier=urn:x|1"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_outcome(app.get(&t, &format!("Patient/{id}")).await, 410).await;
    let res = app.authed(app.http.delete(app.fhir(&t, "Patient?identifier=urn:x|1"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn a_batch_reports_each_entry_on_its_own() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("batch").await;
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": []}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/nothing"}},
        {"resource": {"resourceType": "Patient", "id": "b"}, "request": {"method": "PUT", "url": "Patient/b", "ifMatch": "W/\"3\""}},
        {"request": {"method": "GET", "url": "Patient/nothing"}}
    ]});
    let res = post_bundle(&app, &t, &bundle).await;
    assert_eq!(res.status(), 200);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["type"], "batch-response");
    let statuses: Vec<&str> =
        reply["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["201 Created", "400 Bad Request", "204 No Content", "412 Precondition Failed", "404 Not Found"]
    );
    assert_eq!(reply["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 1);
}

#[tokio::test]
async fn patch_applies_json_patch_and_a_failing_test_writes_nothing() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("patch").await;
    app.put(&t, "Patient/p", &json!({"resourceType": "Patient", "id": "p", "active": true})).await;
    let patch = |doc: Value, if_match: Option<&str>| {
        let mut req = app
            .authed(app.http.patch(app.fhir(&t, "Patient/p")))
            .header("content-type", "application/json-patch+json")
            .body(doc.to_string());
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        req.send()
    };
    let res = patch(
        json!([{"op": "test", "path": "/active", "value": true}, {"op": "replace", "path": "/active", "value": false}]),
        Some("W/\"1\""),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["active"], false);

    assert_outcome(
        patch(json!([{"op": "test", "path": "/active", "value": true}, {"op": "remove", "path": "/active"}]), None)
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_outcome(
        patch(json!([{"op": "replace", "path": "/resourceType", "value": "Observation"}]), None).await.unwrap(),
        422,
    )
    .await;
    assert_outcome(patch(json!([{"op": "remove", "path": "/active"}]), Some("W/\"1\"")).await.unwrap(), 412).await;
    assert_outcome(patch(json!({"not": "a patch"}), None).await.unwrap(), 422).await;
    let res = app
        .authed(app.http.patch(app.fhir(&t, "Patient/none")))
        .header("content-type", "application/json-patch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_outcome(res, 404).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 2);

    // PATCH inside a transaction.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": [{"op": "add", "path": "/gender", "value": "female"}], "request": {"method": "PATCH", "url": "Patient/p"}},
        {"request": {"method": "GET", "url": "Patient/p"}}
    ]});
    let reply: Value = post_bundle(&app, &t, &bundle).await.json().await.unwrap();
    assert_eq!(reply["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(reply["entry"][1]["resource"]["gender"], "female");
    assert_eq!(reply["entry"][1]["resource"]["meta"]["versionId"], "3");
}

#[tokio::test]
async fn a_bundle_over_the_entry_limit_is_refused_whole() {
    let app = TestApp::spawn_with(|cfg| cfg.max_bundle_entries = 5).await;
    let t = app.tenant("limit").await;
    let entries: Vec<Value> = (0..6)
        .map(|_| json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}))
        .collect();
    let res = post_bundle(&app, &t, &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})).await;
    assert_outcome(res, 413).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
}
