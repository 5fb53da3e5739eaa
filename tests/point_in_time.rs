//! Point-in-time reads: `_history?_at=` answers with the versions current
//! at a moment (or during a period), at instance, type and system level;
//! deleted resources keep a readable history; neighbours see nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

fn last_updated(res_body: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(res_body["meta"]["lastUpdated"].as_str().unwrap()).unwrap().to_utc()
}

/// The instant halfway between two, to the microsecond (a `_at` of that
/// precision means that one microsecond).
fn between(a: DateTime<Utc>, b: DateTime<Utc>) -> String {
    assert!(b - a > chrono::TimeDelta::microseconds(2), "{a} .. {b}");
    (a + (b - a) / 2).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn versions(bundle: &Value) -> Vec<(String, String, String)> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    (
                        e["request"]["url"].as_str().unwrap().to_owned(),
                        e["response"]["etag"].as_str().unwrap().to_owned(),
                        e["request"]["method"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn v(url: &str, version: u32, method: &str) -> (String, String, String) {
    (url.to_owned(), format!("W/\"{version}\""), method.to_owned())
}

async fn bundle(app: &TestApp, tenant: &str, path: &str) -> Value {
    let res = app.get(tenant, path).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

struct Timeline {
    /// lastUpdated of versions 1 (create), 2 (update), 3 (delete), 4 (re-create).
    at: Vec<DateTime<Utc>>,
}

/// Patient/p goes through create, update, delete and re-create; Patient/q
/// is created between the update and the delete.
async fn timeline(app: &TestApp, t: &str) -> Timeline {
    let mut at = Vec::new();
    let res = app.put(t, "Patient/p", &json!({"resourceType": "Patient", "id": "p", "gender": "female"})).await;
    at.push(last_updated(&res.json().await.unwrap()));
    let res = app.put(t, "Patient/p", &json!({"resourceType": "Patient", "id": "p", "gender": "male"})).await;
    at.push(last_updated(&res.json().await.unwrap()));
    let res = app.put(t, "Patient/q", &json!({"resourceType": "Patient", "id": "q"})).await;
    assert_eq!(res.status(), 201);
    let res = app.authed(app.http.delete(app.fhir(t, "Patient/p"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let deleted = DateTime::parse_from_rfc2822(res.headers()["last-modified"].to_str().unwrap()).unwrap().to_utc();
    // Last-Modified has whole seconds only: read the exact time from history.
    let h = bundle(app, t, "Patient/p/_history").await;
    let exact = h["entry"][0]["response"]["lastModified"].as_str().unwrap();
    let exact = DateTime::parse_from_rfc3339(exact).unwrap().to_utc();
    assert_eq!(exact.timestamp(), deleted.timestamp());
    at.push(exact);
    let res = app.put(t, "Patient/p", &json!({"resourceType": "Patient", "id": "p", "gender": "other"})).await;
    at.push(last_updated(&res.json().await.unwrap()));
    Timeline { at }
}

#[tokio::test]
async fn an_instance_history_at_a_moment_holds_exactly_the_version_current_then() {
    let app = TestApp::spawn().await;
    let t = app.tenant("pit").await;
    let tl = timeline(&app, &t).await;
    let at = |a: usize, b: usize| format!("Patient/p/_history?_at={}", between(tl.at[a], tl.at[b]));

    let b = bundle(&app, &t, &at(0, 1)).await;
    assert_eq!(versions(&b), [v("Patient/p", 1, "PUT")]);
    assert_eq!(b["total"], 1);
    assert_eq!(b["entry"][0]["resource"]["gender"], "female");
    let b = bundle(&app, &t, &at(1, 2)).await;
    assert_eq!(versions(&b), [v("Patient/p", 2, "PUT")]);
    assert_eq!(b["entry"][0]["resource"]["gender"], "male");
    // Deleted then: the deletion is what was current, and it stays readable.
    let b = bundle(&app, &t, &at(2, 3)).await;
    assert_eq!(versions(&b), [v("Patient/p", 3, "DELETE")]);
    assert!(b["entry"][0].get("resource").is_none());
    // Before it existed: nothing, but the resource is known, so not a 404.
    let before = (tl.at[0] - chrono::TimeDelta::seconds(5)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let b = bundle(&app, &t, &format!("Patient/p/_history?_at={before}")).await;
    assert_eq!(b["total"], 0);
    assert!(b.get("entry").is_none());
    // A period (today, the precision of a date) holds every version current
    // at some moment of it.
    let today = tl.at[0].format("%Y-%m-%d").to_string();
    let b = bundle(&app, &t, &format!("Patient/p/_history?_at={today}")).await;
    let etags: Vec<String> = versions(&b).into_iter().map(|x| x.1).collect();
    assert_eq!(etags, ["W/\"4\"", "W/\"3\"", "W/\"2\"", "W/\"1\""]);
    // A period that starts during version 1 and covers the update.
    let second = tl.at[1].to_rfc3339_opts(SecondsFormat::Secs, true);
    let b = bundle(&app, &t, &format!("Patient/p/_history?_at={second}&_since={today}")).await;
    assert!(versions(&b).contains(&v("Patient/p", 2, "PUT")), "{b}");
}

#[tokio::test]
async fn type_and_system_history_at_a_moment_list_every_resource_current_then_and_page() {
    let app = TestApp::spawn().await;
    let t = app.tenant("pit").await;
    let tl = timeline(&app, &t).await;
    // Between q's create and p's delete: p at version 2 and q at version 1.
    let q_created = bundle(&app, &t, "Patient/q/_history").await["entry"][0]["response"]["lastModified"]
        .as_str()
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap().to_utc())
        .unwrap();
    let moment = between(q_created, tl.at[2]);
    let b = bundle(&app, &t, &format!("Patient/_history?_at={moment}")).await;
    assert_eq!(versions(&b), [v("Patient/q", 1, "PUT"), v("Patient/p", 2, "PUT")]);
    let b = bundle(&app, &t, &format!("_history?_at={moment}")).await;
    assert_eq!(b["total"], 2);
    // Paged one at a time, the next link keeps `_at`.
    let first = bundle(&app, &t, &format!("Patient/_history?_at={moment}&_count=1")).await;
    assert_eq!(versions(&first), [v("Patient/q", 1, "PUT")]);
    let next = first["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(next.contains("_at="), "{next}");
    let second: Value = app.authed(app.http.get(&next)).send().await.unwrap().json().await.unwrap();
    assert_eq!(versions(&second), [v("Patient/p", 2, "PUT")]);
    // The cursor is bound to its `_at`: replayed with another, refused.
    let cursor = next.split("_cursor=").nth(1).unwrap();
    let other = between(tl.at[0], tl.at[1]);
    let res = app.get(&t, &format!("Patient/_history?_at={other}&_count=1&_cursor={cursor}")).await;
    assert_outcome(res, 400).await;
}

#[tokio::test]
async fn a_neighbour_sees_nothing_of_a_tenants_past() {
    let app = TestApp::spawn().await;
    let a = app.tenant("pit").await;
    let b = app.tenant("next-door").await;
    let tl = timeline(&app, &a).await;
    let moment = between(tl.at[0], tl.at[1]);
    assert_outcome(app.get(&b, &format!("Patient/p/_history?_at={moment}")).await, 404).await;
    let today = tl.at[0].format("%Y-%m-%d").to_string();
    for path in [format!("Patient/_history?_at={today}"), format!("_history?_at={today}")] {
        let got = bundle(&app, &b, &path).await;
        assert_eq!(got["total"], 0, "{path}: {got}");
    }
    // A's cursor does not open in B.
    let first = bundle(&app, &a, &format!("Patient/_history?_at={today}&_count=1")).await;
    let next = first["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let cursor = next.split("_cursor=").nth(1).unwrap();
    assert_outcome(app.get(&b, &format!("Patient/_history?_at={today}&_count=1&_cursor={cursor}")).await, 400).await;
}

#[tokio::test]
async fn a_malformed_at_is_a_400_outcome() {
    let app = TestApp::spawn().await;
    let t = app.tenant("pit").await;
    app.put(&t, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await;
    for bad in ["yesterday", "2026-13-01", "2026-11-29T25:00:00Z", "%00", ""] {
        for path in ["Patient/p/_history", "Patient/_history", "_history"] {
            let res = app.get(&t, &format!("{path}?_at={bad}")).await;
            let text = assert_outcome(res, 400).await;
            assert!(text.contains("_at"), "{path}?_at={bad}: {text}");
        }
    }
}
