//! `/openapi.json` and a schema-driven fuzzer (schemathesis, from PyPI)
//! against the running server: whatever it sends, no answer is a 5xx.
//! `make test` provides the fuzzer (`FHIRSTREAM_TEST_SCHEMATHESIS`,
//! installed by scripts/schemathesis-bin.sh into .local/).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestApp;

fn schemathesis_bin() -> String {
    std::env::var("FHIRSTREAM_TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!("FHIRSTREAM_TEST_SCHEMATHESIS is not set: run the tests with `make test` (scripts/schemathesis-bin.sh)")
    })
}

#[tokio::test]
async fn the_openapi_document_describes_every_fhir_interaction_and_the_admin_api() {
    let app = TestApp::spawn_secure().await;
    // Public, like /metadata: no token.
    let res = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let ops: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str()))
        .map(str::to_owned)
        .collect();
    for interaction in [
        "read",
        "vread",
        "create",
        "update",
        "patch",
        "delete",
        "search-type",
        "search-system",
        "instance-history",
        "type-history",
        "system-history",
        "transaction",
        "capabilities",
        "create-tenant",
        "list-tenants",
        "get-tenant",
        "configure-tenant",
        "delete-tenant",
    ] {
        assert!(ops.iter().any(|o| o == interaction), "{interaction} missing from {ops:?}");
    }
    let read = &doc["paths"]["/fhir/{tenant}/{rtype}/{id}"]["get"];
    let params: Vec<&str> =
        read["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["tenant", "rtype", "id"]);
    let not_found = &read["responses"]["404"]["content"]["application/fhir+json"]["schema"]["$ref"];
    assert_eq!(not_found, "#/components/schemas/OperationOutcome", "{read}");
    let search = &doc["paths"]["/fhir/{tenant}/{rtype}"]["get"]["parameters"];
    assert!(search.as_array().unwrap().iter().any(|p| p["name"] == "_lastUpdated"), "{search}");
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_driven_fuzzer_gets_no_server_error_from_any_endpoint() {
    let app = TestApp::spawn_secure().await;
    // The tenant the document's examples name, with a resource at its
    // example id, so generated requests reach past the tenant check.
    let res = app.authed(app.http.post(app.url("/admin/tenants"))).json(&json!({"id": "acme"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(app.put("acme", "Patient/p1", &json!({"resourceType": "Patient", "id": "p1"})).await.status(), 201);

    let token = app.admin_token.clone().unwrap();
    // Wide: every parameter generated (most land on an unknown tenant or
    // type). Deep: tenant and type pinned, so bodies, ids and search
    // parameters reach the command and query sides.
    let dir = tempfile::tempdir().unwrap();
    let pinned = dir.path().join("schemathesis.toml");
    std::fs::write(&pinned, "[parameters]\n\"path.tenant\" = \"acme\"\n\"path.rtype\" = \"Patient\"\n").unwrap();
    // Deep first: the wide run's examples delete the tenant `acme`.
    for config in [Some(&pinned), None] {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(schemathesis_bin());
        if let Some(config) = config {
            cmd.arg("--config-file").arg(config);
        }
        let run = cmd
            .args(["run", &app.url("/openapi.json"), "--url", &app.base])
            .args([
                "--checks",
                "not_a_server_error",
                "--max-examples",
                if config.is_some() { "25" } else { "50" },
                "--workers",
                "2",
                "--seed",
                "1",
            ])
            .args(["--generation-database", "none", "--no-color", "--request-timeout", "20"])
            .args(["--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(if config.is_some() { &["--exclude-operation-id", "delete-tenant"][..] } else { &[] })
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(180), run)
            .await
            .expect("schemathesis ran over 3 minutes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}\n{}\nin {:?}", String::from_utf8_lossy(&out.stderr), started.elapsed());
        assert!(out.status.success(), "schemathesis found failures (exit {:?}, config {config:?})", out.status);
        // Not vacuous: it found and exercised every operation.
        let expected = if config.is_some() { "Tested: 25" } else { "Tested: 26" };
        assert!(stdout.contains(expected), "fewer operations tested than described");
    }
}
