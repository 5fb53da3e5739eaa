//! REST details real clients rely on: summaries, no silently ignored
//! query strings on writes, content negotiation, conditional reads and
//! `Prefer` — each with the neighbouring tenant's view beside it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::TestApp;

fn patient() -> Value {
    json!({"resourceType":"Patient","id":"p1","active":true,"gender":"female","birthDate":"1990-01-01",
        "name":[{"family":"Summary"}],"communication":[{"language":{"text":"en"}}],
        "text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann</div>"}})
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    res.json().await.unwrap()
}

fn subsetted(v: &Value) -> bool {
    v["meta"]["tag"].as_array().is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
}

#[tokio::test]
async fn summary_true_returns_the_summary_elements_on_read_and_search_and_says_it_is_subsetted() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    assert_eq!(app.put(&t, "Patient/p1", &patient()).await.status().as_u16(), 201);
    let read = json_of(app.get(&t, "Patient/p1?_summary=true").await, 200).await;
    assert!(read.get("communication").is_none() && read.get("text").is_none(), "{read}");
    assert_eq!((read["gender"].as_str(), read["birthDate"].as_str()), (Some("female"), Some("1990-01-01")));
    assert!(subsetted(&read), "{read}");
    let bundle = json_of(app.get(&t, "Patient?_summary=true").await, 200).await;
    let found = &bundle["entry"][0]["resource"];
    assert!(found.get("communication").is_none() && found["name"][0]["family"] == "Summary", "{found}");
    assert!(subsetted(found));
    let text = json_of(app.get(&t, "Patient/p1?_summary=text").await, 200).await;
    assert!(text.get("text").is_some() && text.get("gender").is_none(), "{text}");
    let full = json_of(app.get(&t, "Patient/p1").await, 200).await;
    assert!(full.get("communication").is_some() && !subsetted(&full));
    let obs = json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"v","note":[{"text":"n"}]});
    assert_eq!(app.post(&t, "Observation", &obs).await.status().as_u16(), 201);
    let b = json_of(app.get(&t, "Observation?_elements=note").await, 200).await;
    let o = &b["entry"][0]["resource"];
    assert_eq!((o["status"].as_str(), o["code"]["text"].as_str()), (Some("final"), Some("x")), "mandatory kept: {o}");
    assert!(o.get("valueString").is_none() && o.get("note").is_some(), "{o}");
    assert_eq!(app.get(&t, "Patient/p1?_summary=maybe").await.status().as_u16(), 400);
}

#[tokio::test]
async fn a_write_with_search_parameters_in_its_url_is_refused_instead_of_ignored() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    let body = json!({"resourceType":"Patient","identifier":[{"system":"s","value":"1"}]});
    let res = app.authed(app.http.post(app.fhir(&t, "Patient?identifier=s|1"))).json(&body).send().await.unwrap();
    let o = json_of(res, 400).await;
    assert!(o["issue"][0]["diagnostics"].as_str().unwrap().contains("If-None-Exist"), "{o}");
    let res = app.authed(app.http.put(app.fhir(&t, "Patient/p1?active=true"))).json(&patient()).send().await.unwrap();
    json_of(res, 400).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
    let res = app.authed(app.http.post(app.fhir(&t, "Patient?_format=json"))).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 201, "format parameters apply to every interaction");
}

#[tokio::test]
async fn xml_and_other_fhir_versions_are_406_not_json() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    let get = |path: &str, accept: &str| {
        let req = app.authed(app.http.get(app.fhir(&t, path)));
        if accept.is_empty() { req } else { req.header("accept", accept) }
    };
    for (path, accept) in [
        ("Patient", "application/fhir+xml"),
        ("Patient?_format=xml", ""),
        ("Patient?_format=application/fhir+xml", "application/fhir+json"),
        ("metadata", "application/fhir+xml"),
        ("Patient", "application/fhir+json; fhirVersion=3.0"),
    ] {
        let res = get(path, accept).send().await.unwrap();
        let o = json_of(res, 406).await;
        assert_eq!(o["resourceType"], "OperationOutcome", "{path} {accept}");
    }
    for (path, accept) in [
        ("Patient", "application/fhir+json; fhirVersion=4.0"),
        ("Patient", "application/json"),
        ("Patient", "text/html,application/xml;q=0.9,*/*;q=0.8"),
        ("Patient?_format=json", "application/fhir+xml"),
    ] {
        assert_eq!(get(path, accept).send().await.unwrap().status().as_u16(), 200, "{path} {accept}");
    }
}

