//! Validation of every write over HTTP: what is not valid R4 never becomes
//! an event, on any write path, and the answer says what is wrong and where.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::TestApp;

async fn outcome(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    body
}

fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_non_conformant_create_is_a_422_naming_the_element_and_writes_no_event() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let cases = [
        (json!({"resourceType":"Patient","name":"Smith"}), "Patient.name", "structure"),
        (json!({"resourceType":"Patient","active":"yes"}), "Patient.active", "structure"),
        (json!({"resourceType":"Patient","gender":"robot"}), "Patient.gender", "code-invalid"),
        (json!({"resourceType":"Patient","birthDate":"not-a-date"}), "Patient.birthDate", "value"),
        (json!({"resourceType":"Patient","foo":1}), "Patient.foo", "structure"),
        (json!({"resourceType":"Observation","code":{"text":"x"}}), "Observation.status", "required"),
        (json!({"resourceType":"Observation","status":"final","code":5}), "Observation.code", "structure"),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"12"}}),
            "Observation.value.ofType(Quantity).value",
            "structure",
        ),
    ];
    for (body, expression, code) in cases {
        let rt = body["resourceType"].as_str().unwrap();
        let o = outcome(app.post(&t, rt, &body).await, 422).await;
        let issue = o["issue"].as_array().unwrap().iter().find(|i| i["expression"][0] == expression);
        let issue = issue.unwrap_or_else(|| panic!("{body}: no issue at {expression}: {o}"));
        assert_eq!(issue["code"], code, "{o}");
        assert_eq!(issue["severity"], "error");
        assert!(!issue["diagnostics"].as_str().unwrap().is_empty());
    }
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0, "nothing invalid reached the stream");
}

#[tokio::test]
async fn a_resource_with_several_problems_gets_one_issue_per_problem() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let body = json!({"resourceType":"Patient","gender":"robot","birthDate":"x","foo":1});
    let o = outcome(app.post(&t, "Patient", &body).await, 422).await;
    let mut found = expressions(&o);
    found.sort();
    assert_eq!(found, ["Patient.birthDate", "Patient.foo", "Patient.gender"]);
}

#[tokio::test]
async fn an_invalid_update_and_an_invalid_patch_result_are_refused_and_the_stored_version_stays() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let res = app.put(&t, "Patient/p1", &json!({"resourceType":"Patient","id":"p1","gender":"male"})).await;
    assert_eq!(res.status().as_u16(), 201);
    let bad = json!({"resourceType":"Patient","id":"p1","gender":"robot"});
    let o = outcome(app.put(&t, "Patient/p1", &bad).await, 422).await;
    assert_eq!(expressions(&o), ["Patient.gender"]);
    let patch = json!([{"op":"replace","path":"/gender","value":"robot"}]);
    let res = app
        .authed(reqwest::Client::new().patch(app.fhir(&t, "Patient/p1")))
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    let o = outcome(res, 422).await;
    assert_eq!(expressions(&o), ["Patient.gender"]);
    let stored: Value = app.get(&t, "Patient/p1").await.json().await.unwrap();
    assert_eq!((stored["gender"].as_str(), stored["meta"]["versionId"].as_str()), (Some("male"), Some("1")));
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 1);
}

#[tokio::test]
async fn a_transaction_with_one_invalid_entry_writes_nothing_and_points_into_the_bundle() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Patient","name":[{"family":"Ok"}]},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"Observation","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}
    ]});
    let res = app.authed(reqwest::Client::new().post(app.fhir(&t, ""))).json(&bundle).send().await.unwrap();
    let o = outcome(res, 422).await;
    assert_eq!(expressions(&o), ["Bundle.entry[1].resource.status"]);
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
}

#[tokio::test]
async fn a_batch_answers_the_invalid_entry_with_its_outcome_and_writes_the_others() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let bundle = json!({"resourceType":"Bundle","type":"batch","entry":[
        {"resource":{"resourceType":"Patient","name":[{"family":"Ok"}]},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"Patient","gender":"robot"},"request":{"method":"POST","url":"Patient"}}
    ]});
    let res = app.authed(reqwest::Client::new().post(app.fhir(&t, ""))).json(&bundle).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["entry"][0]["response"]["status"].as_str().unwrap().starts_with("201"), "{body}");
    let second = &body["entry"][1]["response"];
    assert!(second["status"].as_str().unwrap().starts_with("422"), "{body}");
    assert_eq!(second["outcome"]["issue"][0]["expression"][0], "Patient.gender", "{body}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 1);
}

