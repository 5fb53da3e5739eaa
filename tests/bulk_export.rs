//! FHIR Bulk Data `$export`: the kick-off, poll and download round trip,
//! `_type` and `_since`, refusals of bad parameters, tenant isolation of
//! status URLs, files and contents, a Synthea-loaded tenant exported
//! exactly (counted from the bundles here), and `fhirstream export`
//! writing the same files.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use support::{TestApp, assert_outcome, token};

async fn app(dir: &Path) -> TestApp {
    let dir = dir.to_path_buf();
    TestApp::spawn_secure_with(move |cfg| cfg.export.export_dir = Some(dir)).await
}

/// Kicks off an export and returns its status URL.
async fn kick_off(app: &TestApp, bearer: &str, url: &str) -> String {
    let res = app.http.get(url).bearer_auth(bearer).header("prefer", "respond-async").send().await.unwrap();
    assert_eq!(res.status(), 202, "{url}: {}", res.text().await.unwrap());
    res.headers()["content-location"].to_str().unwrap().to_string()
}

/// Polls a status URL until the manifest is ready.
async fn manifest(app: &TestApp, bearer: &str, status: &str) -> Value {
    for _ in 0..600 {
        let res = app.http.get(status).bearer_auth(bearer).send().await.unwrap();
        match res.status().as_u16() {
            202 => {
                assert!(res.headers().contains_key("x-progress"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            200 => return res.json().await.unwrap(),
            s => panic!("poll {status}: {s} {}", res.text().await.unwrap()),
        }
    }
    panic!("export {status} did not finish in 60 s");
}

/// Every file of a manifest, parsed, by type; each count checked.
async fn download(app: &TestApp, bearer: &str, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut files = BTreeMap::new();
    for out in manifest["output"].as_array().unwrap() {
        let res = app.http.get(out["url"].as_str().unwrap()).bearer_auth(bearer).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/fhir+ndjson");
        let text = res.text().await.unwrap();
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let rt = out["type"].as_str().unwrap().to_string();
        assert!(rows.iter().all(|r| r["resourceType"] == rt.as_str()), "{rt} file holds other types");
        assert_eq!(out["count"], rows.len(), "{rt} count");
        assert!(files.insert(rt, rows).is_none(), "one file per type");
    }
    files
}

async fn export(app: &TestApp, bearer: &str, url: &str) -> BTreeMap<String, Vec<Value>> {
    let status = kick_off(app, bearer, url).await;
    let m = manifest(app, bearer, &status).await;
    download(app, bearer, &m).await
}

fn ids(files: &BTreeMap<String, Vec<Value>>) -> BTreeSet<(String, String)> {
    files
        .iter()
        .flat_map(|(t, rows)| rows.iter().map(move |r| (t.clone(), r["id"].as_str().unwrap().to_string())))
        .collect()
}

async fn create(app: &TestApp, tenant: &str, body: Value) -> String {
    let rt = body["resourceType"].as_str().unwrap().to_string();
    let res = app.post(tenant, &rt, &body).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn observation(patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
           "subject": {"reference": format!("Patient/{patient}")}})
}

#[tokio::test]
async fn an_export_kicks_off_polls_and_downloads_exactly_the_tenants_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let t = app.tenant("exp").await;
    let bearer = token(&[&t], "system/*.read");
    let p1 = create(&app, &t, json!({"resourceType": "Patient", "gender": "female"})).await;
    let p2 = create(&app, &t, json!({"resourceType": "Patient", "gender": "male"})).await;
    let o1 = create(&app, &t, observation(&p1)).await;
    let org = create(&app, &t, json!({"resourceType": "Organization", "name": "Clinic"})).await;
    let deleted = create(&app, &t, json!({"resourceType": "Patient"})).await;
    let res = app.authed(app.http.delete(app.fhir(&t, &format!("Patient/{deleted}")))).send().await.unwrap();
    assert!(res.status().is_success());
    // A shared Practitioner the tenant reads comes tagged as shared.
    let writer = token(&["shared"], "system/*.*");
    let doc = json!({"resourceType": "Practitioner", "id": format!("doc-{}", &t[4..]), "name": [{"family": "Who"}]});
    let res = app
        .http
        .put(app.fhir("shared", &format!("Practitioner/{}", doc["id"].as_str().unwrap())))
        .bearer_auth(&writer)
        .header("content-type", "application/fhir+json")
        .body(doc.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let status = kick_off(&app, &bearer, &app.fhir(&t, "$export")).await;
    assert!(status.starts_with(&app.fhir(&t, "$export-status/")), "{status}");
    let m = manifest(&app, &bearer, &status).await;
    assert_eq!(m["request"], app.fhir(&t, "$export"));
    assert_eq!(m["requiresAccessToken"], true);
    assert!(chrono::DateTime::parse_from_rfc3339(m["transactionTime"].as_str().unwrap()).is_ok());
    assert_eq!(m["error"], json!([]));
    let files = download(&app, &bearer, &m).await;
    let expected: BTreeSet<(String, String)> = [
        ("Patient", p1.as_str()),
        ("Patient", p2.as_str()),
        ("Observation", o1.as_str()),
        ("Organization", org.as_str()),
        ("Practitioner", doc["id"].as_str().unwrap()),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(ids(&files), expected);
    let tags = &files["Practitioner"][0]["meta"]["tag"];
    assert!(tags.as_array().unwrap().iter().any(|t| t["code"] == "shared"), "{tags}");
    assert_eq!(files["Observation"][0]["subject"]["reference"], format!("Patient/{p1}"));

    // DELETE cancels and removes: the status and files are gone.
    let file_url = m["output"][0]["url"].as_str().unwrap().to_string();
    let res = app.http.delete(&status).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_outcome(app.http.get(&status).bearer_auth(&bearer).send().await.unwrap(), 404).await;
    assert_outcome(app.http.get(&file_url).bearer_auth(&bearer).send().await.unwrap(), 404).await;

    // The CapabilityStatement says so.
    let cs: Value = app.get(&t, "metadata").await.json().await.unwrap();
    assert_eq!(
        cs["rest"][0]["operation"][0]["definition"],
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    );
    let patient = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap();
    let ops = patient["operation"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["name"] == "export"), "{ops:?}");

    // Patient level: Patients and their compartment, not the Organization
    // or the shared Practitioner.
    let files = export(&app, &bearer, &app.fhir(&t, "Patient/$export")).await;
    let got: BTreeSet<String> = ids(&files).into_iter().map(|(t, i)| format!("{t}/{i}")).collect();
    let want: BTreeSet<String> = [format!("Patient/{p1}"), format!("Patient/{p2}"), format!("Observation/{o1}")].into();
    assert_eq!(got, want);
}

#[tokio::test]
async fn type_and_since_narrow_an_export_and_bad_parameters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let t = app.tenant("exp").await;
    let bearer = token(&[&t], "system/*.read");
    let p1 = create(&app, &t, json!({"resourceType": "Patient"})).await;
    let o1 = create(&app, &t, observation(&p1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p2 = create(&app, &t, json!({"resourceType": "Patient"})).await;
    let o2 = create(&app, &t, observation(&p2)).await;
    let res =
        app.put(&t, &format!("Patient/{p1}"), &json!({"resourceType": "Patient", "id": p1, "gender": "other"})).await;
    assert_eq!(res.status(), 200);

    let only = |files: BTreeMap<String, Vec<Value>>| {
        ids(&files).into_iter().map(|(t, i)| format!("{t}/{i}")).collect::<BTreeSet<_>>()
    };
    let files = export(&app, &bearer, &app.fhir(&t, "$export?_type=Observation")).await;
    assert_eq!(only(files), [format!("Observation/{o1}"), format!("Observation/{o2}")].into());

    let since = urlencode(&cut.to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
    let files = export(&app, &bearer, &app.fhir(&t, &format!("$export?_since={since}"))).await;
    // p1 changed after the cut (its update), o1 did not.
    assert_eq!(only(files), [format!("Patient/{p1}"), format!("Patient/{p2}"), format!("Observation/{o2}")].into());

    let files = export(
        &app,
        &bearer,
        &app.fhir(
            &t,
            &format!("$export?_type=Patient,Observation&_since={since}&_outputFormat=application%2Ffhir%2Bndjson"),
        ),
    )
    .await;
    assert_eq!(files.len(), 2);

    let kick = |url: String, prefer: bool| {
        let req = app.http.get(url).bearer_auth(&bearer);
        let req = if prefer { req.header("prefer", "respond-async") } else { req };
        req.send()
    };
    for bad in [
        "$export?_type=Nope",
        "$export?_type=Patient,",
        "$export?_since=yesterday",
        "$export?_since=2024-01-01",
        "$export?_outputFormat=text%2Fcsv",
        "$export?_typeFilter=Patient%3Fgender%3Dmale",
        "$export?_since=2024-01-01T00:00:00Z&_since=2024-01-02T00:00:00Z",
        "Patient/$export?_type=Organization",
        "Observation/$export",
    ] {
        let res = kick(app.fhir(&t, bad), true).await.unwrap();
        if bad == "$export?_type=Patient," {
            // An empty item in a list is tolerated, like in search.
            assert_eq!(res.status(), 202, "{bad}");
            continue;
        }
        assert_outcome(res, 400).await;
    }
    assert_outcome(kick(app.fhir(&t, "$export"), false).await.unwrap(), 400).await;
    // A token that may read only Patients cannot export Observations.
    let narrow = token(&[&t], "system/Patient.read");
    let res = app
        .http
        .get(app.fhir(&t, "$export?_type=Observation"))
        .bearer_auth(&narrow)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_outcome(res, 403).await;
    let files = export(&app, &narrow, &app.fhir(&t, "$export")).await;
    assert_eq!(files.keys().collect::<Vec<_>>(), ["Patient"]);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_neighbours_token_gets_404_for_status_and_files_and_its_export_holds_nothing_of_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let a = app.tenant("expa").await;
    let b = app.tenant("expb").await;
    let token_a = token(&[&a], "system/*.read");
    let token_b = token(&[&b], "system/*.*");
    let pa = create(&app, &a, json!({"resourceType": "Patient", "gender": "female"})).await;
    let oa = create(&app, &a, observation(&pa)).await;
    let pb = create(&app, &b, json!({"resourceType": "Patient"})).await;

    let status = kick_off(&app, &token_a, &app.fhir(&a, "$export")).await;
    let m = manifest(&app, &token_a, &status).await;
    let job = status.rsplit('/').next().unwrap().to_string();
    let file = m["output"][0]["url"].as_str().unwrap().to_string();
    assert!(file.starts_with(&app.fhir(&a, "")), "{file}");

    // B's token: A's status and files are 404 (as an unknown job), not 403.
    for url in [status.clone(), file.clone(), app.fhir(&a, &format!("$export-status/{}", uuid::Uuid::new_v4()))] {
        let d = assert_outcome(app.http.get(&url).bearer_auth(&token_b).send().await.unwrap(), 404).await;
        assert_eq!(d, "no such export", "{url}");
    }
    assert_outcome(app.http.delete(&status).bearer_auth(&token_b).send().await.unwrap(), 404).await;
    // A's job id under B's base is not B's job.
    for url in
        [app.fhir(&b, &format!("$export-status/{job}")), app.fhir(&b, &format!("$export-file/{job}/Patient.ndjson"))]
    {
        assert_outcome(app.http.get(&url).bearer_auth(&token_b).send().await.unwrap(), 404).await;
    }
    assert_outcome(
        app.http.delete(app.fhir(&b, &format!("$export-status/{job}"))).bearer_auth(&token_b).send().await.unwrap(),
        404,
    )
    .await;
    // Paths that try to climb out of a tenant's directory find nothing.
    for url in [
        app.fhir(&b, &format!("$export-file/{job}/..%2F..%2F{a}%2F{job}%2FPatient.ndjson")),
        app.fhir(&b, "$export-status/..%2F..%2Fetc"),
    ] {
        assert_outcome(app.http.get(&url).bearer_auth(&token_b).send().await.unwrap(), 404).await;
    }
    // A's own token still reads it: the refusals did not disturb the job.
    let res = app.http.get(&file).bearer_auth(&token_a).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // B's export holds B's Patient and nothing of A's.
    let files = export(&app, &token_b, &app.fhir(&b, "$export")).await;
    let got = ids(&files);
    assert_eq!(got, [("Patient".to_string(), pb.clone())].into());
    assert!(!got.contains(&("Patient".into(), pa)) && !got.contains(&("Observation".into(), oa)));
}

fn shared(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(path)
}

const BUNDLES: &[&str] = &[
    "Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json.gz",
    "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json.gz",
    "Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json.gz",
];

/// Distinct resources per type in the bundles, counted from the files; and
/// per type those in a Patient's compartment: the Patients and every
/// resource whose JSON references one of them.
fn expected_counts(files: &[PathBuf]) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut seen = HashSet::new();
    let (mut all, mut compartment) = (BTreeMap::new(), BTreeMap::new());
    for f in files {
        let b: Value = serde_json::from_reader(flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())).unwrap();
        let entries = b["entry"].as_array().unwrap();
        let patients: Vec<String> = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Patient")
            .map(|e| e["fullUrl"].as_str().unwrap().to_string())
            .collect();
        for e in entries {
            if !seen.insert(e["fullUrl"].as_str().unwrap().to_owned()) {
                continue;
            }
            let rt = e["resource"]["resourceType"].as_str().unwrap().to_owned();
            *all.entry(rt.clone()).or_insert(0) += 1;
            let text = e["resource"].to_string();
            if rt == "Patient" || patients.iter().any(|p| text.contains(&format!("\"reference\":\"{p}\""))) {
                *compartment.entry(rt).or_insert(0) += 1;
            }
        }
    }
    (all, compartment)
}

fn counts(files: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, usize> {
    files.iter().map(|(t, rows)| (t.clone(), rows.len())).collect()
}

/// The files `fhirstream export` wrote, by type, as lines.
fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let rt = name.strip_suffix(".ndjson").unwrap_or_else(|| panic!("unexpected file {name}")).to_string();
        out.insert(rt, std::fs::read_to_string(&p).unwrap().lines().map(String::from).collect());
    }
    out
}

#[tokio::test]
async fn a_synthea_tenant_exports_exactly_its_bundles_and_the_cli_writes_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let t = app.tenant("synth").await;
    let other = app.tenant("synthb").await;
    let files: Vec<PathBuf> = BUNDLES.iter().map(|b| shared(&format!("data/synthea-r4/{b}"))).collect();
    for (tenant, bundles) in [(&t, &files[..]), (&other, &files[..1])] {
        let out = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
            .args(["import", "--tenant", tenant, "--quiet", "--log", "error", "--nats-url", &app.nats.url])
            .args(bundles)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    app.wait_caught_up(Duration::from_secs(60)).await;
    let (all, compartment) = expected_counts(&files);
    assert!(all["Observation"] > 100 && all["Patient"] == 3, "{all:?}");
    assert!(!compartment.contains_key("Organization") && !compartment.contains_key("Practitioner"));

    let bearer = token(&[&t], "system/*.read");
    let exported = export(&app, &bearer, &app.fhir(&t, "$export")).await;
    assert_eq!(counts(&exported), all);
    // The neighbour holds one of the same bundles under the same ids, so
    // ids cannot tell the tenants apart: the neighbour's export must be
    // exactly its one bundle's worth.
    let (one, _) = expected_counts(&files[..1]);
    let theirs = export(&app, &token(&[&other], "system/*.read"), &app.fhir(&other, "$export")).await;
    assert_eq!(counts(&theirs), one);

    let patient_level = export(&app, &bearer, &app.fhir(&t, "Patient/$export")).await;
    assert_eq!(counts(&patient_level), compartment);

    // The CLI writes the same files, line for line.
    let cli_dir = tmp.path().join("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["export", "--tenant", &t, "--quiet", "--log", "error", "--nats-url", &app.nats.url])
        .args(["--database-url", &app.db.url])
        .arg(&cli_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("Observation\t{}", all["Observation"])), "{stdout}");
    let written = read_dir_files(&cli_dir);
    let parsed: BTreeMap<String, Vec<Value>> = written
        .iter()
        .map(|(t, lines)| (t.clone(), lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()))
        .collect();
    assert_eq!(parsed, exported);

    // With --type and --patient, as _type at Patient level.
    let cli_dir = tmp.path().join("cli-patient");
    let out = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["export", "--tenant", &t, "--patient", "--type", "Patient,Encounter"])
        .args(["--log", "error", "--nats-url", &app.nats.url, "--database-url", &app.db.url])
        .arg(&cli_dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = read_dir_files(&cli_dir);
    assert_eq!(written.keys().collect::<Vec<_>>(), ["Encounter", "Patient"]);
    assert_eq!(written["Encounter"].len(), compartment["Encounter"]);
}

#[tokio::test]
async fn a_tenant_recreated_under_a_deleted_ones_name_finds_none_of_its_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let t = app.tenant("gone").await;
    let bearer = token(&[&t], "system/*.read");
    create(&app, &t, json!({"resourceType": "Patient"})).await;
    let status = kick_off(&app, &bearer, &app.fhir(&t, "$export")).await;
    let m = manifest(&app, &bearer, &status).await;
    let file = m["output"][0]["url"].as_str().unwrap().to_string();
    assert!(tmp.path().join(&t).exists());

    let res = app.authed(app.http.delete(app.url(&format!("/admin/tenants/{t}")))).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert!(!tmp.path().join(&t).exists(), "the deleted tenant's exports are removed");
    let res = app
        .authed(app.http.post(app.url("/admin/tenants")))
        .json(&json!({"id": t, "name": "the new one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for url in [&status, &file] {
        assert_outcome(app.http.get(url).bearer_auth(&bearer).send().await.unwrap(), 404).await;
    }
}

#[tokio::test]
async fn an_export_whose_node_died_is_reported_failed_instead_of_running_for_ever() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let t = app.tenant("dead").await;
    let bearer = token(&[&t], "system/*.read");
    // A job left in progress by a node that stopped a minute ago.
    let job = uuid::Uuid::new_v4();
    let dir = tmp.path().join(&t).join(job.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let then = chrono::Utc::now() - chrono::TimeDelta::seconds(60);
    let record = fhirstream::export::jobs::JobRecord {
        tenant: schemas::TenantId::parse(&t).unwrap(),
        owner: Some("tester".into()),
        status: fhirstream::export::jobs::JobStatus::InProgress,
        request: app.fhir(&t, "$export"),
        transaction_time: then,
        output: Vec::new(),
        error: None,
        progress: "10 resources written; now Patient".into(),
        heartbeat: then,
    };
    std::fs::write(dir.join("job.json"), serde_json::to_vec(&record).unwrap()).unwrap();
    let status = app.fhir(&t, &format!("$export-status/{job}"));
    assert_outcome(app.http.get(&status).bearer_auth(&bearer).send().await.unwrap(), 500).await;
    // With a fresh heartbeat the same job is still running.
    let fresh = fhirstream::export::jobs::JobRecord { heartbeat: chrono::Utc::now(), ..record };
    std::fs::write(dir.join("job.json"), serde_json::to_vec(&fresh).unwrap()).unwrap();
    let res = app.http.get(&status).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["x-progress"], "10 resources written; now Patient");
    // DELETE removes it either way.
    assert_eq!(app.http.delete(&status).bearer_auth(&bearer).send().await.unwrap().status(), 202);
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_group_export_holds_its_member_patients_and_their_compartments_only() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path()).await;
    let (t, other) = (app.tenant("grp").await, app.tenant("grpother").await);
    let bearer = token(&[&t], "system/*.read");
    let (p1, p2) = (
        create(&app, &t, json!({"resourceType": "Patient", "gender": "female"})).await,
        create(&app, &t, json!({"resourceType": "Patient", "gender": "male"})).await,
    );
    let (o1, _o2) = (create(&app, &t, observation(&p1)).await, create(&app, &t, observation(&p2)).await);
    let group = json!({"resourceType": "Group", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{p1}")}}]});
    let g = create(&app, &t, group.clone()).await;
    let files = export(&app, &bearer, &app.fhir(&t, &format!("Group/{g}/$export"))).await;
    // The Group itself is in p1's compartment (through `member`).
    let expected: BTreeSet<(String, String)> =
        [("Patient".to_string(), p1.clone()), ("Observation".to_string(), o1), ("Group".to_string(), g.clone())]
            .into_iter()
            .collect();
    assert_eq!(ids(&files), expected, "p2 and its Observation stay out");
    // The neighbour's token, or the neighbour's base, finds no such Group.
    let nb = token(&[&other], "system/*.read");
    let res = app
        .http
        .get(app.fhir(&other, &format!("Group/{g}/$export")))
        .bearer_auth(&nb)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let cs: Value = app.get(&t, "metadata").await.json().await.unwrap();
    let grp = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Group").unwrap();
    assert!(grp["operation"].as_array().unwrap().iter().any(|o| o["name"] == "export"), "{grp}");
}