#[tokio::test]
async fn a_conditional_read_answers_304_for_the_current_version_and_never_for_a_neighbours_resource() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("rest").await, app.tenant("other").await);
    assert_eq!(app.put(&t, "Patient/p1", &patient()).await.status().as_u16(), 201);
    let read = |tenant: &str, name: &'static str, value: String| {
        app.authed(app.http.get(app.fhir(tenant, "Patient/p1"))).header(name, value).send()
    };
    let res = read(&t, "if-none-match", "W/\"1\"".into()).await.unwrap();
    assert_eq!(res.status().as_u16(), 304);
    assert_eq!(res.headers()["etag"], "W/\"1\"");
    assert_eq!(read(&t, "if-none-match", "W/\"0\"".into()).await.unwrap().status().as_u16(), 200);
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
    assert_eq!(read(&t, "if-modified-since", future.clone()).await.unwrap().status().as_u16(), 304);
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(3600));
    assert_eq!(read(&t, "if-modified-since", past).await.unwrap().status().as_u16(), 200);
    // The neighbour learns nothing: 404, whatever it claims to hold.
    assert_eq!(read(&other, "if-none-match", "W/\"1\"".into()).await.unwrap().status().as_u16(), 404);
    assert_eq!(read(&other, "if-modified-since", future).await.unwrap().status().as_u16(), 404);
}

#[tokio::test]
async fn prefer_chooses_the_answer_of_a_write_and_says_so() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    let post = |prefer: &'static str| {
        app.authed(app.http.post(app.fhir(&t, "Patient")))
            .header("prefer", prefer)
            .json(&json!({"resourceType":"Patient"}))
            .send()
    };
    let res = post("return=minimal").await.unwrap();
    assert_eq!(res.headers()["preference-applied"], "return=minimal");
    assert!(res.text().await.unwrap().is_empty());
    let res = post("return=representation").await.unwrap();
    assert_eq!(res.headers()["preference-applied"], "return=representation");
    assert_eq!(res.json::<Value>().await.unwrap()["resourceType"], "Patient");
    let res = post("return=OperationOutcome").await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn the_capability_statement_has_an_etag_that_revalidates() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    let res = app.get(&t, "metadata").await;
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let res = app.authed(app.http.get(app.fhir(&t, "metadata"))).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 304);
}

#[tokio::test]
async fn a_search_inside_a_batch_or_transaction_answers_with_a_searchset_of_the_tenant_only() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("rest").await, app.tenant("other").await);
    let smith = json!({"resourceType":"Patient","name":[{"family":"Smithers"}]});
    assert_eq!(app.post(&other, "Patient", &smith).await.status().as_u16(), 201);
    let tx = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource": smith, "request": {"method":"POST","url":"Patient"}},
        {"request": {"method":"GET","url":"Patient?family=Smithers"}}
    ]});
    let res = app.authed(app.http.post(app.fhir(&t, ""))).json(&tx).send().await.unwrap();
    let b = json_of(res, 200).await;
    let found = &b["entry"][1]["resource"];
    assert_eq!((found["type"].as_str(), found["total"].as_u64()), (Some("searchset"), Some(1)), "{b}");
    assert!(found["entry"][0]["fullUrl"].as_str().unwrap().contains(&format!("/fhir/{t}/")), "{found}");
    let batch = json!({"resourceType":"Bundle","type":"batch","entry":[
        {"request": {"method":"GET","url":"Patient?family=Smithers"}},
        {"request": {"method":"GET","url":"Patient?birthdate=not-a-date"}},
        {"request": {"method":"GET","url":"Patient"}}
    ]});
    let res = app.authed(app.http.post(app.fhir(&other, ""))).json(&batch).send().await.unwrap();
    let b = json_of(res, 200).await;
    assert_eq!(b["entry"][0]["resource"]["total"], 1, "the other tenant sees only its own: {b}");
    assert!(b["entry"][1]["response"]["status"].as_str().unwrap().starts_with("400"), "{b}");
    assert_eq!(b["entry"][2]["resource"]["total"], 1, "{b}");
}

