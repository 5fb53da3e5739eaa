//! Red-team suite for the security model (README "Security model"): each
//! test tries one rule the way an attacker holding a valid token would,
//! asserts the refusal, and beside it the positive twin that proves the
//! refusal is the rule and not a broken endpoint.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{SECRET, TestApp, assert_outcome, token};

/// A token with any claims: `sub`, the tenants, the scope, `exp` in an hour
/// and `iat` now, overridden or extended by `extra` (`null` removes one).
fn token_with(sub: &str, tenants: &[&str], scope: &str, extra: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({"sub": sub, "tenants": tenants, "scope": scope, "exp": now + 3600, "iat": now});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    fhirstream::http::auth::mint_hs256(SECRET, &claims).unwrap()
}

async fn get(app: &TestApp, url: &str, bearer: &str) -> reqwest::Response {
    app.http.get(url).bearer_auth(bearer).send().await.unwrap()
}

async fn put_json(app: &TestApp, url: &str, bearer: &str, body: &Value) -> reqwest::Response {
    app.http.put(url).bearer_auth(bearer).json(body).send().await.unwrap()
}

async fn post_fhir(app: &TestApp, url: &str, bearer: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(url)
        .bearer_auth(bearer)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let r = &e["resource"];
                    format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tenant holding Patient `p1` (identifier `urn:mrn|123`) and
/// Observation `o1` about it (code `weight`).
async fn clinic(app: &TestApp, prefix: &str) -> String {
    let t = app.tenant(prefix).await;
    let patient = json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:mrn", "value": "123"}],
                         "name": [{"family": "Secret"}]});
    assert_eq!(app.put(&t, "Patient/p1", &patient).await.status(), 201);
    let obs = json!({"resourceType": "Observation", "id": "o1", "status": "final",
                     "code": {"coding": [{"system": "urn:codes", "code": "weight"}]},
                     "subject": {"reference": "Patient/p1"}});
    assert_eq!(app.put(&t, "Observation/o1", &obs).await.status(), 201);
    t
}

async fn configure(app: &TestApp, t: &str, config: Value) {
    let res = put_json(
        app,
        &app.url(&format!("/admin/tenants/{t}")),
        app.admin_token.as_ref().unwrap(),
        &json!({"name": t, "config": config}),
    )
    .await;
    assert_eq!(res.status(), 200);
}

// 1. Admins bound to their tenants.

#[tokio::test]
async fn a_tenant_admin_sees_and_configures_only_its_own_tenants_and_cannot_create_or_delete_any() {
    let app = TestApp::spawn_secure().await;
    let a = app.tenant("adm-a").await;
    let b = app.tenant("adm-b").await;
    let admin_a = token(&[&a], "fhirstream/admin");
    let platform = app.admin_token.clone().unwrap();

    let listed: Value = get(&app, &app.url("/admin/tenants"), &admin_a).await.json().await.unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(names, [a.as_str()], "a tenant admin lists only its own tenant");
    let all: Value = get(&app, &app.url("/admin/tenants"), &platform).await.json().await.unwrap();
    assert!(all.as_array().unwrap().len() >= 2, "a platform admin lists every tenant");

    // Another tenant, an unknown one and a malformed name: the same 403.
    for other in [b.as_str(), "never-was", "Not_A_Name"] {
        let url = app.url(&format!("/admin/tenants/{other}"));
        assert_outcome(get(&app, &url, &admin_a).await, 403).await;
        assert_outcome(put_json(&app, &url, &admin_a, &json!({"name": "taken over"})).await, 403).await;
        assert_outcome(app.http.delete(&url).bearer_auth(&admin_a).send().await.unwrap(), 403).await;
    }
    // Its own tenant: readable and configurable, but not deletable.
    let own = app.url(&format!("/admin/tenants/{a}"));
    assert_eq!(get(&app, &own, &admin_a).await.status(), 200);
    assert_eq!(put_json(&app, &own, &admin_a, &json!({"name": "renamed by its admin"})).await.status(), 200);
    assert_outcome(app.http.delete(&own).bearer_auth(&admin_a).send().await.unwrap(), 403).await;
    let res = app.http.post(app.url("/admin/tenants")).bearer_auth(&admin_a).json(&json!({"id": "sneaky"})).send();
    assert_outcome(res.await.unwrap(), 403).await;

    // B is untouched; the platform admin can do what the tenant admin cannot.
    let b_state: Value = get(&app, &app.url(&format!("/admin/tenants/{b}")), &platform).await.json().await.unwrap();
    assert_ne!(b_state["name"], "taken over");
    let res = app.http.delete(app.url(&format!("/admin/tenants/{b}"))).bearer_auth(&platform).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

// 2. Scopes on every type a request touches.

#[tokio::test]
async fn a_chain_into_a_type_the_token_cannot_search_is_refused_instead_of_answering_its_matches() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "chain").await;
    let url = app.fhir(&t, "Observation?subject:Patient.identifier=urn:mrn|123");
    let observations_only = token(&[&t], "system/Observation.read");
    assert_outcome(get(&app, &url, &observations_only).await, 403).await;
    // An untyped chain keeps matching through the targets it may search, and
    // none of them is Patient here: refused as well.
    let untyped = app.fhir(&t, "Observation?subject.identifier=urn:mrn|123");
    assert_outcome(get(&app, &untyped, &observations_only).await, 403).await;

    let both = token(&[&t], "system/Observation.read system/Patient.read");
    let res: Value = get(&app, &url, &both).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Observation/o1"]);
}