#[tokio::test]
async fn validate_answers_200_with_the_issues_or_information_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("val").await;
    let (app, t) = (&app, t.as_str());
    let post = |path: String, body: Value| async move {
        app.authed(reqwest::Client::new().post(app.fhir(t, &path))).json(&body).send().await.unwrap()
    };
    let valid = json!({"resourceType":"Patient","gender":"female"});
    let o = outcome(post("Patient/$validate".into(), valid.clone()).await, 200).await;
    assert_eq!(o["issue"][0]["severity"], "information", "{o}");
    let o =
        outcome(post("Patient/$validate".into(), json!({"resourceType":"Patient","gender":"robot"})).await, 200).await;
    assert_eq!(
        (o["issue"][0]["severity"].as_str(), o["issue"][0]["code"].as_str()),
        (Some("error"), Some("code-invalid"))
    );
    // A Parameters body with mode update at instance level: the id must match.
    let params = json!({"resourceType":"Parameters","parameter":[
        {"name":"resource","resource":{"resourceType":"Patient","id":"other"}},
        {"name":"mode","valueCode":"update"}
    ]});
    let o = outcome(post("Patient/p9/$validate".into(), params).await, 200).await;
    assert_eq!(o["issue"][0]["severity"], "error", "{o}");
    assert_eq!(o["issue"][0]["expression"][0], "id", "{o}");
    // An unknown profile cannot be validated against: 400.
    let res = post("Patient/$validate?profile=http://example.org/nope".into(), valid).await;
    outcome(res, 400).await;
    outcome(post("Patient/$validate".into(), json!([1])).await, 200).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0, "$validate writes nothing");
    let cs: Value = app.get(t, "metadata").await.json().await.unwrap();
    let ops = &cs["rest"][0]["resource"][0]["operation"];
    assert!(ops.as_array().unwrap().iter().any(|o| o["name"] == "validate"), "{ops}");
}

#[tokio::test]
async fn validate_needs_a_token_with_some_access_to_the_type() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("val").await;
    let url = app.fhir(&t, "Patient/$validate");
    let body = json!({"resourceType":"Patient"});
    let token = support::token(&[&t], "system/Observation.read");
    let res = reqwest::Client::new().post(&url).bearer_auth(token).json(&body).send().await.unwrap();
    outcome(res, 403).await;
    let token = support::token(&[&t], "system/Patient.c");
    let res = reqwest::Client::new().post(&url).bearer_auth(token).json(&body).send().await.unwrap();
    outcome(res, 200).await;
    let other = app.tenant("other").await;
    let token = support::token(&[&other], "system/*.*");
    let res = reqwest::Client::new().post(&url).bearer_auth(token).json(&body).send().await.unwrap();
    outcome(res, 403).await;
}

/// `fhirstream verify --validate --json` for a tenant: exit code and report.
async fn revalidate(app: &TestApp, tenant: &str) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["verify", "--validate", "--json", "--tenant", tenant])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "error"])
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("a JSON report: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

#[tokio::test]
async fn verify_validate_lists_stored_resources_that_fail_todays_rules_and_only_the_tenants_own() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("val").await, app.tenant("other").await);
    assert_eq!(app.post(&t, "Patient", &json!({"resourceType":"Patient","gender":"female"})).await.status(), 201);
    // Written as a writer from before validation would have: the stream
    // holds it, and it stays there.
    app.publish_raw(&other, "old1", r#"{"resourceType":"Patient","id":"old1","gender":"robot"}"#).await;
    app.wait_caught_up(std::time::Duration::from_secs(10)).await;
    let (code, report) = revalidate(&app, &t).await;
    assert_eq!((code, report["checked"].as_u64(), report["failed"].as_u64()), (0, Some(1), Some(0)), "{report}");
    app.publish_raw(&t, "old2", r#"{"resourceType":"Patient","id":"old2","gender":"robot","foo":1}"#).await;
    app.wait_caught_up(std::time::Duration::from_secs(10)).await;
    let (code, report) = revalidate(&app, &t).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!((report["checked"].as_u64(), report["failed"].as_u64()), (Some(2), Some(1)), "{report}");
    assert_eq!(report["failing"][0]["reference"], "Patient/old2");
    let errors = report["failing"][0]["errors"].to_string();
    assert!(errors.contains("Patient.gender") && errors.contains("Patient.foo"), "{errors}");
    let (code, report) = revalidate(&app, &other).await;
    assert_eq!((code, report["failing"][0]["reference"].as_str()), (1, Some("Patient/old1")), "{report}");
}

#[tokio::test]
async fn the_benchmark_switch_skips_conformance_but_not_the_structure_checks() {
    let app = TestApp::spawn_with(|cfg| cfg.unsafe_skip_conformance = true).await;
    let t = app.tenant("val").await;
    let res = app.post(&t, "Patient", &json!({"resourceType":"Patient","gender":"robot"})).await;
    assert_eq!(res.status().as_u16(), 201, "conformance is off");
    let res = app.post(&t, "Patient", &json!({"resourceType":"Observation"})).await;
    outcome(res, 400).await;
}

#[tokio::test]
async fn validating_against_a_named_profile_needs_the_scope_to_read_structure_definitions() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("val").await;
    let url = app.fhir(&t, "Patient/$validate?profile=http://example.org/sd/p");
    let body = json!({"resourceType":"Patient"});
    let send = |scope: &str| {
        let token = support::token(&[&t], scope);
        reqwest::Client::new().post(&url).bearer_auth(token).json(&body).send()
    };
    outcome(send("system/Patient.*").await.unwrap(), 403).await;
    // With the scope, an unknown profile is a plain 400.
    outcome(send("system/Patient.* system/StructureDefinition.read").await.unwrap(), 400).await;
}
