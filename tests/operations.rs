//! Health, readiness and metrics.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::TestApp;

async fn ready(app: &TestApp) -> (u16, Value) {
    let res = app.http.get(app.url("/ready")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Polls `/ready` until it answers 200 (bounded): a fresh server is not
/// ready until its projector has created its consumer.
async fn until_ready(app: &TestApp) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = ready(app).await;
        if status == 200 {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never ready: {last}");
}

#[tokio::test]
async fn health_and_ready_answer_without_a_token_and_ready_follows_nats() {
    let mut app = TestApp::spawn_secure().await;
    let res = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.text().await.unwrap()), (200, "ok".to_owned()));
    let body = until_ready(&app).await;
    assert_eq!(body["checks"]["postgres"], true);
    assert_eq!(body["checks"]["migrations"], true);
    assert_eq!(body["checks"]["projector_lag_events"], 0);

    // NATS away: not ready, quickly; back: ready again without a restart.
    app.nats.stop();
    let started = std::time::Instant::now();
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["nats"], false);
    assert!(started.elapsed() < Duration::from_secs(5));
    app.nats.restart();
    until_ready(&app).await;
    let t = app.tenant("after").await;
    assert_eq!(app.post(&t, "Patient", &json!({"resourceType": "Patient"})).await.status(), 201);
}

#[tokio::test]
async fn metrics_use_route_templates_never_tenant_names() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("secretive-clinic").await;
    app.put(&t, "Patient/p1", &json!({"resourceType": "Patient", "id": "p1"})).await;
    app.get(&t, "Patient/p1").await;
    app.get(&t, "Patient/nope").await;
    app.http.get(app.fhir(&t, "Patient/p1")).send().await.unwrap(); // no token: 401
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for expected in [
        r#"fhirstream_http_requests_total{method="GET",route="/fhir/{tenant}/{rtype}/{id}",status="200"}"#,
        r#"fhirstream_http_requests_total{method="GET",route="/fhir/{tenant}/{rtype}/{id}",status="404"}"#,
        r#"fhirstream_http_requests_total{method="PUT",route="/fhir/{tenant}/{rtype}/{id}",status="201"}"#,
        "fhirstream_http_request_duration_seconds_bucket",
        "fhirstream_events_published_total",
        "fhirstream_publish_duration_seconds_bucket",
        r#"fhirstream_projector_applied_sequence{projector="main"}"#,
        r#"fhirstream_projector_lag_events{projector="main"}"#,
        "fhirstream_projector_batch_events_bucket",
        r#"fhirstream_auth_failures_total{reason="missing_token"}"#,
        r#"fhirstream_db_pool_connections{pool="reader",state="open"}"#,
        "fhirstream_auth_disabled",
    ] {
        assert!(text.contains(expected), "missing {expected}");
    }
    assert!(!text.contains("secretive-clinic"), "no tenant name in metrics");
    assert!(!text.contains("p1"), "no resource id in metrics");
}