#[tokio::test]
async fn has_over_a_type_the_token_cannot_search_is_refused() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "has").await;
    let url = app.fhir(&t, "Patient?_has:Observation:subject:code=urn:codes|weight");
    assert_outcome(get(&app, &url, &token(&[&t], "system/Patient.read")).await, 403).await;
    let both = token(&[&t], "system/Patient.read system/Observation.rs");
    let res: Value = get(&app, &url, &both).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Patient/p1"]);
}

#[tokio::test]
async fn included_resources_of_types_the_token_cannot_read_are_left_out() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "incl").await;
    let url = app.fhir(&t, "Observation?_include=Observation:subject");
    let res: Value = get(&app, &url, &token(&[&t], "system/Observation.read")).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Observation/o1"]);
    assert!(!res.to_string().contains("Secret"));
    let both = token(&[&t], "system/Observation.read system/Patient.read");
    let res: Value = get(&app, &url, &both).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Observation/o1", "Patient/p1"]);
    // The same for _revinclude.
    let url = app.fhir(&t, "Patient?_revinclude=Observation:subject");
    let res: Value = get(&app, &url, &token(&[&t], "system/Patient.read")).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Patient/p1"]);
}

#[tokio::test]
async fn a_system_search_whose_type_list_the_tenant_disables_is_empty_not_unfiltered() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "systype").await;
    configure(&app, &t, json!({"allowed_types": ["Patient"]})).await;
    let bearer = token(&[&t], "system/*.read");
    let res: Value = get(&app, &app.fhir(&t, "?_type=Observation"), &bearer).await.json().await.unwrap();
    assert_eq!(res["total"], 0, "{res}");
    assert!(ids(&res).is_empty(), "{res}");
    let res: Value = get(&app, &app.fhir(&t, "?_type=Patient,Observation"), &bearer).await.json().await.unwrap();
    assert_eq!(ids(&res), ["Patient/p1"]);
}

#[tokio::test]
async fn type_and_system_history_need_search_scope_because_they_enumerate() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "hist").await;
    let read_only = token(&[&t], "system/Patient.r");
    assert_eq!(get(&app, &app.fhir(&t, "Patient/p1"), &read_only).await.status(), 200);
    assert_eq!(get(&app, &app.fhir(&t, "Patient/p1/_history"), &read_only).await.status(), 200);
    assert_outcome(get(&app, &app.fhir(&t, "Patient/_history"), &read_only).await, 403).await;
    assert_outcome(get(&app, &app.fhir(&t, "_history"), &token(&[&t], "system/*.r")).await, 403).await;

    let res: Value =
        get(&app, &app.fhir(&t, "Patient/_history"), &token(&[&t], "system/Patient.rs")).await.json().await.unwrap();
    assert_eq!(res["total"], 1);
    assert_eq!(get(&app, &app.fhir(&t, "_history"), &token(&[&t], "system/*.rs")).await.status(), 200);
}

/// Polls an export's status URL until its manifest is ready.
async fn manifest(app: &TestApp, bearer: &str, status: &str) -> Value {
    for _ in 0..600 {
        let res = get(app, status, bearer).await;
        match res.status().as_u16() {
            202 => tokio::time::sleep(Duration::from_millis(100)).await,
            200 => return res.json().await.unwrap(),
            s => panic!("poll {status}: {s} {}", res.text().await.unwrap()),
        }
    }
    panic!("export {status} did not finish");
}

async fn kick_off(app: &TestApp, bearer: &str, url: &str) -> reqwest::Response {
    app.http.get(url).bearer_auth(bearer).header("prefer", "respond-async").send().await.unwrap()
}

