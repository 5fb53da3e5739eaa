//! Every bad request gets a 4xx OperationOutcome and writes nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use reqwest::Method;
use support::{TestApp, assert_outcome};

/// What is wrong, method, path under /fhir, content type, body, expected status.
type Case<'a> = (&'a str, Method, String, Option<&'a str>, String, u16);

#[tokio::test]
async fn each_bad_request_is_a_4xx_operation_outcome_and_leaves_no_event() {
    let app = TestApp::spawn_with(|cfg| cfg.max_body_bytes = 2048).await;
    let t = app.tenant("bad").await;
    let fhir = "application/fhir+json";
    let huge = format!(r#"{{"resourceType":"Patient","text":{{"div":"{}"}}}}"#, "x".repeat(4096));
    let cases: Vec<Case> = vec![
        (
            "unsupported media type",
            Method::POST,
            format!("{t}/Patient"),
            Some("application/xml"),
            "<Patient/>".into(),
            415,
        ),
        ("no content type", Method::POST, format!("{t}/Patient"), None, r#"{"resourceType":"Patient"}"#.into(), 415),
        ("malformed JSON", Method::POST, format!("{t}/Patient"), Some(fhir), r#"{"resourceType":"#.into(), 400),
        ("not an object", Method::POST, format!("{t}/Patient"), Some(fhir), "[1,2]".into(), 400),
        ("no resourceType", Method::POST, format!("{t}/Patient"), Some(fhir), r#"{"id":"x"}"#.into(), 400),
        (
            "type mismatch",
            Method::POST,
            format!("{t}/Patient"),
            Some(fhir),
            r#"{"resourceType":"Observation"}"#.into(),
            400,
        ),
        (
            "unknown type",
            Method::POST,
            format!("{t}/Patients"),
            Some(fhir),
            r#"{"resourceType":"Patients"}"#.into(),
            404,
        ),
        (
            "id mismatch",
            Method::PUT,
            format!("{t}/Patient/a"),
            Some(fhir),
            r#"{"resourceType":"Patient","id":"b"}"#.into(),
            400,
        ),
        (
            "missing id on update",
            Method::PUT,
            format!("{t}/Patient/a"),
            Some(fhir),
            r#"{"resourceType":"Patient"}"#.into(),
            400,
        ),
        (
            "invalid id in URL",
            Method::PUT,
            format!("{t}/Patient/a_b"),
            Some(fhir),
            r#"{"resourceType":"Patient","id":"a_b"}"#.into(),
            400,
        ),
        ("id too long", Method::PUT, format!("{t}/Patient/{}", "a".repeat(65)), Some(fhir), "{}".into(), 400),
        (
            "empty array",
            Method::POST,
            format!("{t}/Patient"),
            Some(fhir),
            r#"{"resourceType":"Patient","name":[]}"#.into(),
            400,
        ),
        (
            "meta not an object",
            Method::POST,
            format!("{t}/Patient"),
            Some(fhir),
            r#"{"resourceType":"Patient","meta":1}"#.into(),
            400,
        ),
        ("oversized body", Method::POST, format!("{t}/Patient"), Some(fhir), huge, 413),
        (
            "unknown tenant",
            Method::POST,
            "no-such-tenant/Patient".into(),
            Some(fhir),
            r#"{"resourceType":"Patient"}"#.into(),
            404,
        ),
        (
            "malformed tenant",
            Method::POST,
            "Bad.Tenant/Patient".into(),
            Some(fhir),
            r#"{"resourceType":"Patient"}"#.into(),
            404,
        ),
        ("wrong method", Method::POST, format!("{t}/Patient/a"), Some(fhir), "{}".into(), 405),
        ("PATCH that is not JSON Patch", Method::PATCH, format!("{t}/Patient/a"), Some(fhir), "[]".into(), 415),
        (
            "conditional update without criteria",
            Method::PUT,
            format!("{t}/Patient"),
            Some(fhir),
            r#"{"resourceType":"Patient"}"#.into(),
            405,
        ),
        (
            "conditional delete on an unknown parameter",
            Method::DELETE,
            format!("{t}/Patient?nonsense=x"),
            None,
            String::new(),
            400,
        ),
        (
            "Bundle that is not a Bundle",
            Method::POST,
            t.clone(),
            Some(fhir),
            r#"{"resourceType":"Patient"}"#.into(),
            400,
        ),
        (
            "Bundle of the wrong type",
            Method::POST,
            t.clone(),
            Some(fhir),
            r#"{"resourceType":"Bundle","type":"collection"}"#.into(),
            400,
        ),
        ("wrong method on type", Method::PATCH, format!("{t}/Patient"), None, String::new(), 405),
        (
            "bad If-Match",
            Method::PUT,
            format!("{t}/Patient/a"),
            Some(fhir),
            r#"{"resourceType":"Patient","id":"a"}"#.into(),
            400,
        ),
        (
            "deeply nested JSON",
            Method::POST,
            format!("{t}/Patient"),
            Some(fhir),
            format!("{}{}", "[".repeat(500), "]".repeat(500)),
            400,
        ),
    ];
    for (what, method, path, content_type, body, status) in cases {
        let mut req =
            app.http.request(method, app.fhir("", "").trim_end_matches('/').to_owned() + "/" + &path).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if what == "bad If-Match" {
            req = req.header("if-match", "W/\"not-a-number\"");
        }
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        assert_eq!(got, status, "{what}");
        let diagnostics = assert_outcome(res, status).await;
        assert!(!diagnostics.is_empty(), "{what}: the outcome says why");
    }
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0, "no bad input produced an event");
    assert_eq!(app.stream_count("fhir.>").await, 0);
}

#[tokio::test]
async fn a_body_too_large_for_one_event_is_refused_at_the_edge() {
    // Bodies of 24 MiB are allowed here; the test NATS carries 20 MB.
    let app = TestApp::spawn_with(|cfg| cfg.max_body_bytes = 24 * 1024 * 1024).await;
    let t = app.tenant("big").await;
    let body =
        format!(r#"{{"resourceType":"Patient","text":{{"status":"generated","div":"{}"}}}}"#, "x".repeat(21_500_000));
    let res = app
        .http
        .post(app.fhir(&t, "Patient"))
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap();
    let diagnostics = assert_outcome(res, 413).await;
    assert!(diagnostics.contains("single resource"), "{diagnostics}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
}

#[tokio::test]
async fn bad_reads_are_4xx_operation_outcomes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("badread").await;
    assert_outcome(app.get(&t, "Patient/nope").await, 404).await;
    assert_outcome(app.get(&t, "Patient/nope/_history").await, 404).await;
    assert_outcome(app.get(&t, "Patient/x/_history/0").await, 400).await;
    assert_outcome(app.get(&t, "Patient/x/_history/abc").await, 400).await;
    assert_outcome(app.get(&t, "Patient/x/_history?_count=-1").await, 400).await;
    assert_outcome(app.get(&t, "Nope/x").await, 404).await;
    assert_outcome(app.http.get(app.url("/no/such/endpoint")).send().await.unwrap(), 404).await;
}

#[tokio::test]
async fn admin_rejects_bad_tenant_documents() {
    let app = TestApp::spawn().await;
    for (body, status) in [
        (r#"{"id":"Bad_Name"}"#, 400),
        (r#"{"id":"shared"}"#, 400),
        (r#"{"id":"admin"}"#, 400),
        (r#"{"id":"ok-name","config":{"allowed_types":["NotAType"]}}"#, 400),
        (r#"{"id":"ok-name","unknown":1}"#, 400),
        (r#"not json"#, 400),
    ] {
        let res = app
            .http
            .post(app.url("/admin/tenants"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_outcome(res, status).await;
    }
    let id = app.tenant("dup").await;
    let res = app
        .http
        .post(app.url("/admin/tenants"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"id":"{id}"}}"#))
        .send()
        .await
        .unwrap();
    assert_outcome(res, 409).await;
}
