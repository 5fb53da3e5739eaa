//! Conditional create, update and delete on any search criteria, race-safe,
//! and confined to the tenant that asks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

fn racer() -> Value {
    json!({"resourceType":"Patient","name":[{"family":"Racer"}],"birthDate":"2001-02-03"})
}

async fn conditional_create(app: &TestApp, t: &str, criteria: &str, body: &Value) -> (u16, Value) {
    let res = app
        .authed(app.http.post(app.fhir(t, "Patient")))
        .header("if-none-exist", criteria)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn twenty_racing_conditional_creates_on_name_and_birth_date_make_one_resource_and_no_409() {
    let app = TestApp::spawn().await;
    let t = app.tenant("cond").await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.fhir(&t, "Patient"));
            // The same criteria in two spellings: one canonical form.
            let criteria =
                if i % 2 == 0 { "family=Racer&birthdate=2001-02-03" } else { "birthdate=2001-02-03&family=Racer" };
            tokio::spawn(async move {
                let res = http.post(url).header("if-none-exist", criteria).json(&racer()).send().await.unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                (status, body["id"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let (mut created, mut ids) = (0, HashSet::new());
    for task in tasks {
        let (status, id) = task.await.unwrap();
        assert!(status == 201 || status == 200, "never 409: {status}");
        created += usize::from(status == 201);
        ids.extend(id);
    }
    assert_eq!((created, ids.len()), (1, 1), "{ids:?}");
    assert_eq!(app.stream_count(&format!("fhir.{t}.Patient.*")).await, 1);
}

#[tokio::test]
async fn conditional_update_on_any_criteria_creates_updates_or_refuses_several() {
    let app = TestApp::spawn().await;
    let t = app.tenant("condupd").await;
    let put = |q: &'static str, body: Value| {
        app.authed(app.http.put(app.fhir(&t, &format!("Patient?{q}")))).json(&body).send()
    };
    let res = put("family=Racer&birthdate=2001-02-03", racer()).await.unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut changed = racer();
    changed["gender"] = json!("female");
    let res = put("family=Racer&birthdate=2001-02-03", changed).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], id.as_str());
    for i in 0..2 {
        let twin = json!({"resourceType":"Patient","id": format!("twin{i}"),"name":[{"family":"Twin"}]});
        app.put(&t, &format!("Patient/twin{i}"), &twin).await;
    }
    assert_outcome(put("family=Twin", json!({"resourceType":"Patient"})).await.unwrap(), 412).await;
    // Delete: one match is deleted, several are refused.
    let del = |q: &'static str| app.authed(app.http.delete(app.fhir(&t, &format!("Patient?{q}")))).send();
    assert_outcome(del("family=Twin").await.unwrap(), 412).await;
    assert_eq!(del("gender=female&family=Racer").await.unwrap().status().as_u16(), 204);
    assert_outcome(app.get(&t, &format!("Patient/{id}")).await, 410).await;
}

#[tokio::test]
async fn criteria_a_search_would_not_understand_are_refused_not_ignored() {
    let app = TestApp::spawn().await;
    let t = app.tenant("condbad").await;
    for criteria in ["nonsense=1", "family=x&_count=1", "birthdate=not-a-date", ""] {
        let (status, o) = conditional_create(&app, &t, criteria, &racer()).await;
        assert_eq!(status, 400, "{criteria}: {o}");
    }
    let res = app.authed(app.http.delete(app.fhir(&t, "Patient?nonsense=1"))).send().await.unwrap();
    assert_outcome(res, 400).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
}

#[tokio::test]
async fn a_neighbours_matching_resource_is_neither_found_nor_claimed() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("conda").await, app.tenant("condb").await);
    let criteria = "family=Racer&birthdate=2001-02-03";
    assert_eq!(conditional_create(&app, &a, criteria, &racer()).await.0, 201);
    // B's identical condition matches nothing of A's, and A's claim does
    // not stand in B's way: B creates its own.
    let (status, body) = conditional_create(&app, &b, criteria, &racer()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(conditional_create(&app, &b, criteria, &racer()).await.0, 200);
    let res =
        app.authed(app.http.put(app.fhir(&b, &format!("Patient?{criteria}")))).json(&racer()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "B updates its own");
    assert_eq!(app.stream_count(&format!("fhir.{a}.Patient.*")).await, 1, "A's resource untouched");
}
