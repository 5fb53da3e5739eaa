//! `fhirstream import`: Synthea end to end, NDJSON, and resuming.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;

use std::time::Duration;
use tokio::process::Command;

use serde_json::Value;
use support::TestApp;

fn shared(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(path)
}

/// The CLI as a child process. Async, because the server under test runs
/// on the test's own runtime and must keep projecting while the CLI waits.
fn import(app: &TestApp, tenant: &str, paths: &[PathBuf]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirstream"));
    cmd.args(["import", "--tenant", tenant, "--quiet", "--log", "error"])
        .args(["--nats-url", &app.nats.url])
        .args(paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Distinct resources per type in the Synthea bundles, counted from the
/// files: the same Organization or Practitioner (same `urn:uuid:`) recurs
/// across patients and is one resource, not one per bundle.
fn synthea_expected(files: &[PathBuf]) -> HashMap<String, usize> {
    let mut seen = HashSet::new();
    let mut by_type = HashMap::new();
    for f in files {
        let b: Value = serde_json::from_reader(flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())).unwrap();
        for e in b["entry"].as_array().unwrap() {
            if seen.insert(e["fullUrl"].as_str().unwrap().to_owned()) {
                *by_type.entry(e["resource"]["resourceType"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
    }
    by_type
}

fn synthea_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(shared("data/synthea-r4")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

async fn counts_by_type(app: &TestApp, tenant: &str) -> HashMap<String, usize> {
    let pool = app.db.pool().await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select resource_type, count(*) from resources where tenant_id = $1 and not deleted group by 1")
            .bind(tenant)
            .fetch_all(&pool)
            .await
            .unwrap();
    rows.into_iter().map(|(t, n)| (t, n as usize)).collect()
}

#[tokio::test]
async fn all_synthea_bundles_import_end_to_end_with_every_reference_resolved() {
    let app = TestApp::spawn().await;
    let t = app.tenant("synthea").await;
    let files = synthea_files();
    assert_eq!(files.len(), 119);
    let out = import(&app, &t, &[shared("data/synthea-r4")]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    app.wait_caught_up(Duration::from_secs(120)).await;

    let expected = synthea_expected(&files);
    // 35,814 entries; Organizations and Practitioners repeat across bundles.
    assert_eq!(expected.values().sum::<usize>(), 35_515);
    assert!(stdout.contains("imported 35515 resources"), "{stdout}");
    assert_eq!(counts_by_type(&app, &t).await, expected);

    // No reference is left pointing at a urn, and every Patient-compartment
    // reference points at a stored resource.
    let pool = app.db.pool().await;
    let dangling: i64 = sqlx::query_scalar(
        "select count(*) from resource_versions where tenant_id = $1 and resource::text like '%\"reference\": \"urn:%'",
    )
    .bind(&t)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(dangling, 0);
    let subjects: Vec<String> = sqlx::query_scalar(
        "select distinct resource->'subject'->>'reference' from resource_versions
         where tenant_id = $1 and resource ? 'subject'",
    )
    .bind(&t)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(subjects.len() >= 100);
    let patients: HashSet<String> = sqlx::query_scalar::<_, String>(
        "select 'Patient/' || id from resources where tenant_id = $1 and resource_type = 'Patient'",
    )
    .bind(&t)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for s in &subjects {
        assert!(patients.contains(s), "subject {s} is not a stored Patient");
    }
}

#[tokio::test]
async fn an_interrupted_import_resumes_without_duplicating_anything() {
    let app = TestApp::spawn().await;
    let t = app.tenant("resume").await;
    let files: Vec<PathBuf> = synthea_files().into_iter().take(24).collect();
    let expected = synthea_expected(&files);
    let total: usize = expected.values().sum();

    let mut child = import(&app, &t, &files).arg("--in-flight").arg("2").spawn().unwrap();
    // Kill it once part of the data is on the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = app.stream_count(&format!("fhir.{t}.*.*")).await as usize;
        if n > total / 4 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let partial = app.stream_count(&format!("fhir.{t}.*.*")).await as usize;
    assert!(partial > 0 && partial < total, "the kill landed mid-import ({partial} of {total})");

    let out = import(&app, &t, &files).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already present"), "{stdout}");
    app.wait_caught_up(Duration::from_secs(60)).await;

    // Every resource exactly once, each at version 1.
    assert_eq!(app.stream_count(&format!("fhir.{t}.*.*")).await as usize, total);
    assert_eq!(counts_by_type(&app, &t).await, expected);
    let fold = app.fold_read_model(&t).await;
    assert_eq!(fold.versions.len(), total);
    assert!(fold.current.values().all(|(v, deleted)| *v == 1 && !deleted));
}

#[tokio::test]
async fn ndjson_imports_plain_and_gzipped_and_reports_what_it_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant("ndjson").await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("patients.ndjson");
    std::fs::write(
        &plain,
        "{\"resourceType\":\"Patient\",\"id\":\"n1\"}\n\n{\"resourceType\":\"Patient\",\"id\":\"n2\",\"gender\":\"male\"}\n",
    )
    .unwrap();
    let out = import(&app, &t, &[plain.clone(), shared("fhir-r4/examples-r4.ndjson.gz")]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    app.wait_caught_up(Duration::from_secs(60)).await;
    let read: Value = app.get(&t, "Patient/n2").await.json().await.unwrap();
    assert_eq!(read["gender"], "male");
    let stored: usize = counts_by_type(&app, &t).await.values().sum();
    // The official examples are real-world FHIR; whatever is refused is
    // counted in the summary, and the rest is stored with its own id.
    let refused: usize = stdout
        .split(" refused")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(stored + refused, 712, "{stdout}");
    assert!(stored > 600, "{stdout}");

    // Importing the same files again adds nothing.
    let again = import(&app, &t, &[plain]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("imported 0 resources"));
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.n1")).await, 1);
}
