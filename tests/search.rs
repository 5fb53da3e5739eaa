//! Search semantics on small hand-made data: each parameter type with its
//! prefixes and modifiers, common parameters, paging links, shaping, and
//! the refusals (malformed values, strict handling, foreign cursors).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

/// Ids of the matches of a search (ignoring included resources).
async fn ids(app: &TestApp, tenant: &str, query: &str) -> BTreeSet<String> {
    let b = bundle(app, tenant, query).await;
    b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn bundle(app: &TestApp, tenant: &str, query: &str) -> Value {
    let res = app.get(tenant, query).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    assert_eq!(body["type"], "searchset", "{query}");
    body
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn put(app: &TestApp, t: &str, body: Value) {
    let path = format!("{}/{}", body["resourceType"].as_str().unwrap(), body["id"].as_str().unwrap());
    let res = app.put(t, &path, &body).await;
    assert!(res.status().is_success(), "{path}: {}", res.text().await.unwrap());
}

async fn people(app: &TestApp, t: &str) {
    let patients = [
        json!({"resourceType": "Patient", "id": "zoe", "gender": "female", "birthDate": "1980-05-17",
               "name": [{"family": "Ångström", "given": ["Zoë"]}],
               "identifier": [{"system": "urn:mrn", "value": "111"}],
               "telecom": [{"system": "email", "value": "zoe@example.org"}],
               "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/fhir/StructureDefinition/p"]},
               "generalPractitioner": [{"reference": "Practitioner/doc"}]}),
        json!({"resourceType": "Patient", "id": "adam", "gender": "male", "birthDate": "1975",
               "name": [{"family": "Angstrom", "given": ["Adam", "Bede"]}],
               "identifier": [{"system": "urn:mrn", "value": "222"}, {"system": "urn:other", "value": "111"}]}),
        json!({"resourceType": "Patient", "id": "carl", "gender": "male", "birthDate": "1990-01-01",
               "name": [{"family": "Smith", "given": ["Carl"]}], "active": true}),
        json!({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Who"}]}),
    ];
    for p in patients {
        put(app, t, p).await;
    }
    for (id, subject, value, when) in [
        ("o1", "Patient/zoe", 72.5, "2020-03-01T10:00:00Z"),
        ("o2", "Patient/zoe", 80.0, "2021-03-01T10:00:00Z"),
        ("o3", "Patient/adam", 100.0, "2020-07-15"),
    ] {
        put(
            app,
            t,
            json!({"resourceType": "Observation", "id": id, "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}]},
                   "subject": {"reference": subject}, "effectiveDateTime": when,
                   "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}),
        )
        .await;
    }
    put(
        app,
        t,
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/adam"},
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}], "text": "Diabetes"}}),
    )
    .await;
}

