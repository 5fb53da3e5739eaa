//! Tenant administration: an event-sourced registry, configuration that
//! takes effect at once, and deletion that provably leaves nothing behind.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome, token};

#[tokio::test]
async fn deleting_a_tenant_purges_its_events_and_rows_and_a_new_tenant_of_that_name_starts_empty() {
    let app = TestApp::spawn_secure().await;
    let doomed = app.tenant("doomed").await;
    let bystander = app.tenant("bystander").await;
    for t in [&doomed, &bystander] {
        for i in 0..5 {
            let res =
                app.put(t, &format!("Patient/p{i}"), &json!({"resourceType": "Patient", "id": format!("p{i}")})).await;
            assert_eq!(res.status(), 201);
        }
        app.put(t, "Patient/p0", &json!({"resourceType": "Patient", "id": "p0", "active": true})).await;
    }
    assert_eq!(app.stream_count(&format!("fhir.{doomed}.>")).await, 6);

    let res = app.authed(app.http.delete(app.url(&format!("/admin/tenants/{doomed}")))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["events_purged"], 6);
    assert_eq!(report["events_remaining"], 0);
    assert_eq!(report["rows_remaining"], 0);

    // Proven independently: no events, no rows, unknown to the API.
    assert_eq!(app.stream_count(&format!("fhir.{doomed}.>")).await, 0);
    let pool = app.db.pool().await;
    let rows: i64 = sqlx::query_scalar(
        "select (select count(*) from resources where tenant_id = $1) + (select count(*) from resource_versions where tenant_id = $1)",
    )
    .bind(&doomed)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 0);
    assert_outcome(app.get(&doomed, "Patient/p0").await, 404).await;
    assert_outcome(app.authed(app.http.get(app.url(&format!("/admin/tenants/{doomed}")))).send().await.unwrap(), 404)
        .await;
    let listed: Value = app.authed(app.http.get(app.url("/admin/tenants"))).send().await.unwrap().json().await.unwrap();
    assert!(listed.as_array().unwrap().iter().all(|t| t["id"] != doomed.as_str()));

    // The neighbour is untouched.
    assert_eq!(app.stream_count(&format!("fhir.{bystander}.>")).await, 6);
    assert_eq!(app.get(&bystander, "Patient/p0").await.status(), 200);

    // The same name again starts empty.
    let res = app.authed(app.http.post(app.url("/admin/tenants"))).json(&json!({"id": doomed})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_outcome(app.get(&doomed, "Patient/p0").await, 404).await;
    let res = app.put(&doomed, "Patient/p0", &json!({"resourceType": "Patient", "id": "p0"})).await;
    assert_eq!(res.headers()["etag"], "W/\"1\"", "versions start again at 1");

    // Deleting twice is a 404, not a second purge.
    let res = app.authed(app.http.delete(app.url("/admin/tenants/never-was"))).send().await.unwrap();
    assert_outcome(res, 404).await;
}