#[tokio::test]
async fn an_export_covers_only_the_types_the_token_may_read_and_answers_only_its_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let app = TestApp::spawn_secure_with(move |cfg| cfg.export.export_dir = Some(dir)).await;
    let t = clinic(&app, "exp").await;
    let starter = token_with("client-a", &[&t], "system/Patient.rs", json!({}));
    let url = app.fhir(&t, "$export?_type=Patient,Observation");
    let res = kick_off(&app, &starter, &url).await;
    assert_eq!(res.status(), 202);
    let status = res.headers()["content-location"].to_str().unwrap().to_owned();

    // Another client of the same tenant, even with every scope: the job
    // does not exist for it.
    let other = token_with("client-b", &[&t], "system/*.*", json!({}));
    assert_eq!(assert_outcome(get(&app, &status, &other).await, 404).await, "no such export");
    assert_outcome(app.http.delete(&status).bearer_auth(&other).send().await.unwrap(), 404).await;

    let m = manifest(&app, &starter, &status).await;
    let types: Vec<&str> = m["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Patient"], "_type is intersected with the readable types");
    let file = m["output"][0]["url"].as_str().unwrap();
    assert_outcome(get(&app, file, &other).await, 404).await;
    assert_eq!(get(&app, file, &starter).await.status(), 200);

    // Read without search cannot export (an export enumerates), and
    // nothing readable left is a refusal, not an export of everything.
    assert_outcome(kick_off(&app, &token(&[&t], "system/Observation.r"), &url).await, 403).await;
    assert_outcome(kick_off(&app, &token(&[&t], "system/Encounter.rs"), &url).await, 403).await;
    assert_eq!(app.http.delete(&status).bearer_auth(&starter).send().await.unwrap().status(), 202);
}

#[tokio::test]
async fn the_change_feed_refuses_types_the_tenant_disables_or_the_token_cannot_read() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "feed").await;
    configure(&app, &t, json!({"allowed_types": ["Patient", "Encounter"]})).await;
    // Bounded: a feed that wrongly opens would otherwise stream for ever.
    let feed = |query: &str, bearer: String| {
        app.http.get(app.fhir(&t, query)).bearer_auth(bearer).timeout(Duration::from_secs(5)).send()
    };
    let all = token(&[&t], "system/*.*");
    assert_outcome(feed("$events?_type=Observation", all).await.unwrap(), 403).await;
    assert_outcome(feed("$events?_type=Encounter", token(&[&t], "system/Patient.rs")).await.unwrap(), 403).await;
    assert_outcome(feed("$events?_type=Patient", token(&[&t], "system/Patient.r")).await.unwrap(), 403).await;

    let res = get(&app, &app.fhir(&t, "$events?_type=Patient&since=0"), &token(&[&t], "system/Patient.rs")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn post_entry(rt: &str) -> Value {
    let resource = match rt {
        "Observation" => json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        _ => json!({"resourceType": rt}),
    };
    json!({"resource": resource, "request": {"method": "POST", "url": rt}})
}

#[tokio::test]
async fn every_transaction_and_batch_entry_needs_the_scope_of_its_type() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("tx").await;
    let patients = token(&[&t], "system/Patient.c");
    let tx = bundle("transaction", vec![post_entry("Patient"), post_entry("Observation")]);
    assert_outcome(post_fhir(&app, &app.fhir(&t, ""), &patients, &tx).await, 403).await;
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0, "nothing of the refused transaction was written");

    let batch = bundle("batch", vec![post_entry("Patient"), post_entry("Observation")]);
    let res: Value = post_fhir(&app, &app.fhir(&t, ""), &patients, &batch).await.json().await.unwrap();
    assert_eq!(res["entry"][0]["response"]["status"], "201 Created");
    assert!(res["entry"][1]["response"]["status"].as_str().unwrap().starts_with("403"), "{res}");

    let both = token(&[&t], "system/Patient.c system/Observation.c");
    assert_eq!(post_fhir(&app, &app.fhir(&t, ""), &both, &tx).await.status(), 200);
}