#[tokio::test]
async fn string_token_and_date_parameters_follow_the_fhir_rules() {
    let app = TestApp::spawn().await;
    let t = app.tenant("search").await;
    people(&app, &t).await;

    // string: case- and accent-insensitive starts-with; :exact; :contains
    assert_eq!(ids(&app, &t, "Patient?family=angstr").await, set(&["zoe", "adam"]));
    assert_eq!(ids(&app, &t, "Patient?family:exact=Ångström").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?family:exact=angström").await, set(&[]));
    assert_eq!(ids(&app, &t, "Patient?name:contains=TRO").await, set(&["zoe", "adam"]));
    assert_eq!(ids(&app, &t, "Patient?given=bede").await, set(&["adam"]));
    // token: code, system|code, |code, system|, :not, :text
    assert_eq!(ids(&app, &t, "Patient?gender=male").await, set(&["adam", "carl"]));
    assert_eq!(ids(&app, &t, "Patient?identifier=111").await, set(&["zoe", "adam"]));
    assert_eq!(ids(&app, &t, "Patient?identifier=urn:mrn|111").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?identifier=urn:other|").await, set(&["adam"]));
    assert_eq!(ids(&app, &t, "Patient?gender:not=male").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Condition?code:text=diab").await, set(&["c1"]));
    assert_eq!(ids(&app, &t, "Patient?email=zoe@example.org").await, set(&["zoe"]));
    // comma is OR, repetition is AND
    assert_eq!(ids(&app, &t, "Patient?given=zoe,carl").await, set(&["zoe", "carl"]));
    assert_eq!(ids(&app, &t, "Patient?family=angstrom&gender=male").await, set(&["adam"]));
    // dates at their precision, with prefixes
    assert_eq!(ids(&app, &t, "Patient?birthdate=1980").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?birthdate=1980-05-17").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?birthdate=ge1980-01-01").await, set(&["zoe", "carl"]));
    assert_eq!(ids(&app, &t, "Patient?birthdate=lt1980").await, set(&["adam"]));
    assert_eq!(ids(&app, &t, "Patient?birthdate=sa1979&birthdate=eb1990-01-01").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?birthdate=ne1990-01-01").await, set(&["zoe", "adam"]));
    assert_eq!(ids(&app, &t, "Observation?date=2020").await, set(&["o1", "o3"]));
    assert_eq!(ids(&app, &t, "Observation?date=gt2020-12-31").await, set(&["o2"]));
    // :missing everywhere
    assert_eq!(ids(&app, &t, "Patient?active:missing=false").await, set(&["carl"]));
    assert_eq!(ids(&app, &t, "Patient?email:missing=true").await, set(&["adam", "carl"]));
}

#[tokio::test]
async fn reference_number_quantity_uri_and_common_parameters_match() {
    let app = TestApp::spawn().await;
    let t = app.tenant("search").await;
    people(&app, &t).await;

    assert_eq!(ids(&app, &t, "Observation?subject=Patient/zoe").await, set(&["o1", "o2"]));
    assert_eq!(ids(&app, &t, "Observation?subject=zoe").await, set(&["o1", "o2"]));
    assert_eq!(ids(&app, &t, "Observation?subject:Patient=adam").await, set(&["o3"]));
    assert_eq!(ids(&app, &t, "Observation?patient=Patient/adam").await, set(&["o3"]));
    let absolute = app.fhir(&t, "Patient/zoe");
    assert_eq!(ids(&app, &t, &format!("Observation?subject={absolute}")).await, set(&["o1", "o2"]));
    // quantity with prefixes, system and code; implicit precision of eq
    assert_eq!(ids(&app, &t, "Observation?value-quantity=72.5").await, set(&["o1"]));
    assert_eq!(ids(&app, &t, "Observation?value-quantity=gt75").await, set(&["o2", "o3"]));
    assert_eq!(ids(&app, &t, "Observation?value-quantity=le80|http://unitsofmeasure.org|kg").await, set(&["o1", "o2"]));
    // Precision is significant figures: 1.00e2 is [99.5, 100.5), 1e2 is [50, 150).
    assert_eq!(ids(&app, &t, "Observation?value-quantity=1.00e2").await, set(&["o3"]));
    assert_eq!(ids(&app, &t, "Observation?value-quantity=1e2").await, set(&["o1", "o2", "o3"]));
    assert_eq!(ids(&app, &t, "Observation?value-quantity=100|http://unitsofmeasure.org|g").await, set(&[]));
    assert_eq!(ids(&app, &t, "Observation?value-quantity=ap79").await, set(&["o1", "o2"]));
    // uri and the common parameters
    assert_eq!(ids(&app, &t, "Patient?_profile=http://example.org/fhir/StructureDefinition/p").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?_tag=urn:tags|vip").await, set(&["zoe"]));
    assert_eq!(ids(&app, &t, "Patient?_id=adam,carl").await, set(&["adam", "carl"]));
    assert_eq!(ids(&app, &t, "Patient?_lastUpdated=gt2000-01-01").await.len(), 3);
    assert_eq!(ids(&app, &t, "Patient?_lastUpdated=lt2000-01-01").await.len(), 0);
    // chains and _has, one level
    assert_eq!(ids(&app, &t, "Observation?subject:Patient.family=angstrom").await, set(&["o1", "o2", "o3"]));
    assert_eq!(ids(&app, &t, "Observation?subject.gender=male").await, set(&["o3"]));
    assert_eq!(ids(&app, &t, "Patient?_has:Observation:subject:value-quantity=gt90").await, set(&["adam"]));
    assert_eq!(ids(&app, &t, "Patient?_has:Condition:subject:code=44054006").await, set(&["adam"]));
    assert_eq!(ids(&app, &t, "Patient?general-practitioner.family=who").await, set(&["zoe"]));
}

#[tokio::test]
async fn includes_sorting_shaping_and_totals_work_together() {
    let app = TestApp::spawn().await;
    let t = app.tenant("search").await;
    people(&app, &t).await;

    let b = bundle(&app, &t, "Observation?subject=Patient/zoe&_include=Observation:subject").await;
    assert_eq!(b["total"], 2);
    let modes: Vec<(String, String)> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["resource"]["id"].as_str().unwrap().into(), e["search"]["mode"].as_str().unwrap().into()))
        .collect();
    assert!(modes.contains(&("zoe".into(), "include".into())), "{modes:?}");
    assert_eq!(modes.len(), 3);

    let b = bundle(&app, &t, "Patient?_id=adam&_revinclude=Condition:subject&_revinclude=Observation:subject").await;
    let included: BTreeSet<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(included, set(&["c1", "o3"]));
    // :iterate follows the included Observations' subjects once more
    let b =
        bundle(&app, &t, "Condition?_id=c1&_include=Condition:subject&_revinclude:iterate=Observation:subject").await;
    assert_eq!(b["entry"].as_array().unwrap().len(), 3, "{b}");

    let order = |b: &Value| -> Vec<String> {
        b["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().into()).collect()
    };
    assert_eq!(order(&bundle(&app, &t, "Patient?_sort=birthdate").await), ["adam", "zoe", "carl"]);
    assert_eq!(order(&bundle(&app, &t, "Patient?_sort=-birthdate").await), ["carl", "zoe", "adam"]);
    assert_eq!(order(&bundle(&app, &t, "Patient?_sort=gender,-family").await), ["zoe", "carl", "adam"]);
    assert_eq!(order(&bundle(&app, &t, "Patient?_sort=-_id").await), ["zoe", "carl", "adam"]);

    let b = bundle(&app, &t, "Patient?_summary=count").await;
    assert_eq!(b["total"], 3);
    assert!(b.get("entry").is_none());
    let b = bundle(&app, &t, "Patient?_total=none&_id=zoe").await;
    assert!(b.get("total").is_none());
    let b = bundle(&app, &t, "Patient?_id=zoe&_elements=gender").await;
    let zoe = &b["entry"][0]["resource"];
    assert_eq!(zoe["gender"], "female");
    assert!(zoe.get("name").is_none());
    assert!(zoe["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));

    // system level, with _type
    assert_eq!(ids(&app, &t, "?_type=Patient,Practitioner&_id=zoe,doc").await, set(&["zoe", "doc"]));
    assert_eq!(ids(&app, &t, "?_id=c1").await, set(&["c1"]));
    let res = app
        .authed(app.http.post(app.fhir(&t, "Patient/_search")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("family=smith")
        .send()
        .await
        .unwrap();
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["total"], 1, "{b}");
}

#[tokio::test]
async fn paging_links_walk_every_match_once_in_both_directions() {
    let app = TestApp::spawn().await;
    let t = app.tenant("search").await;
    for i in 0..23 {
        put(
            &app,
            &t,
            json!({"resourceType": "Patient", "id": format!("p{i:02}"), "birthDate": format!("{}", 1950 + i % 7)}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut url = app.fhir(&t, "Patient?_sort=-birthdate&_count=5");
    let mut pages = Vec::new();
    loop {
        let b: Value = app.authed(app.http.get(&url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(b["total"], 23);
        for e in b["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        pages.push(b.clone());
        match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages.len(), 5);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 23, "{seen:?}");
    // The order is by birth year descending, then id.
    let years: Vec<u32> = seen.iter().map(|id| 1950 + id[1..].parse::<u32>().unwrap() % 7).collect();
    assert!(years.windows(2).all(|w| w[0] >= w[1]), "{years:?}");

    // Back from the last page: `previous` gives exactly the page before.
    let last = pages.last().unwrap();
    let prev = last["link"].as_array().unwrap().iter().find(|l| l["relation"] == "previous").unwrap();
    let b: Value = app.authed(app.http.get(prev["url"].as_str().unwrap())).send().await.unwrap().json().await.unwrap();
    assert_eq!(b["entry"], pages[3]["entry"]);
}

#[tokio::test]
async fn malformed_values_are_refused_and_unknown_parameters_ignored_unless_strict() {
    let app = TestApp::spawn().await;
    let t = app.tenant("search").await;
    people(&app, &t).await;

    for bad in [
        "Patient?birthdate=1980-13-01",
        "Patient?birthdate=xx1980",
        "Patient?birthdate=",
        "Observation?subject=Nonsense/1",
        "Observation?subject=Patient/a b",
        "Observation?value-quantity=abc",
        "Patient?_count=-1",
        "Patient?_count=many",
        "Patient?_total=most",
        "Patient?family:fuzzy=x",
        "Patient?gender:missing=maybe",
        "Patient?_include=Patient:nothing",
        "Observation?subject:Patient.organization.partof.name=x",
        "Patient?_cursor=abc.def",
    ] {
        let res = app.get(&t, bad).await;
        assert_outcome(res, 400).await;
    }
    // Unknown: ignored and left out of the self link...
    let b = bundle(&app, &t, "Patient?family=smith&colour=blue").await;
    assert_eq!(b["total"], 1);
    let self_link = b["link"][0]["url"].as_str().unwrap();
    assert!(self_link.contains("family=smith") && !self_link.contains("colour"), "{self_link}");
    // ...or named in a 400 with handling=strict.
    let res = app
        .authed(app.http.get(app.fhir(&t, "Patient?family=smith&colour=blue")))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    let text = assert_outcome(res, 400).await;
    assert!(text.contains("colour"), "{text}");
}

#[tokio::test]
async fn a_paging_link_is_useless_in_another_tenant_or_with_another_query() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    for i in 0..4 {
        put(&app, &a, json!({"resourceType": "Patient", "id": format!("p{i}")})).await;
        put(&app, &b, json!({"resourceType": "Patient", "id": format!("p{i}")})).await;
    }
    let page = bundle(&app, &a, "Patient?_count=2").await;
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let cursor = next.split("_cursor=").nth(1).unwrap();
    assert_outcome(app.get(&b, &format!("Patient?_count=2&_cursor={cursor}")).await, 400).await;
    assert_outcome(app.get(&a, &format!("Patient?_count=2&gender=male&_cursor={cursor}")).await, 400).await;
    assert_eq!(app.authed(app.http.get(&next)).send().await.unwrap().status(), 200);
}