#[tokio::test]
async fn configuring_allowed_types_takes_effect_at_once_and_is_itself_an_event() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("cfg").await;
    let res = app
        .authed(app.http.put(app.url(&format!("/admin/tenants/{t}"))))
        .json(&json!({"name": "Patients only", "config": {"allowed_types": ["Patient"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let state: Value = res.json().await.unwrap();
    assert_eq!(state["name"], "Patients only");

    let diag = assert_outcome(
        app.post(&t, "Observation", &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}))
            .await,
        404,
    )
    .await;
    assert!(diag.contains("not enabled"), "{diag}");
    assert_eq!(app.post(&t, "Patient", &json!({"resourceType": "Patient"})).await.status(), 201);

    let cs: Value = app
        .http
        .get(app.fhir(&t, "metadata"))
        .bearer_auth(token(&[&t], "system/*.read"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> =
        cs["rest"][0]["resource"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Patient"]);

    // The registry is event-sourced: created, then configured.
    assert_eq!(tenant_events(&app, &t).await, ["created", "configured"]);

    // Invalid configuration is refused and changes nothing.
    let res = app
        .authed(app.http.put(app.url(&format!("/admin/tenants/{t}"))))
        .json(&json!({"name": "x", "config": {"allowed_types": ["Nope"]}}))
        .send()
        .await
        .unwrap();
    assert_outcome(res, 400).await;
    assert_eq!(tenant_events(&app, &t).await, ["created", "configured"]);
}

async fn tenant_events(app: &TestApp, t: &str) -> Vec<String> {
    let events = app.events_in("FHIRSTREAM_TENANTS", &format!("fhirstream.tenants.{t}")).await;
    events.iter().map(|e| e["op"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_cli_does_what_the_admin_api_does() {
    let app = TestApp::spawn_secure().await;
    // Async child processes: `tenants delete` waits for the projection,
    // which runs on this test's runtime.
    let run = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
            .args(args)
            .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "warn"])
            .output()
    };
    let out = run(&["tenants", "create", "cli-made", "--name", "Made by the CLI"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["tenants", "list"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-made\tMade by the CLI"));
    assert!(!run(&["tenants", "create", "Bad_Name"]).await.unwrap().status.success());
    assert!(!run(&["tenants", "create", "cli-made"]).await.unwrap().status.success(), "no second creation");

    // The server learns of it from the stream.
    let res = app.put("cli-made", "Patient/x", &json!({"resourceType": "Patient", "id": "x"})).await;
    assert_eq!(res.status(), 201);

    let out =
        run(&["tenants", "configure", "cli-made", "--name", "Renamed", "--config", r#"{"allowed_types":["Patient"]}"#])
            .await
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["tenants", "show", "cli-made"]).await.unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "Renamed");
    assert_eq!(shown["config"]["allowed_types"][0], "Patient");
    assert!(
        !run(&["tenants", "configure", "cli-made", "--name", "x", "--config", r#"{"allowed_types":["Nope"]}"#])
            .await
            .unwrap()
            .status
            .success()
    );

    // `fhirstream token` mints tokens the server accepts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["token", "--tenant", "cli-made", "--scope", "system/Patient.read", "--jwt-secret", support::SECRET])
        .output()
        .unwrap();
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let res = app.http.get(app.fhir("cli-made", "Patient/x")).bearer_auth(&minted).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res =
        app.http.get(app.fhir(&app.tenant("other").await, "Patient/x")).bearer_auth(&minted).send().await.unwrap();
    assert_outcome(res, 403).await;

    // Deletion purges and proves it, as the admin API does.
    let out = run(&["tenants", "delete", "cli-made"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["events_purged"].as_u64(), report["events_remaining"].as_u64(), report["rows_remaining"].as_i64()),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(app.stream_count("fhir.cli-made.>").await, 0);
    assert_outcome(app.get("cli-made", "Patient/x").await, 404).await;
    assert!(!run(&["tenants", "delete", "cli-made"]).await.unwrap().status.success());
}

#[tokio::test]
async fn a_tenants_body_limit_and_fhir_version_are_its_own() {
    let app = TestApp::spawn_secure().await;
    let (small, other) = (app.tenant("small").await, app.tenant("other").await);
    let configure = |config: Value| {
        app.authed(app.http.put(app.url(&format!("/admin/tenants/{small}"))))
            .json(&json!({"name": "small", "config": config}))
            .send()
    };
    let res = configure(json!({"fhir_version": "5.0.0"})).await.unwrap();
    let text = assert_outcome(res, 400).await;
    assert!(text.contains("4.0.1"), "{text}");
    let res = configure(json!({"max_body_bytes": 300, "fhir_version": "4.0.1"})).await.unwrap();
    assert_eq!(res.status(), 200);
    let big = json!({"resourceType": "Patient", "name": [{"family": "x".repeat(400)}]});
    assert_outcome(app.post(&small, "Patient", &big).await, 413).await;
    assert_eq!(app.post(&other, "Patient", &big).await.status(), 201, "the limit is the tenant's own");
    assert_eq!(app.post(&small, "Patient", &json!({"resourceType": "Patient"})).await.status(), 201);
    let cs: Value = app.get(&small, "metadata").await.json().await.unwrap();
    assert_eq!(cs["fhirVersion"], "4.0.1");
}
