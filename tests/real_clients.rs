//! Real FHIR clients, as new users run them: fhirpy, fhirclient and
//! fhir-kindling (pinned, in the venv `scripts/fhir-clients-bin.sh` makes)
//! drive a secured server through their documented CRUD, search,
//! conditional and transaction calls (`tests/clients/clients.py`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use support::{TestApp, token};

fn python() -> String {
    std::env::var("FHIRSTREAM_TEST_FHIR_CLIENTS").unwrap_or_else(|_| {
        panic!("FHIRSTREAM_TEST_FHIR_CLIENTS is not set: run the tests with `make test` (scripts/fhir-clients-bin.sh)")
    })
}

#[tokio::test]
async fn fhirpy_fhirclient_and_fhir_kindling_work_through_their_documented_calls() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("clients").await;
    let bearer = token(&[&t], "system/*.*");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/clients.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .arg(app.fhir(&t, "").trim_end_matches('/'))
        .arg(bearer)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the clients ran over 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a client failed");
    assert!(stdout.contains("all clients passed"));
    // Not vacuous: the clients wrote what they said they did.
    assert!(app.stream_count(&format!("fhir.{t}.Patient.*")).await >= 4);
}
