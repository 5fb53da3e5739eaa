//! The shared space: three clinics read one shared Organization and its
//! Practitioners beside their own resources, with colliding ids everywhere;
//! opting out hides shared resources at once; no clinic sees another
//! through a shared resource; a clinic's base never writes a shared one.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome, token};

struct Clinics {
    app: TestApp,
    a: String,
    b: String,
    c: String,
}

async fn put_as(app: &TestApp, tok: &str, tenant: &str, body: Value) -> reqwest::Response {
    let path = format!("{}/{}", body["resourceType"].as_str().unwrap(), body["id"].as_str().unwrap());
    app.http
        .put(app.fhir(tenant, &path))
        .bearer_auth(tok)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn get_as(app: &TestApp, tok: &str, tenant: &str, path: &str) -> reqwest::Response {
    app.http.get(app.fhir(tenant, path)).bearer_auth(tok).send().await.unwrap()
}

/// `shared` holds Organization/hospital and Practitioner/p1, p2; clinic a
/// has its own Practitioner/own and Encounters pointing at p1; clinic b has
/// an Encounter pointing at p2 and its own Organization/own; c has nothing.
async fn clinics() -> Clinics {
    let app = TestApp::spawn_secure().await;
    let (a, b, c) = (app.tenant("a").await, app.tenant("b").await, app.tenant("c").await);
    let writer = token(&["shared"], "system/*.*");
    for body in [
        json!({"resourceType": "Organization", "id": "hospital", "name": "General Hospital"}),
        json!({"resourceType": "Practitioner", "id": "p1", "name": [{"family": "House"}]}),
        json!({"resourceType": "Practitioner", "id": "p2", "name": [{"family": "Wilson"}]}),
    ] {
        let res = put_as(&app, &writer, "shared", body).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let ta = token(&[&a], "system/*.*");
    let tb = token(&[&b], "system/*.*");
    for (tok, t, body) in [
        (&ta, &a, json!({"resourceType": "Practitioner", "id": "own", "name": [{"family": "Cuddy"}]})),
        (&ta, &a, json!({"resourceType": "Patient", "id": "pat"})),
        (
            &ta,
            &a,
            json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                   "subject": {"reference": "Patient/pat"},
                   "participant": [{"individual": {"reference": "Practitioner/p1"}}]}),
        ),
        (&tb, &b, json!({"resourceType": "Organization", "id": "own", "name": "B's own"})),
        (
            &tb,
            &b,
            json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                   "participant": [{"individual": {"reference": "Practitioner/p2"}}]}),
        ),
    ] {
        let res = put_as(&app, tok, t, body).await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }
    Clinics { app, a, b, c }
}

fn entries(bundle: &Value) -> BTreeSet<(String, String, bool)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let r = &e["resource"];
            let shared = r["meta"]["tag"].as_array().into_iter().flatten().any(|t| t["code"] == "shared");
            (r["resourceType"].as_str().unwrap().to_string(), r["id"].as_str().unwrap().to_string(), shared)
        })
        .collect()
}

fn e(rt: &str, id: &str, shared: bool) -> (String, String, bool) {
    (rt.to_string(), id.to_string(), shared)
}