#[tokio::test]
async fn a_parameter_dropped_under_lenient_handling_is_reported_in_an_outcome_entry() {
    let app = TestApp::spawn().await;
    let t = app.tenant("rest").await;
    assert_eq!(app.put(&t, "Patient/p1", &patient()).await.status().as_u16(), 201);
    let b = json_of(app.get(&t, "Patient?nonsense=1&_format=json").await, 200).await;
    let entries = b["entry"].as_array().unwrap();
    let outcome = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("an outcome entry");
    let text = outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(text.contains("nonsense") && !text.contains("_format"), "{text}");
    assert_eq!(b["total"], 1, "the outcome is not a match");
    let b = json_of(app.get(&t, "Patient?_format=json").await, 200).await;
    assert!(b["entry"].as_array().unwrap().iter().all(|e| e["search"]["mode"] == "match"), "{b}");
    let res = app
        .authed(app.http.get(app.fhir(&t, "Patient?_format=json")))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "_format is never an unknown parameter");
}

#[tokio::test]
async fn text_and_content_search_the_narrative_and_the_whole_resource_of_the_tenant_only() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("rest").await, app.tenant("other").await);
    let annabelle = json!({"resourceType":"Patient","name":[{"family":"Quillfeather"}],
        "text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Annabelle lives in <b>Springfield</b></div>"}});
    for tenant in [&t, &other] {
        assert_eq!(app.post(tenant, "Patient", &annabelle).await.status().as_u16(), 201);
    }
    let total = |q: &'static str| {
        let (app, t) = (&app, t.clone());
        async move { json_of(app.get(&t, q).await, 200).await["total"].as_u64().unwrap() }
    };
    assert_eq!(total("Patient?_text=springfield").await, 1, "one: the neighbour's twin is not ours");
    assert_eq!(total("Patient?_text=annabelle springfield").await, 1);
    assert_eq!(total("Patient?_text=quillfeather").await, 0, "the name is not in the narrative");
    assert_eq!(total("Patient?_content=quillfeather").await, 1, "but it is in the resource");
    assert_eq!(total("Patient?_text=shelbyville").await, 0);
    assert_eq!(app.get(&t, "Patient?_text=").await.status().as_u16(), 400);
}

#[tokio::test]
async fn a_chain_two_levels_deep_follows_both_references_inside_the_tenant() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("rest").await, app.tenant("other").await);
    let org = json!({"resourceType":"Organization","id":"acme","name":"Acme Clinic"});
    let pat = json!({"resourceType":"Patient","id":"pa","managingOrganization":{"reference":"Organization/acme"}});
    let obs =
        json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pa"}});
    assert_eq!(app.put(&t, "Organization/acme", &org).await.status().as_u16(), 201);
    assert_eq!(app.put(&t, "Patient/pa", &pat).await.status().as_u16(), 201);
    assert_eq!(app.post(&t, "Observation", &obs).await.status().as_u16(), 201);
    // The neighbour has the same ids but its clinic has another name.
    let other_org = json!({"resourceType":"Organization","id":"acme","name":"Other Clinic"});
    assert_eq!(app.put(&other, "Organization/acme", &other_org).await.status().as_u16(), 201);
    assert_eq!(app.put(&other, "Patient/pa", &pat).await.status().as_u16(), 201);
    assert_eq!(app.post(&other, "Observation", &obs).await.status().as_u16(), 201);
    let total = |tenant: &str, q: &'static str| {
        let (app, tenant) = (&app, tenant.to_owned());
        async move { json_of(app.get(&tenant, q).await, 200).await["total"].as_u64().unwrap() }
    };
    assert_eq!(total(&t, "Observation?subject:Patient.organization.name=acme").await, 1);
    assert_eq!(total(&t, "Observation?subject.organization.name=other").await, 0, "not the neighbour's clinic");
    assert_eq!(total(&other, "Observation?subject:Patient.organization.name=acme").await, 0);
    assert_eq!(total(&other, "Observation?subject:Patient.organization.name=other").await, 1);
}
