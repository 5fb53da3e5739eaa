//! Events PostgreSQL refuses (data errors, program limits) are recorded and
//! skipped by the projector instead of blocking their tenant forever.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

async fn refused(app: &TestApp, tenant: &str) -> Vec<(i64, String, String, String)> {
    sqlx::query_as("select seq, subject, id, sqlstate from refused_events where tenant_id = $1 order by seq")
        .bind(tenant)
        .fetch_all(&app.db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_postgresql_refuses_is_recorded_and_the_events_after_it_are_projected() {
    let app = TestApp::spawn().await;
    let t = app.tenant("refuse").await;
    // NUL in an element nothing indexes: only jsonb objects (22P05).
    let bad = r#"{"resourceType":"Patient","id":"nul","text":{"status":"generated","div":"<div>a\u0000b</div>"},
        "meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000Z"}}"#;
    let bad_seq = app.publish_raw(&t, "nul", bad).await;
    let good = app.put(&t, "Patient/fine", &json!({"resourceType": "Patient", "id": "fine"})).await;
    assert_eq!(good.status(), 201, "a good write after the poison one");
    app.wait_caught_up(Duration::from_secs(20)).await;

    let got = app.get(&t, "Patient/fine").await;
    assert_eq!(got.status(), 200, "the event after the refused one is projected");
    assert_eq!(app.get(&t, "Patient/nul").await.status(), 404, "the refused event left nothing behind");
    let rows = refused(&app, &t).await;
    assert_eq!(rows, vec![(bad_seq as i64, format!("fhir.{t}.Patient.nul"), "nul".into(), "22P05".into())]);
    let (checkpoint, last) = app.projection_lag().await;
    assert_eq!(checkpoint, last, "the checkpoint moved past the refused event");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("fhirstream_projector_refused_events_total{") && l.ends_with(" 1")),
        "the refusal is counted"
    );
    assert!(!metrics.contains(&t), "metrics never name a tenant");

    // Another tenant's refusals are its own; nothing of this one shows there.
    let other = app.tenant("refuse-other").await;
    assert!(refused(&app, &other).await.is_empty());
}

#[tokio::test]
async fn a_refused_event_inside_a_batch_does_not_take_its_neighbours_with_it() {
    // The server runs no projector while the events pile up; a projector
    // process started afterwards gets them in one batch, so the split runs.
    let app = TestApp::spawn_with(|cfg| {
        cfg.roles = vec![fhirstream::config::Role::Command, fhirstream::config::Role::Query];
    })
    .await;
    let t = app.tenant("split").await;
    let mut bad_seqs = Vec::new();
    for i in 0..30 {
        if i % 10 == 5 {
            let bad = format!(r#"{{"resourceType":"Patient","id":"bad{i}","name":[{{"given":["\u0000"]}}]}}"#);
            bad_seqs.push(app.publish_raw(&t, &format!("bad{i}"), &bad).await as i64);
        } else {
            let good = format!(r#"{{"resourceType":"Patient","id":"ok{i}"}}"#);
            app.publish_raw(&t, &format!("ok{i}"), &good).await;
        }
    }
    let mut projector = std::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["serve", "--roles", "projector", "--listen", "127.0.0.1:0", "--log", "error"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    app.wait_caught_up(Duration::from_secs(30)).await;
    projector.kill().unwrap();
    projector.wait().unwrap();
    for i in (0..30).filter(|i| i % 10 != 5) {
        assert_eq!(app.get(&t, &format!("Patient/ok{i}")).await.status(), 200, "ok{i}");
    }
    let rows: Vec<i64> = refused(&app, &t).await.into_iter().map(|r| r.0).collect();
    assert_eq!(rows, bad_seqs);

    // verify folds the stream with the same refusals, so the read model
    // that left the refused events out is what it expects.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["verify", "--tenant", &t, "--json", "--log", "error"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "verify: {}", String::from_utf8_lossy(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["refused"], 3, "verify says what the read model left out: {report}");
}

#[tokio::test]
async fn the_write_side_refuses_a_nul_character_before_it_reaches_the_stream() {
    let app = TestApp::spawn().await;
    let t = app.tenant("nul").await;
    let body = r#"{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}"#;
    let res = app
        .http
        .post(app.fhir(&t, "Patient"))
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_outcome(res, 400).await;
    let entry = json!({"resource": serde_json::from_str::<Value>(body).unwrap(),
        "request": {"method": "POST", "url": "Patient"}});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry]});
    let res = app.http.post(app.fhir(&t, "")).json(&bundle).send().await.unwrap();
    assert!(res.status().is_client_error(), "a transaction carrying NUL: {}", res.status());
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0, "nothing reached the stream");
}

#[tokio::test]
async fn a_string_longer_than_a_btree_row_is_projected_not_refused() {
    // Index rows are limited to ~2.7 kB (SQLSTATE 54000 beyond): a long
    // but legal FHIR string must neither be refused nor stop the projector.
    let app = TestApp::spawn().await;
    let t = app.tenant("huge").await;
    // Incompressible, so PostgreSQL cannot squeeze it under the limit.
    let family: String = (0..20_000).map(|i| char::from(b'a' + ((i * 7919 + i / 3) % 26) as u8)).collect();
    let body = json!({"resourceType": "Patient", "id": "huge", "name": [{"family": family}]});
    assert_eq!(app.put(&t, "Patient/huge", &body).await.status(), 201);
    assert_eq!(app.put(&t, "Patient/after", &json!({"resourceType": "Patient", "id": "after"})).await.status(), 201);
    app.wait_caught_up(Duration::from_secs(20)).await;
    assert_eq!(app.get(&t, "Patient/after").await.status(), 200);
    assert_eq!(app.get(&t, "Patient/huge").await.status(), 200);
    assert!(refused(&app, &t).await.is_empty());
}