#[tokio::test]
async fn clinics_read_and_search_their_own_resources_plus_the_shared_ones_tagged() {
    let w = clinics().await;
    let (app, ta) = (&w.app, token(&[&w.a], "system/*.read"));

    let res = get_as(app, &ta, &w.a, "Practitioner/p1").await;
    assert_eq!(res.status(), 200);
    let p1: Value = res.json().await.unwrap();
    assert_eq!(p1["meta"]["tag"][0]["code"], "shared");
    assert_eq!(get_as(app, &ta, &w.a, "Practitioner/p1/_history/1").await.status(), 200);
    assert_eq!(get_as(app, &ta, &w.a, "Practitioner/p1/_history").await.status(), 200);

    // One result: own and shared, correctly counted, sorted and paged.
    let b: Value = get_as(app, &ta, &w.a, "Practitioner?_sort=family").await.json().await.unwrap();
    assert_eq!(b["total"], 3);
    let order: Vec<&str> =
        b["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["own", "p1", "p2"], "Cuddy, House, Wilson");
    assert_eq!(
        entries(&b),
        BTreeSet::from([e("Practitioner", "own", false), e("Practitioner", "p1", true), e("Practitioner", "p2", true)])
    );
    let page: Value = get_as(app, &ta, &w.a, "Practitioner?_sort=family&_count=2").await.json().await.unwrap();
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let rest: Value = app.http.get(next).bearer_auth(&ta).send().await.unwrap().json().await.unwrap();
    assert_eq!(entries(&rest), BTreeSet::from([e("Practitioner", "p2", true)]));

    // References into the shared space resolve: include and chain.
    let b: Value = get_as(app, &ta, &w.a, "Encounter?_include=Encounter:participant").await.json().await.unwrap();
    assert_eq!(entries(&b), BTreeSet::from([e("Encounter", "e1", false), e("Practitioner", "p1", true)]));
    let b: Value =
        get_as(app, &ta, &w.a, "Encounter?participant:Practitioner.family=house").await.json().await.unwrap();
    assert_eq!(b["total"], 1);
    // A's own resources that point at a shared one, by _revinclude and _has.
    let b: Value =
        get_as(app, &ta, &w.a, "Practitioner?_id=p1&_revinclude=Encounter:participant").await.json().await.unwrap();
    assert_eq!(entries(&b), BTreeSet::from([e("Practitioner", "p1", true), e("Encounter", "e1", false)]));
    let b: Value =
        get_as(app, &ta, &w.a, "Practitioner?_has:Encounter:participant:status=finished").await.json().await.unwrap();
    assert_eq!(entries(&b), BTreeSet::from([e("Practitioner", "p1", true)]));

    // b sees its own Organization and the shared one, not a's Practitioner.
    let tb = token(&[&w.b], "system/*.read");
    let b: Value = get_as(app, &tb, &w.b, "Organization").await.json().await.unwrap();
    assert_eq!(entries(&b), BTreeSet::from([e("Organization", "hospital", true), e("Organization", "own", false)]));
    assert_outcome(get_as(app, &tb, &w.b, "Practitioner/own").await, 404).await;
    let b: Value =
        get_as(app, &tb, &w.b, "Practitioner?_has:Encounter:participant:status=finished").await.json().await.unwrap();
    assert_eq!(entries(&b), BTreeSet::from([e("Practitioner", "p2", true)]), "only b's own encounter counts");
}

#[tokio::test]
async fn no_clinic_sees_another_through_a_shared_resource() {
    let w = clinics().await;
    let app = &w.app;
    // From the shared space, nobody's references are visible.
    let ts = token(&["shared"], "system/*.read");
    let b: Value =
        get_as(app, &ts, "shared", "Practitioner?_revinclude=Encounter:participant").await.json().await.unwrap();
    assert_eq!(b["total"], 2);
    assert!(entries(&b).iter().all(|(rt, _, _)| rt == "Practitioner"), "{b}");
    let b: Value = get_as(app, &ts, "shared", "Practitioner?_has:Encounter:participant:status=finished")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["total"], 0);
    // c (no encounters) learns nothing of a's or b's references to p1/p2.
    let tc = token(&[&w.c], "system/*.read");
    for q in [
        "Practitioner?_revinclude=Encounter:participant",
        "Practitioner?_has:Encounter:participant:status=finished",
        "Encounter?participant=Practitioner/p1",
    ] {
        let b: Value = get_as(app, &tc, &w.c, q).await.json().await.unwrap();
        let text = b.to_string();
        assert!(!entries(&b).iter().any(|(rt, _, _)| rt == "Encounter"), "{q}: {text}");
        assert!(!text.contains(&w.a) && !text.contains(&w.b), "{q}: {text}");
    }
}

