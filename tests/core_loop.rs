//! The core loop against real NATS and PostgreSQL: write, project, read.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

fn patient(family: &str) -> Value {
    json!({ "resourceType": "Patient", "name": [{ "family": family }] })
}

#[tokio::test]
async fn create_read_update_delete_vread_and_history_round_trip_with_their_headers() {
    let app = TestApp::spawn().await;
    let t = app.tenant("crud").await;

    // Create: 201, Location with the version, ETag, Last-Modified, body stamped.
    let res = app.post(&t, "Patient", &patient("Smith")).await;
    assert_eq!(res.status(), 201);
    let h = res.headers().clone();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().expect("server-assigned id").to_owned();
    assert_eq!(h["etag"], "W/\"1\"");
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["x-fhirstream-projection"], "applied");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
    let location = h["location"].to_str().unwrap();
    assert_eq!(location, app.fhir(&t, &format!("Patient/{id}/_history/1")));
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));

    // Read right after the write sees it (read-your-writes by default).
    let res = app.get(&t, &format!("Patient/{id}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"1\"");
    let read: Value = res.json().await.unwrap();
    assert_eq!(read, created);

    // Update: 200, version 2.
    let mut v2 = read.clone();
    v2["name"][0]["family"] = json!("Jones");
    let res = app.put(&t, &format!("Patient/{id}"), &v2).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["meta"]["versionId"], "2");
    assert_eq!(body["name"][0]["family"], "Jones");

    // Vread of both versions.
    let v1: Value = app.get(&t, &format!("Patient/{id}/_history/1")).await.json().await.unwrap();
    assert_eq!(v1["name"][0]["family"], "Smith");
    let res = app.get(&t, &format!("Patient/{id}/_history/2")).await;
    assert_eq!(res.headers()["etag"], "W/\"2\"");
    assert_outcome(app.get(&t, &format!("Patient/{id}/_history/3")).await, 404).await;

    // Delete: 204 with the delete's version; then read is 410, vread of
    // the delete version is 410, older versions stay readable.
    let res = app.http.delete(app.fhir(&t, &format!("Patient/{id}"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["etag"], "W/\"3\"");
    let res = app.get(&t, &format!("Patient/{id}")).await;
    assert_eq!(res.headers()["etag"], "W/\"3\"");
    assert_outcome(res, 410).await;
    assert_outcome(app.get(&t, &format!("Patient/{id}/_history/3")).await, 410).await;
    assert_eq!(app.get(&t, &format!("Patient/{id}/_history/2")).await.status(), 200);

    // Deleting again appends nothing.
    let res = app.http.delete(app.fhir(&t, &format!("Patient/{id}"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.{id}")).await, 3);

    // History: newest first, a delete entry without a resource.
    let res = app.get(&t, &format!("Patient/{id}/_history")).await;
    assert_eq!(res.status(), 200);
    let bundle: Value = res.json().await.unwrap();
    assert_eq!(bundle["type"], "history");
    assert_eq!(bundle["total"], 3);
    let entries = bundle["entry"].as_array().unwrap();
    let etags: Vec<&str> = entries.iter().map(|e| e["response"]["etag"].as_str().unwrap()).collect();
    assert_eq!(etags, ["W/\"3\"", "W/\"2\"", "W/\"1\""]);
    assert_eq!(entries[0]["request"]["method"], "DELETE");
    assert!(entries[0].get("resource").is_none());
    assert_eq!(entries[2]["resource"]["name"][0]["family"], "Smith");

    // A PUT brings the deleted resource back as version 4.
    let res = app.put(&t, &format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"4\"");

    // Every event of the round trip matches the committed envelope schema.
    let events = app.events(&format!("fhir.{t}.>")).await;
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["create", "update", "delete", "create"]);
}

#[tokio::test]
async fn put_with_a_client_id_creates_and_ids_with_dots_round_trip() {
    let app = TestApp::spawn().await;
    let t = app.tenant("put").await;
    for id in ["a.b.c", "x-1", "1.2.840.113619"] {
        let res = app.put(&t, &format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id})).await;
        assert_eq!(res.status(), 201, "{id}");
        assert_eq!(res.headers()["location"].to_str().unwrap(), app.fhir(&t, &format!("Patient/{id}/_history/1")));
        let read: Value = app.get(&t, &format!("Patient/{id}")).await.json().await.unwrap();
        assert_eq!(read["id"], id);
    }
    // The subject token of "a.b.c" is "a_b_c", and only that subject exists.
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.a_b_c")).await, 1);
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 3);
}