#[tokio::test]
async fn a_create_only_token_cannot_read_or_probe_through_a_conditional_create() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "cond").await;
    let url = app.fhir(&t, "Patient");
    let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "123"}]});
    let conditional = |bearer: String| {
        app.http
            .post(&url)
            .bearer_auth(bearer)
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", "identifier=urn:mrn|123")
            .body(body.to_string())
            .send()
    };
    let res = conditional(token(&[&t], "system/Patient.c")).await.unwrap();
    let text = res.status().as_u16().to_string() + &res.text().await.unwrap();
    assert!(text.starts_with("403") && !text.contains("Secret"), "{text}");
    // The same refusal in a transaction entry.
    let entry = json!({"resource": body, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|123"}});
    let tx = bundle("transaction", vec![entry]);
    assert_outcome(post_fhir(&app, &app.fhir(&t, ""), &token(&[&t], "system/Patient.c"), &tx).await, 403).await;
    // Conditional update and delete need it as well.
    let cond_url = app.fhir(&t, "Patient?identifier=urn:mrn|123");
    let res = app
        .http
        .put(&cond_url)
        .bearer_auth(token(&[&t], "system/Patient.u"))
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_outcome(res, 403).await;
    let res = app.http.delete(&cond_url).bearer_auth(token(&[&t], "system/Patient.d")).send().await.unwrap();
    assert_outcome(res, 403).await;
    assert_eq!(app.get(&t, "Patient/p1").await.status(), 200, "nothing was deleted");

    // Create and search: the match is reported, its body is not.
    let res = conditional(token(&[&t], "system/Patient.cs")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["location"].to_str().unwrap().contains("Patient/p1"));
    assert!(!res.text().await.unwrap().contains("Secret"));
    // Create, read and search: the body, as FHIR says.
    let res = conditional(token(&[&t], "system/Patient.crs")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Secret"));
}

// 3. Token hygiene.

#[test]
fn an_hs256_secret_shorter_than_32_bytes_is_refused_at_start() {
    let args = |secret: &str| fhirstream::config::AuthArgs { jwt_secret: Some(secret.into()), ..Default::default() };
    let err = fhirstream::http::Authenticator::from_config(&args("31-bytes-is-one-byte-too-short!")).err().unwrap();
    assert!(err.to_string().contains("at least 32"), "{err}");
    assert!(fhirstream::http::Authenticator::from_config(&args("32-bytes-is-just-long-enough-ok!")).is_ok());
    assert!(fhirstream::http::Authenticator::from_config(&args(SECRET)).is_ok(), "the test secret is long enough");
}

#[tokio::test]
async fn a_token_that_is_not_valid_yet_is_refused() {
    let app = TestApp::spawn_secure().await;
    let t = clinic(&app, "nbf").await;
    let now = chrono::Utc::now().timestamp();
    let url = app.fhir(&t, "Patient/p1");
    let early = token_with("x", &[&t], "system/*.read", json!({"nbf": now + 3600}));
    let d = assert_outcome(get(&app, &url, &early).await, 401).await;
    assert!(d.contains("not valid yet"), "{d}");
    let valid = token_with("x", &[&t], "system/*.read", json!({"nbf": now - 5}));
    assert_eq!(get(&app, &url, &valid).await.status(), 200);
}

// 4. Tenant incarnations.

#[tokio::test]
async fn a_token_issued_for_a_deleted_tenant_does_not_open_a_new_tenant_of_the_same_name() {
    let app = TestApp::spawn_secure().await;
    let x = clinic(&app, "reborn").await;
    let never_recreated = clinic(&app, "steady").await;
    let old = token(&[&x], "system/*.read");
    let no_iat = token_with("x", &[&x, &never_recreated], "system/*.read", json!({"iat": null}));
    assert_eq!(get(&app, &app.fhir(&x, "Patient/p1"), &old).await.status(), 200);

    let platform = app.admin_token.clone().unwrap();
    let res = app.http.delete(app.url(&format!("/admin/tenants/{x}"))).bearer_auth(&platform).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // `iat` has whole seconds: the new life must begin in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res =
        app.http.post(app.url("/admin/tenants")).bearer_auth(&platform).json(&json!({"id": x})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(app.put(&x, "Patient/p1", &json!({"resourceType": "Patient", "id": "p1"})).await.status(), 201);

    for (what, bearer) in [("issued before", &old), ("without iat", &no_iat)] {
        let d = assert_outcome(get(&app, &app.fhir(&x, "Patient/p1"), bearer).await, 401).await;
        assert!(d.contains("(re)created"), "{what}: {d}");
    }
    let fresh = token(&[&x], "system/*.read");
    assert_eq!(get(&app, &app.fhir(&x, "Patient/p1"), &fresh).await.status(), 200);
    // A token without iat still opens a tenant that never died.
    assert_eq!(get(&app, &app.fhir(&never_recreated, "Patient/p1"), &no_iat).await.status(), 200);
    // The admin API applies the same rule to a tenant admin's old token.
    let old_admin = token_with("adm", &[&x], "fhirstream/admin", json!({"iat": 1}));
    assert_outcome(get(&app, &app.url(&format!("/admin/tenants/{x}")), &old_admin).await, 401).await;
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_refused_events_snapshots_and_analytics_consumers() {
    let app = TestApp::spawn_secure().await;
    let doomed = app.tenant("gone").await;
    let bystander = app.tenant("stays").await;
    let pool = app.db.pool().await;
    let js = async_nats::jetstream::new(app.nats.client().await);
    let stream = js.get_stream("FHIR").await.unwrap();
    for (i, t) in [&doomed, &bystander].into_iter().enumerate() {
        sqlx::query(
            "insert into refused_events (projector, seq, tenant_id, subject, resource_type, id, version, sqlstate, error)
             values ('main', $1, $2, 's', 'Patient', 'p', 1, '22P05', 'test')",
        )
        .bind(1_000_000 + i as i64)
        .bind(t.as_str())
        .execute(&pool)
        .await
        .unwrap();
        let schema = format!("snapshot_{}", t.replace('-', "_"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create schema {schema}; create table {schema}.replay_meta (tenant text); insert into {schema}.replay_meta values ('{t}')"
        )))
        .execute(&pool)
        .await
        .unwrap();
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(format!("{t}_analytics")),
                filter_subject: format!("fhir.{t}.>"),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let platform = app.admin_token.clone().unwrap();
    let res =
        app.http.delete(app.url(&format!("/admin/tenants/{doomed}"))).bearer_auth(&platform).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(
        (report["rows_remaining"].as_i64(), report["consumers_deleted"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );

    let refused = |t: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from refused_events where tenant_id = $1")
                .bind(t)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let schema_exists = |t: &str| {
        let pool = pool.clone();
        let name = format!("snapshot_{}", t.replace('-', "_"));
        async move {
            sqlx::query_scalar::<_, bool>("select exists (select 1 from pg_namespace where nspname = $1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!((refused(doomed.clone()).await, refused(bystander.clone()).await), (0, 1));
    assert_eq!((schema_exists(&doomed).await, schema_exists(&bystander).await), (false, true));
    assert!(stream.consumer_info(format!("{doomed}_analytics")).await.is_err());
    assert!(stream.consumer_info(format!("{bystander}_analytics")).await.is_ok());
}

// 5. SMART discovery.

#[tokio::test]
async fn smart_clients_discover_the_identity_provider_without_a_token() {
    let app = TestApp::spawn_secure_with(|cfg| {
        cfg.auth.smart_authorize_url = Some("https://idp.example/authorize".into());
        cfg.auth.smart_token_url = Some("https://idp.example/token".into());
    })
    .await;
    let t = app.tenant("smart").await;
    for tenant in [t.as_str(), "no-such-tenant"] {
        let res = app.http.get(app.fhir(tenant, ".well-known/smart-configuration")).send().await.unwrap();
        assert_eq!(res.status(), 200, "the same answer for every well-formed name: no oracle");
        let doc: Value = res.json().await.unwrap();
        assert_eq!(doc["token_endpoint"], "https://idp.example/token");
        assert_eq!(doc["authorization_endpoint"], "https://idp.example/authorize");
        assert!(doc["capabilities"].as_array().unwrap().contains(&json!("permission-v2")));
    }
    let cs: Value = app.http.get(app.fhir(&t, "metadata")).send().await.unwrap().json().await.unwrap();
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(uris["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    assert!(uris.to_string().contains("https://idp.example/token"));

    // A real SMART client finds the endpoints: fhirclient from the venv
    // scripts/fhir-clients-bin.sh provisions for `make test`.
    {
        let python = std::env::var("FHIRSTREAM_TEST_FHIR_CLIENTS")
            .expect("FHIRSTREAM_TEST_FHIR_CLIENTS is not set: run the tests with `make test`");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/smart_prepare.py");
        let out = tokio::process::Command::new(python).arg(script).arg(app.fhir(&t, "")).output().await.unwrap();
        assert!(out.status.success(), "fhirclient: {}", String::from_utf8_lossy(&out.stderr));
        let found: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(found["auth"], "FHIROAuth2Auth", "{found}");
        assert_eq!(found["token"], "https://idp.example/token");
        assert_eq!(found["authorize"], "https://idp.example/authorize");
    }

    // Unconfigured: no discovery document, and no security element.
    let plain = TestApp::spawn_secure().await;
    assert_outcome(plain.http.get(plain.fhir(&t, ".well-known/smart-configuration")).send().await.unwrap(), 404).await;
}