#[tokio::test]
async fn opting_out_hides_shared_resources_at_once() {
    let w = clinics().await;
    let app = &w.app;
    let tc = token(&[&w.c], "system/*.read");
    assert_eq!(get_as(app, &tc, &w.c, "Practitioner/p1").await.status(), 200);
    let res = app
        .authed(app.http.put(app.url(&format!("/admin/tenants/{}", w.c))))
        .json(&json!({"name": "c", "config": {"shared_reads": ["Organization"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_outcome(get_as(app, &tc, &w.c, "Practitioner/p1").await, 404).await;
    let b: Value = get_as(app, &tc, &w.c, "Practitioner").await.json().await.unwrap();
    assert_eq!(b["total"], 0);
    let b: Value = get_as(app, &tc, &w.c, "Organization").await.json().await.unwrap();
    assert_eq!(b["total"], 1);
}

#[tokio::test]
async fn a_clinics_base_never_writes_a_shared_resource() {
    let w = clinics().await;
    let app = &w.app;
    let ta = token(&[&w.a], "system/*.*");
    let before = app.stream_count("fhir.>").await;
    // Update, create-with-id (a collision), patch and delete are all refused.
    let res =
        put_as(app, &ta, &w.a, json!({"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Evil"}]})).await;
    let text = assert_outcome(res, 409).await;
    assert!(text.contains("shared"), "{text}");
    let res = app.http.delete(app.fhir(&w.a, "Practitioner/p1")).bearer_auth(&ta).send().await.unwrap();
    assert_outcome(res, 409).await;
    let res = app
        .http
        .patch(app.fhir(&w.a, "Practitioner/p1"))
        .bearer_auth(&ta)
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op": "replace", "path": "/active", "value": false}]"#)
        .send()
        .await
        .unwrap();
    assert_outcome(res, 409).await;
    assert_eq!(app.stream_count("fhir.>").await, before, "nothing was written");
    // A tenant token cannot write the shared space itself; only shareable
    // types live there.
    let res = put_as(app, &ta, "shared", json!({"resourceType": "Practitioner", "id": "p9"})).await;
    assert_outcome(res, 403).await;
    let writer = token(&["shared"], "system/*.*");
    let res = put_as(app, &writer, "shared", json!({"resourceType": "Patient", "id": "x"})).await;
    assert_outcome(res, 404).await;
    // The other way round: the shared space cannot take an id a reading
    // clinic already uses.
    let res = put_as(app, &writer, "shared", json!({"resourceType": "Practitioner", "id": "own"})).await;
    let text = assert_outcome(res, 409).await;
    assert!(!text.contains(&w.a), "{text}");
    // A clinic that opted out of Practitioner may use the id for its own.
    let res = app
        .authed(app.http.put(app.url(&format!("/admin/tenants/{}", w.c))))
        .json(&json!({"name": "c", "config": {"shared_reads": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tc = token(&[&w.c], "system/*.*");
    let res =
        put_as(app, &tc, &w.c, json!({"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Mine"}]})).await;
    assert_eq!(res.status(), 201);
}

/// Ids are claimed on the stream, so the collision rule holds even when
/// a clinic and the shared space create the same id at the same moment
/// (a read-model check would let both through).
#[tokio::test]
async fn racing_creates_of_one_id_by_a_clinic_and_the_shared_space_never_both_succeed() {
    let w = clinics().await;
    let app = &w.app;
    let (ta, tb) = (token(&[&w.a], "system/*.*"), token(&[&w.b], "system/*.*"));
    let writer = token(&["shared"], "system/*.*");
    let ids: Vec<String> = (0..24).map(|i| format!("race-{i}")).collect();
    let races = ids.iter().map(|id| {
        let (ta, writer, a) = (&ta, &writer, &w.a);
        async move {
            let body = json!({"resourceType": "Practitioner", "id": id});
            let (clinic, shared) =
                tokio::join!(put_as(app, ta, a, body.clone()), put_as(app, writer, "shared", body.clone()));
            (id.clone(), clinic.status().as_u16(), shared.status().as_u16())
        }
    });
    let outcomes = futures::future::join_all(races).await;
    let mut shared_won = 0;
    for (id, clinic, shared) in &outcomes {
        let mut pair = [*clinic, *shared];
        pair.sort_unstable();
        assert_eq!(pair, [201, 409], "{id}: exactly one side creates it (clinic {clinic}, shared {shared})");
        let in_shared = get_as(app, &writer, "shared", &format!("Practitioner/{id}")).await.status();
        assert_eq!(in_shared == 200, *shared == 201, "{id}: the shared space holds it only if it won");
        // Whoever won, clinic a sees exactly one Practitioner under the id.
        let found: Value =
            get_as(app, &ta, &w.a, &format!("Practitioner?_id={id}&_total=accurate")).await.json().await.unwrap();
        assert_eq!(found["total"], 1, "{id}: {found}");
        if *shared == 201 {
            shared_won += 1;
        } else {
            // Another clinic may use an id a clinic holds; only `shared` may not.
            let res = put_as(app, &tb, &w.b, json!({"resourceType": "Practitioner", "id": id})).await;
            assert_eq!(res.status(), 201, "{id}");
        }
    }
    eprintln!("shared won {shared_won} of {} races", outcomes.len());
}

#[tokio::test]
async fn two_clinics_may_create_the_same_id_at_the_same_time() {
    let w = clinics().await;
    let app = &w.app;
    let (ta, tb) = (token(&[&w.a], "system/*.*"), token(&[&w.b], "system/*.*"));
    let races = (0..16).map(|i| {
        let (ta, tb, ta_name, tb_name) = (&ta, &tb, &w.a, &w.b);
        async move {
            let body = json!({"resourceType": "Organization", "id": format!("same-{i}")});
            let (a, b) = tokio::join!(put_as(app, ta, ta_name, body.clone()), put_as(app, tb, tb_name, body.clone()));
            (a.status().as_u16(), b.status().as_u16())
        }
    });
    for (a, b) in futures::future::join_all(races).await {
        assert_eq!((a, b), (201, 201), "ids are unique per tenant, not globally");
    }
}

#[tokio::test]
async fn transactions_obey_the_collision_rule_and_write_nothing_when_refused() {
    let w = clinics().await;
    let app = &w.app;
    let ta = token(&[&w.a], "system/*.*");
    let writer = token(&["shared"], "system/*.*");
    let bundle = |entries: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let post = |tok: &str, tenant: &str, body: Value| {
        app.http
            .post(app.fhir(tenant, ""))
            .bearer_auth(tok.to_owned())
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    let before = app.stream_count("fhir.>").await;
    // Clinic a creates a Patient and, in the same commit, a shared id.
    let tx = bundle(json!([
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Practitioner", "id": "p1"}, "request": {"method": "PUT", "url": "Practitioner/p1"}},
    ]));
    let text = assert_outcome(post(&ta, &w.a, tx).await.unwrap(), 409).await;
    assert!(text.contains("shared"), "{text}");
    // The shared space takes, in a commit, an id clinic a holds.
    let tx = bundle(json!([
        {"resource": {"resourceType": "Organization", "id": "fresh"}, "request": {"method": "PUT", "url": "Organization/fresh"}},
        {"resource": {"resourceType": "Practitioner", "id": "own"}, "request": {"method": "PUT", "url": "Practitioner/own"}},
    ]));
    let text = assert_outcome(post(&writer, "shared", tx).await.unwrap(), 409).await;
    assert!(!text.contains(&w.a), "the message names no tenant: {text}");
    assert_eq!(app.stream_count("fhir.>").await, before, "a refused commit writes nothing");
    assert_outcome(get_as(app, &writer, "shared", "Organization/fresh").await, 404).await;
    // Once the shared Practitioner is deleted, the id is free for a clinic.
    let res = app.http.delete(app.fhir("shared", "Practitioner/p2")).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let tx = bundle(json!([
        {"resource": {"resourceType": "Practitioner", "id": "p2"}, "request": {"method": "PUT", "url": "Practitioner/p2"}},
    ]));
    let res = post(&ta, &w.a, tx).await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // ...and then no longer for the shared space.
    let res = put_as(app, &writer, "shared", json!({"resourceType": "Practitioner", "id": "p2"})).await;
    assert_outcome(res, 409).await;
}

/// Every create of a shareable type is an atomic batch (resource + claim);
/// JetStream turns away more than a few dozen open batches per stream, so
/// a burst of them must queue, not fail (it was a 500 under the benchmark).
#[tokio::test]
async fn a_burst_of_concurrent_creates_of_shareable_types_all_succeed() {
    let w = clinics().await;
    let app = &w.app;
    let ta = token(&[&w.a], "system/*.*");
    let creates = (0..150).map(|i| {
        let (ta, a) = (&ta, &w.a);
        async move {
            let rt = ["Practitioner", "Organization", "Location"][i % 3];
            let res = app
                .http
                .post(app.fhir(a, rt))
                .bearer_auth(ta)
                .header("content-type", "application/fhir+json")
                .body(json!({"resourceType": rt}).to_string())
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
}

/// A `POST` claims its server-assigned id without an atomic batch (claim
/// first, then the resource), and the claim still binds both ways.
#[tokio::test]
async fn a_server_assigned_id_is_claimed_so_the_other_side_cannot_take_it() {
    let w = clinics().await;
    let app = &w.app;
    let (ta, writer) = (token(&[&w.a], "system/*.*"), token(&["shared"], "system/*.*"));
    let post = |tok: String, tenant: String| async move {
        let res = app
            .http
            .post(app.fhir(&tenant, "Practitioner"))
            .bearer_auth(tok)
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Practitioner"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    };
    let claims = app.stream_count("fhir._ids.>").await;
    let clinic_id = post(ta.clone(), w.a.clone()).await;
    let shared_id = post(writer.clone(), "shared".into()).await;
    assert_eq!(app.stream_count("fhir._ids.>").await, claims + 2, "each create appended its claim");
    let res = put_as(app, &writer, "shared", json!({"resourceType": "Practitioner", "id": clinic_id})).await;
    assert_outcome(res, 409).await;
    let res = put_as(app, &ta, &w.a, json!({"resourceType": "Practitioner", "id": shared_id})).await;
    let text = assert_outcome(res, 409).await;
    assert!(text.contains("shared"), "{text}");
    // A clinic that does not read Practitioner claims nothing.
    let tc = token(&[&w.c], "system/*.*");
    app.authed(app.http.put(app.url(&format!("/admin/tenants/{}", w.c))))
        .json(&json!({"name": "c", "config": {"shared_reads": []}}))
        .send()
        .await
        .unwrap();
    post(tc, w.c.clone()).await;
    assert_eq!(app.stream_count("fhir._ids.>").await, claims + 2);
}

fn synthea(n: usize) -> Vec<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea-r4");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.retain(|f| !f.to_string_lossy().contains("practitionerInformation"));
    files.truncate(n);
    files
}

/// Distinct (system, value) of the first identifier of `rt` in the files.
fn distinct_identifiers(files: &[std::path::PathBuf], rt: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for f in files {
        let b: Value = serde_json::from_reader(flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())).unwrap();
        for e in b["entry"].as_array().unwrap() {
            let r = &e["resource"];
            if r["resourceType"] == rt {
                let i = &r["identifier"][0];
                out.insert((i["system"].as_str().unwrap_or("").into(), i["value"].as_str().unwrap().into()));
            }
        }
    }
    out
}

#[tokio::test]
async fn importing_for_several_tenants_stores_each_hospital_and_doctor_once_in_the_shared_space() {
    let app = TestApp::spawn_secure().await;
    let (x, y) = (app.tenant("x").await, app.tenant("y").await);
    let files = synthea(4);
    for (t, part) in [(&x, &files[..3]), (&y, &files[1..])] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
            .args(["import", "--tenant", t, "--quiet", "--log", "error", "--nats-url", &app.nats.url])
            .args(["--share", "Organization,Practitioner,Location"])
            .args(part)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    app.wait_caught_up(std::time::Duration::from_secs(60)).await;
    let ts = token(&["shared"], "system/*.read");
    let orgs: Value = get_as(&app, &ts, "shared", "Organization?_summary=count").await.json().await.unwrap();
    assert_eq!(orgs["total"].as_u64().unwrap() as usize, distinct_identifiers(&files, "Organization").len());
    let docs: Value = get_as(&app, &ts, "shared", "Practitioner?_summary=count").await.json().await.unwrap();
    assert_eq!(docs["total"].as_u64().unwrap() as usize, distinct_identifiers(&files, "Practitioner").len());
    for t in [&x, &y] {
        let tok = token(&[t], "system/*.read");
        // The tenant holds none of its own, sees the shared ones, and its
        // encounters' providers resolve there.
        let own: Value = get_as(&app, &tok, t, "Organization?_tag:not=x").await.json().await.unwrap();
        assert!(!own["entry"].as_array().unwrap().is_empty());
        assert!(
            own["entry"].as_array().unwrap().iter().all(|e| e["resource"]["meta"]["tag"]
                .as_array()
                .unwrap()
                .iter()
                .any(|tag| tag["code"] == "shared"))
        );
        let b: Value =
            get_as(&app, &tok, t, "Encounter?_include=Encounter:service-provider&_count=5").await.json().await.unwrap();
        let included: Vec<&Value> =
            b["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "include").collect();
        assert!(!included.is_empty(), "{b}");
        assert!(included.iter().all(|e| e["resource"]["resourceType"] == "Organization"));
    }
}
