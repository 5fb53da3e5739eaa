//! Per-tenant validation over HTTP: profiles a tenant enforces (its own or
//! the shared space's), profiles a resource claims, strictness, and what a
//! neighbour, a replay and a missing profile make of them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::Read as _;

use serde_json::{Value, json};
use support::TestApp;

const URL: &str = "http://example.org/fhir/StructureDefinition/patient-with-birthdate";

/// A real constraint profile: R4's own Patient snapshot with
/// `Patient.birthDate` made mandatory.
fn birthdate_profile(id: &str) -> Value {
    let mut text = String::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir-r4/profiles-resources.json.gz");
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let base =
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).find(|r| r["id"] == "Patient").unwrap();
    let mut snapshot = base["snapshot"].clone();
    for e in snapshot["element"].as_array_mut().unwrap() {
        if e["id"] == "Patient.birthDate" {
            e["min"] = json!(1);
        }
    }
    json!({
        "resourceType": "StructureDefinition", "id": id, "url": URL, "name": "PatientWithBirthDate",
        "status": "active", "kind": "resource", "abstract": false, "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient", "derivation": "constraint",
        "snapshot": snapshot,
    })
}

async fn configure(app: &TestApp, tenant: &str, config: Value) {
    let res = app
        .authed(app.http.put(app.url(&format!("/admin/tenants/{tenant}"))))
        .json(&json!({ "name": tenant, "config": config }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

async fn status_of(app: &TestApp, tenant: &str, body: &Value) -> (u16, Value) {
    let res = app.post(tenant, "Patient", body).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn no_birthdate() -> Value {
    json!({"resourceType": "Patient", "name": [{"family": "Doe"}]})
}

fn with_birthdate() -> Value {
    json!({"resourceType": "Patient", "name": [{"family": "Doe"}], "birthDate": "1990-02-03"})
}

#[tokio::test]
async fn a_tenant_profile_requiring_birth_date_refuses_a_patient_without_one_while_the_neighbour_accepts_it() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("prof").await, app.tenant("neighbour").await);
    configure(&app, &a, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;

    // Enforced but not stored yet: refused, never written unchecked.
    let (status, o) = status_of(&app, &a, &with_birthdate()).await;
    assert_eq!(status, 422, "{o}");
    assert!(o.to_string().contains("no such StructureDefinition"), "{o}");

    let res = app.put(&a, "StructureDefinition/pbd", &birthdate_profile("pbd")).await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let (status, o) = status_of(&app, &a, &no_birthdate()).await;
    assert_eq!(status, 422, "{o}");
    let issue = o["issue"].as_array().unwrap().iter().find(|i| i["expression"][0] == "Patient.birthDate");
    assert!(issue.is_some_and(|i| i["code"] == "required"), "{o}");
    assert_eq!(status_of(&app, &a, &with_birthdate()).await.0, 201);

    // The neighbour has no such rule, and cannot borrow A's profile.
    assert_eq!(status_of(&app, &b, &no_birthdate()).await.0, 201);
    configure(&app, &b, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;
    let (status, o) = status_of(&app, &b, &with_birthdate()).await;
    assert_eq!(status, 422, "B cannot see A's profile: {o}");
    assert!(o.to_string().contains("no such StructureDefinition"), "{o}");
}

#[tokio::test]
async fn a_shared_space_profile_binds_the_tenants_that_enforce_it_and_no_other() {
    let app = TestApp::spawn_with(|cfg| cfg.shareable_types.push("StructureDefinition".into())).await;
    let res = app.put("shared", "StructureDefinition/shared-pbd", &birthdate_profile("shared-pbd")).await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let (c, d) = (app.tenant("enforcer").await, app.tenant("free").await);
    configure(&app, &c, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;
    assert_eq!(status_of(&app, &c, &no_birthdate()).await.0, 422);
    assert_eq!(status_of(&app, &c, &with_birthdate()).await.0, 201);
    assert_eq!(status_of(&app, &d, &no_birthdate()).await.0, 201);
    // A tenant that does not read StructureDefinitions from the shared
    // space does not see it.
    configure(&app, &d, json!({"shared_reads": [], "validation": {"profiles": {"Patient": [URL]}}})).await;
    assert_eq!(status_of(&app, &d, &with_birthdate()).await.0, 422);
}

#[tokio::test]
async fn a_claimed_profile_is_enforced_when_the_tenant_has_it_and_only_warned_about_when_not() {
    let app = TestApp::spawn().await;
    let t = app.tenant("claims").await;
    let mut claimed = no_birthdate();
    claimed["meta"] = json!({"profile": [URL]});
    // Unknown profile: accepted, with a warning for who asks.
    let res = app
        .authed(app.http.post(app.fhir(&t, "Patient")))
        .header("prefer", "return=OperationOutcome")
        .json(&claimed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(res.headers()["preference-applied"], "return=OperationOutcome");
    let o: Value = res.json().await.unwrap();
    assert_eq!(
        (o["issue"][0]["severity"].as_str(), o["issue"][0]["code"].as_str()),
        (Some("warning"), Some("not-supported"))
    );
    assert_eq!(app.put(&t, "StructureDefinition/pbd", &birthdate_profile("pbd")).await.status().as_u16(), 201);
    assert_eq!(status_of(&app, &t, &claimed).await.0, 422, "now the claim is checked");
    let mut ok = with_birthdate();
    ok["meta"] = json!({"profile": [URL]});
    assert_eq!(status_of(&app, &t, &ok).await.0, 201);
}

#[tokio::test]
async fn profiles_hold_for_transactions_and_patches_too() {
    let app = TestApp::spawn().await;
    let t = app.tenant("txprof").await;
    assert_eq!(app.put(&t, "StructureDefinition/pbd", &birthdate_profile("pbd")).await.status().as_u16(), 201);
    configure(&app, &t, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource": with_birthdate(), "request": {"method":"POST","url":"Patient"}},
        {"resource": no_birthdate(), "request": {"method":"POST","url":"Patient"}}
    ]});
    let res = app.authed(app.http.post(app.fhir(&t, ""))).json(&bundle).send().await.unwrap();
    let o: Value = res.json().await.unwrap();
    assert!(o.to_string().contains("Bundle.entry[1].resource.birthDate"), "{o}");
    let res = app.put(&t, "Patient/p1", &json!({"resourceType":"Patient","id":"p1","birthDate":"2000-01-01"})).await;
    assert_eq!(res.status().as_u16(), 201);
    let patch = json!([{"op":"remove","path":"/birthDate"}]);
    let res = app
        .authed(app.http.patch(app.fhir(&t, "Patient/p1")))
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422, "{}", res.text().await.unwrap());
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.*")).await, 1, "only p1's first version");
}

#[tokio::test]
async fn a_tenant_that_warns_on_unknown_elements_stores_them_and_says_so_but_still_refuses_bad_codes() {
    let app = TestApp::spawn().await;
    let (t, strict) = (app.tenant("lenient").await, app.tenant("strict").await);
    configure(&app, &t, json!({"validation": {"unknown_elements": "warn"}})).await;
    let body = json!({"resourceType":"Patient","foo":1});
    let res = app
        .authed(app.http.post(app.fhir(&t, "Patient")))
        .header("prefer", "return=OperationOutcome")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let o: Value = res.json().await.unwrap();
    assert_eq!(
        (o["issue"][0]["severity"].as_str(), o["issue"][0]["expression"][0].as_str()),
        (Some("warning"), Some("Patient.foo"))
    );
    assert_eq!(status_of(&app, &t, &json!({"resourceType":"Patient","gender":"robot"})).await.0, 422);
    assert_eq!(status_of(&app, &strict, &body).await.0, 422, "the neighbour stays strict");
}

#[tokio::test]
async fn a_bad_validation_policy_is_refused_by_the_admin_api() {
    let app = TestApp::spawn().await;
    let t = app.tenant("badpolicy").await;
    for config in [
        json!({"validation": {"profiles": {"Nope": [URL]}}}),
        json!({"validation": {"unknown_elements": "maybe"}}),
        json!({"validation": {"profiles": {"Patient": [""]}}}),
    ] {
        let res = app
            .authed(app.http.put(app.url(&format!("/admin/tenants/{t}"))))
            .json(&json!({ "name": t, "config": config }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "{config}");
    }
}

#[tokio::test]
async fn a_replayed_tenant_decides_its_writes_as_before() {
    let app = TestApp::spawn().await;
    let t = app.tenant("replayed").await;
    assert_eq!(app.put(&t, "StructureDefinition/pbd", &birthdate_profile("pbd")).await.status().as_u16(), 201);
    configure(&app, &t, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;
    assert_eq!(status_of(&app, &t, &with_birthdate()).await.0, 201);
    // The profile is a resource like any other: a read model rebuilt from
    // the stream holds it again, so the same writes get the same answers.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["replay", "--tenant", &t, "--quiet"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "error"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status_of(&app, &t, &no_birthdate()).await.0, 422);
    assert_eq!(status_of(&app, &t, &with_birthdate()).await.0, 201);
}

fn r4_bundle(file: &str) -> Vec<Value> {
    let mut text = String::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir-r4").join(file);
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"].clone()).collect()
}

#[tokio::test]
async fn a_tenant_enforcing_r4_vitalsigns_accepts_a_synthea_vital_sign_and_refuses_one_that_breaks_it() {
    let app = TestApp::spawn().await;
    let t = app.tenant("vitals").await;
    let profile = r4_bundle("profiles-others.json.gz").into_iter().find(|r| r["id"] == "vitalsigns").unwrap();
    // The value sets the profile binds with strength required.
    let terminology = r4_bundle("valuesets.json.gz");
    for url in ["http://hl7.org/fhir/ValueSet/ucum-vitals-common", "http://hl7.org/fhir/ValueSet/observation-status"] {
        let vs = terminology.iter().find(|r| r["url"] == url).unwrap();
        let res = app.put(&t, &format!("ValueSet/{}", vs["id"].as_str().unwrap()), vs).await;
        assert!(res.status().is_success(), "{url}: {}", res.text().await.unwrap());
    }
    let res = app.put(&t, "StructureDefinition/vitalsigns", &profile).await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    configure(&app, &t, json!({"validation": {"profiles": {"Observation": [profile["url"]]}}})).await;

    let mut text = String::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/synthea-r4/Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json.gz");
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let find = |code: &str| {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .find(|r| r["resourceType"] == "Observation" && r["code"]["coding"][0]["code"] == code)
            .unwrap()
    };
    let (weight, pressure) = (find("29463-7"), find("55284-4"));
    for o in [&weight, &pressure] {
        let res = app.post(&t, "Observation", o).await;
        assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    }
    // vitalsigns binds the units of components (ucum-vitals-common).
    let mut broken = pressure;
    broken["component"][0]["valueQuantity"]["code"] = json!("furlong");
    let res = app.post(&t, "Observation", &broken).await;
    assert_eq!(res.status().as_u16(), 422, "an off-list unit");
    let mut broken = weight;
    broken["category"] = json!([{"text": "not vital"}]);
    let res = app.post(&t, "Observation", &broken).await;
    let o: Value = res.json().await.unwrap();
    assert!(o.to_string().contains("VSCat"), "the missing slice is named: {o}");
}

#[tokio::test]
async fn validate_checks_a_visible_profile_on_request_and_the_tenants_own_rules_always() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("valprof").await, app.tenant("valother").await);
    assert_eq!(app.put(&t, "StructureDefinition/pbd", &birthdate_profile("pbd")).await.status().as_u16(), 201);
    let validate = |tenant: &str, query: &str| {
        app.authed(app.http.post(app.fhir(tenant, &format!("Patient/$validate{query}")))).json(&no_birthdate()).send()
    };
    let o: Value = validate(&t, "").await.unwrap().json().await.unwrap();
    assert_eq!(o["issue"][0]["severity"], "information", "no profile asked, none enforced: {o}");
    let res = validate(&t, &format!("?profile={URL}")).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let o: Value = res.json().await.unwrap();
    assert_eq!(
        (o["issue"][0]["severity"].as_str(), o["issue"][0]["expression"][0].as_str()),
        (Some("error"), Some("Patient.birthDate"))
    );
    // The neighbour cannot validate against a profile it cannot see.
    assert_eq!(validate(&other, &format!("?profile={URL}")).await.unwrap().status().as_u16(), 400);
    // Once enforced, the tenant's own $validate reports it unasked.
    configure(&app, &t, json!({"validation": {"profiles": {"Patient": [URL]}}})).await;
    let o: Value = validate(&t, "").await.unwrap().json().await.unwrap();
    assert_eq!(o["issue"][0]["expression"][0], "Patient.birthDate", "{o}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.*")).await, 0, "$validate writes nothing");
}

#[tokio::test]
async fn a_patch_that_adds_a_profile_claim_is_checked_against_that_profile() {
    let app = TestApp::spawn().await;
    let t = app.tenant("patchclaim").await;
    assert_eq!(app.put(&t, "StructureDefinition/pbd", &birthdate_profile("pbd")).await.status().as_u16(), 201);
    let res = app.put(&t, "Patient/p1", &json!({"resourceType":"Patient","id":"p1"})).await;
    assert_eq!(res.status().as_u16(), 201);
    let patch = json!([{"op":"add","path":"/meta/profile","value":[URL]}]);
    let res = app
        .authed(app.http.patch(app.fhir(&t, "Patient/p1")))
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422, "the claimed profile requires a birthDate");
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.*")).await, 1);
}
