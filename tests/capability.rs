//! The CapabilityStatement is truthful: every interaction, operation and
//! format it declares for a type (and at system level) is exercised here
//! against the running server, and must answer as the spec says.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::TestApp;

fn minimal(rt: &str) -> Value {
    match rt {
        "Observation" => json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        "Group" => json!({"resourceType": "Group", "type": "person", "actual": true}),
        other => json!({"resourceType": other}),
    }
}

fn codes(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key].as_array().into_iter().flatten().map(|i| i[field].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_declared_interaction_and_operation_answers_as_declared() {
    // Every declared $export is kicked off at once for one tenant: more
    // than its default share of running exports (docs/quotas.md).
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_max_exports = 8).await;
    let t = app.tenant("caps").await;
    let cs: Value = app.get(&t, "metadata").await.json().await.unwrap();
    assert_eq!(cs["format"], json!(["application/fhir+json", "json"]));
    assert_eq!(cs["rest"][0]["resource"][0]["conditionalRead"], "full-support");
    let http = &app.http;
    for rt in ["Patient", "Observation", "Group"] {
        let entry = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == rt).unwrap();
        let id = format!("{}-caps", rt.to_lowercase());
        let mut body = minimal(rt);
        body["id"] = json!(id);
        let instance = app.fhir(&t, &format!("{rt}/{id}"));
        // Interactions in an order that leaves something to act on.
        let mut declared = codes(entry, "interaction", "code");
        let order =
            ["create", "update", "read", "vread", "patch", "history-instance", "history-type", "search-type", "delete"];
        declared.sort_by_key(|c| order.iter().position(|o| o == c).unwrap_or(usize::MAX));
        for code in declared {
            let (req, want) = match code.as_str() {
                "create" => (http.post(app.fhir(&t, rt)).json(&minimal(rt)), 201),
                "update" => (http.put(&instance).json(&body), 201),
                "read" => (http.get(&instance), 200),
                "vread" => (http.get(format!("{instance}/_history/1")), 200),
                "patch" => (
                    http.patch(&instance)
                        .header("content-type", "application/json-patch+json")
                        .body(r#"[{"op":"add","path":"/language","value":"en"}]"#),
                    200,
                ),
                "history-instance" => (http.get(format!("{instance}/_history")), 200),
                "history-type" => (http.get(app.fhir(&t, &format!("{rt}/_history"))), 200),
                "search-type" => (http.get(app.fhir(&t, &format!("{rt}?_id={id}"))), 200),
                "delete" => (http.delete(&instance), 204),
                other => panic!("{rt}: undeclared interaction code {other} has no check"),
            };
            let res = app.authed(req).send().await.unwrap();
            assert_eq!(res.status().as_u16(), want, "{rt} {code}: {}", res.text().await.unwrap());
        }
        for op in entry["operation"].as_array().unwrap() {
            let res = match op["name"].as_str().unwrap() {
                "validate" => app.authed(http.post(app.fhir(&t, &format!("{rt}/$validate"))).json(&minimal(rt))).send(),
                "export" if rt == "Patient" => {
                    app.authed(http.get(app.fhir(&t, "Patient/$export")).header("prefer", "respond-async")).send()
                }
                "export" => {
                    let group =
                        app.authed(http.post(app.fhir(&t, "Group")).json(&minimal("Group"))).send().await.unwrap();
                    let gid = group.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                    app.authed(
                        http.get(app.fhir(&t, &format!("Group/{gid}/$export"))).header("prefer", "respond-async"),
                    )
                    .send()
                }
                other => panic!("{rt}: operation {other} has no check"),
            };
            let status = res.await.unwrap().status().as_u16();
            assert!(status == 200 || status == 202, "{rt} ${}: {status}", op["name"]);
        }
    }
    for code in codes(&cs["rest"][0], "interaction", "code") {
        let res = match code.as_str() {
            "transaction" | "batch" => {
                let b = json!({"resourceType": "Bundle", "type": code, "entry": [
                    {"resource": minimal("Patient"), "request": {"method": "POST", "url": "Patient"}}]});
                app.authed(http.post(app.fhir(&t, ""))).json(&b).send().await.unwrap()
            }
            "search-system" => app.authed(http.get(app.fhir(&t, "?_type=Patient"))).send().await.unwrap(),
            "history-system" => app.authed(http.get(app.fhir(&t, "_history"))).send().await.unwrap(),
            other => panic!("system interaction {other} has no check"),
        };
        assert_eq!(res.status().as_u16(), 200, "system {code}");
    }
    for op in cs["rest"][0]["operation"].as_array().unwrap() {
        assert_eq!(op["name"], "export");
        let res = app.authed(http.get(app.fhir(&t, "$export")).header("prefer", "respond-async")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 202);
    }
}