#[tokio::test]
async fn concurrent_updates_with_the_same_if_match_let_exactly_one_win_and_history_has_no_gaps() {
    let app = TestApp::spawn().await;
    let t = app.tenant("race").await;
    let res = app.put(&t, "Patient/racer", &json!({"resourceType": "Patient", "id": "racer"})).await;
    assert_eq!(res.status(), 201);

    let n = 12;
    let mut tasks = Vec::new();
    for i in 0..n {
        let http = app.http.clone();
        let url = app.fhir(&t, "Patient/racer");
        tasks.push(tokio::spawn(async move {
            let body = json!({"resourceType": "Patient", "id": "racer", "gender": if i % 2 == 0 { "male" } else { "female" }, "birthDate": format!("19{:02}", 10 + i)});
            http.put(url)
                .header("content-type", "application/fhir+json")
                .header("if-match", "W/\"1\"")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), n - 1, "{statuses:?}");

    let bundle: Value = app.get(&t, "Patient/racer/_history").await.json().await.unwrap();
    let versions: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"]);
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.racer")).await, 2);
}

#[tokio::test]
async fn concurrent_unconditional_updates_never_overwrite_silently() {
    let app = TestApp::spawn().await;
    let t = app.tenant("lww").await;
    app.put(&t, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let http = app.http.clone();
        let url = app.fhir(&t, "Patient/p");
        tasks.push(tokio::spawn(async move {
            let body = json!({"resourceType": "Patient", "id": "p", "birthDate": format!("19{:02}", 10 + i)});
            let res = http
                .put(url)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            (status, etag)
        }));
    }
    let mut won = HashSet::new();
    for task in tasks {
        let (status, etag) = task.await.unwrap();
        assert!(status == 200 || status == 409, "{status}");
        if status == 200 {
            assert!(won.insert(etag.unwrap()), "two writers got the same version");
        }
    }
    // Every acknowledged update is a distinct version, and the stream holds
    // exactly the create plus the acknowledged updates.
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.p")).await, 1 + won.len() as u64);
    let bundle: Value = app.get(&t, "Patient/p/_history").await.json().await.unwrap();
    assert_eq!(bundle["total"], 1 + won.len() as u64);
}

#[tokio::test]
async fn a_client_can_opt_out_of_read_your_writes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("eventual").await;
    let res = app
        .http
        .post(app.fhir(&t, "Patient"))
        .header("content-type", "application/fhir+json")
        .header("x-fhirstream-consistency", "eventual")
        .body(patient("Fast").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-fhirstream-projection"], "skipped");
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // It still becomes readable.
    let mut status = 0;
    for _ in 0..100 {
        status = app.get(&t, &format!("Patient/{id}")).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_write_whose_projection_is_slow_is_acknowledged_with_a_pending_header() {
    // No projector role, and writes that wait for the projector instead of
    // applying their own events: the event is durable but never applied.
    let app = TestApp::spawn_with(|cfg| {
        cfg.roles = vec![fhirstream::config::Role::Command, fhirstream::config::Role::Query];
        cfg.read_your_writes = fhirstream::config::ReadYourWritesMode::Projector;
        cfg.read_your_writes_timeout_ms = 200;
    })
    .await;
    let t = app.tenant("slow").await;
    let res = app.post(&t, "Patient", &patient("Pending")).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-fhirstream-projection"], "pending");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 1);
}

#[tokio::test]
async fn a_query_only_node_refuses_writes_and_a_command_only_node_refuses_reads() {
    let reads = TestApp::spawn_with(|cfg| cfg.roles = vec![fhirstream::config::Role::Query]).await;
    let t = reads.tenant_via_stream("roles").await;
    assert_outcome(reads.post(&t, "Patient", &patient("X")).await, 405).await;

    let writes = TestApp::spawn_with(|cfg| cfg.roles = vec![fhirstream::config::Role::Command]).await;
    let t = writes.tenant_via_stream("roles").await;
    assert_outcome(writes.get(&t, "Patient/x").await, 405).await;
}

#[tokio::test]
async fn the_capability_statement_lists_only_what_works() {
    let app = TestApp::spawn().await;
    let t = app.tenant("meta").await;
    let res = app.get(&t, "metadata").await;
    assert_eq!(res.status(), 200);
    let cs: Value = res.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let codes: HashSet<&str> =
        patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        HashSet::from([
            "read",
            "vread",
            "history-instance",
            "history-type",
            "search-type",
            "create",
            "update",
            "patch",
            "delete"
        ])
    );
    let system: HashSet<&str> =
        cs["rest"][0]["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(system, HashSet::from(["transaction", "batch", "search-system", "history-system"]));
    // Every parameter listed is accepted under strict handling (truthful),
    // and the composite ones are named as missing.
    for rt in ["Patient", "Observation"] {
        let entry = resources.iter().find(|r| r["type"] == rt).unwrap();
        let params = entry["searchParam"].as_array().unwrap();
        assert!(params.len() > 10, "{rt}");
        for p in params {
            let name = p["name"].as_str().unwrap();
            let query = match name {
                "_id" => "_id=x".to_string(),
                "_lastUpdated" => "_lastUpdated=gt2000".to_string(),
                _ => format!("{name}:missing=true"),
            };
            let res = app
                .http
                .get(app.fhir(&t, &format!("{rt}?{query}")))
                .header("prefer", "handling=strict")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{rt}?{query}: {}", res.text().await.unwrap());
        }
    }
    let observation = resources.iter().find(|r| r["type"] == "Observation").unwrap();
    assert!(observation["documentation"].as_str().unwrap().contains("code-value-quantity"));
    assert_outcome(app.get("no-such-tenant", "metadata").await, 404).await;
}
