//! The leak suite: a real client against a secured server with three
//! tenants holding colliding ids tries to learn anything about the others.
//! Extend it with every feature that reads data (search, includes,
//! transactions, events).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::{SECRET, TestApp, assert_outcome, fingerprint, token};

struct World {
    app: TestApp,
    tenants: [String; 3],
}

/// Three tenants; each has Patient/same (one version in a, two in b, three
/// in c), a has Observation/only-a, b has a deleted Patient/gone.
async fn world() -> World {
    let app = TestApp::spawn_secure().await;
    let tenants = [app.tenant("a").await, app.tenant("b").await, app.tenant("c").await];
    for (i, t) in tenants.iter().enumerate() {
        for v in 0..=i {
            let body = json!({"resourceType": "Patient", "id": "same", "name": [{"family": format!("{t}-v{v}")}]});
            assert!(app.put(t, "Patient/same", &body).await.status().is_success());
        }
    }
    app.put(
        &tenants[0],
        "Observation/only-a",
        &json!({"resourceType": "Observation", "id": "only-a", "status": "final", "code": {"text": "x"}}),
    )
    .await;
    app.put(&tenants[1], "Patient/gone", &json!({"resourceType": "Patient", "id": "gone"})).await;
    let res = app.authed(app.http.delete(app.fhir(&tenants[1], "Patient/gone"))).send().await.unwrap();
    assert_eq!(res.status(), 204);
    World { app, tenants }
}

#[tokio::test]
async fn no_probe_from_one_tenant_reveals_another_tenants_resources() {
    let w = world().await;
    let app = &w.app;
    for (i, me) in w.tenants.iter().enumerate() {
        let my_token = token(&[me], "system/*.read");
        let get = |path: String| app.http.get(app.fhir(me, &path)).bearer_auth(&my_token).send();
        let others: Vec<&String> = w.tenants.iter().filter(|t| *t != me).collect();

        // My colliding id shows only my own versions and my own URLs.
        let mine: Value = get("Patient/same".into()).await.unwrap().json().await.unwrap();
        assert_eq!(mine["name"][0]["family"], format!("{me}-v{i}"));
        assert_eq!(mine["meta"]["versionId"], (i + 1).to_string());
        let history = get("Patient/same/_history".into()).await.unwrap().text().await.unwrap();
        let history_json: Value = serde_json::from_str(&history).unwrap();
        assert_eq!(history_json["total"], i + 1);
        assert_eq!(
            get(format!("Patient/same/_history/{}", i + 2)).await.unwrap().status(),
            404,
            "{me} sees no version beyond its own"
        );
        for other in &others {
            assert!(!history.contains(other.as_str()), "history of {me} mentions {other}");
        }

        // Resources only others have are indistinguishable from ones nobody has.
        for (path, never) in [
            ("Observation/only-a", "Observation/only-z"),
            ("Observation/only-a/_history", "Observation/only-z/_history"),
            ("Observation/only-a/_history/1", "Observation/only-z/_history/1"),
            ("Patient/gone", "Patient/gonz"),
            ("Patient/gone/_history", "Patient/gonz/_history"),
            ("Patient/gone/_history/2", "Patient/gonz/_history/2"),
        ] {
            let owner_is_me =
                (path.starts_with("Observation") && i == 0) || (path.starts_with("Patient/gone") && i == 1);
            if owner_is_me {
                continue;
            }
            let a = fingerprint(get(path.into()).await.unwrap()).await;
            let b = fingerprint(get(never.into()).await.unwrap()).await;
            assert_eq!(a.0, 404, "{me} {path}");
            assert_eq!(a.1, b.1, "{me} {path}: headers");
            let id = path.split('/').nth(1).unwrap();
            let never_id = never.split('/').nth(1).unwrap();
            assert_eq!(a.2.replace(id, "ID"), b.2.replace(never_id, "ID"), "{me} {path}: body");
        }
    }
}

#[tokio::test]
async fn a_token_for_one_tenant_gets_the_same_403_for_every_other_tenant_existing_or_not() {
    let w = world().await;
    let app = &w.app;
    let a_token = token(&[&w.tenants[0]], "system/*.*");
    let paths = ["Patient/same", "Patient/same/_history", "Patient/same/_history/1", "Observation/only-a"];
    // Bulk export and the change feed refuse the same way.
    let reads = ["$export", "Patient/$export", "$events", "$events?since=0"];
    for path in paths.into_iter().chain(reads) {
        let existing =
            fingerprint(app.http.get(app.fhir(&w.tenants[1], path)).bearer_auth(&a_token).send().await.unwrap()).await;
        // A tenant name of the same length that does not exist.
        let missing_tenant = &format!("z{}", &w.tenants[1][1..]);
        let absent =
            fingerprint(app.http.get(app.fhir(missing_tenant, path)).bearer_auth(&a_token).send().await.unwrap()).await;
        assert_eq!(existing.0, 403, "{path}");
        assert_eq!(absent.0, 403, "{path}");
        assert_eq!(existing.1, absent.1);
        assert_eq!(existing.2.replace(&w.tenants[1], "T"), absent.2.replace(missing_tenant, "T"), "{path}");
    }
    // Writes are refused the same way, and write nothing.
    let res = app
        .http
        .put(app.fhir(&w.tenants[1], "Patient/same"))
        .bearer_auth(&a_token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "same"}).to_string())
        .send()
        .await
        .unwrap();
    assert_outcome(res, 403).await;
    assert_eq!(app.stream_count(&format!("fhir.{}.Patient.same", w.tenants[1])).await, 2);
}

#[tokio::test]
async fn etags_locations_and_events_stay_inside_their_tenant() {
    let w = world().await;
    let app = &w.app;
    let (a, b) = (&w.tenants[0], &w.tenants[1]);
    let res = app.put(a, "Patient/same", &json!({"resourceType": "Patient", "id": "same"})).await;
    assert_eq!(res.headers()["etag"], "W/\"2\"", "a's version, not b's or c's");
    assert_eq!(res.headers()["content-location"].to_str().unwrap(), app.fhir(a, "Patient/same/_history/2"));
    let res = app.post(b, "Patient", &json!({"resourceType": "Patient"})).await;
    assert!(res.headers()["location"].to_str().unwrap().starts_with(&app.fhir(b, "Patient/")));

    // Every event under a tenant's subjects is that tenant's (the helper
    // also checks each against the envelope schema), and no other subject
    // carries its resources.
    for t in &w.tenants {
        for ev in app.events(&format!("fhir.{t}.>")).await {
            assert_eq!(ev["tenant"], t.as_str());
        }
    }
    assert_eq!(
        app.stream_count("fhir.>").await,
        app.stream_count(&format!("fhir.{a}.>")).await
            + app.stream_count(&format!("fhir.{b}.>")).await
            + app.stream_count(&format!("fhir.{}.>", w.tenants[2])).await
    );
}

#[tokio::test]
async fn transactions_and_conditional_writes_never_see_or_touch_another_tenant() {
    let w = world().await;
    let app = &w.app;
    let (a, b) = (&w.tenants[0], &w.tenants[1]);
    let post = |t: &str, bundle: Value| {
        app.authed(app.http.post(format!("{}/fhir/{t}", app.base)))
            .header("content-type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
    };
    // A GET entry for a resource only A has answers exactly like one nobody has.
    let reply: Value = post(
        b,
        json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Observation/only-a"}},
            {"request": {"method": "GET", "url": "Observation/only-z"}}
        ]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let e = reply["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "404 Not Found");
    assert_eq!(e[0].to_string().replace("only-a", "ID"), e[1].to_string().replace("only-z", "ID"));
    assert!(!reply.to_string().contains(a.as_str()));

    // A conditional create in B never matches A's identifier: B gets its own resource.
    let with_identifier =
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "shared-mrn"}]});
    for t in [a, b] {
        let res = app
            .authed(app.http.post(app.fhir(t, "Patient")))
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", "identifier=urn:mrn|shared-mrn")
            .body(with_identifier.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{t} creates its own: another tenant's claim is invisible");
    }
    // A conditional update in B with A's identifier creates in B, never updates A's.
    assert_eq!(app.stream_count(&format!("fhir.{a}.Patient.*")).await, 2);

    // A transaction in B that PUTs A's ids creates B's own versions.
    let reply = post(b, json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "id": "only-a", "status": "final", "code": {"text": "b's"}}, "request": {"method": "PUT", "url": "Observation/only-a"}}
    ]}))
    .await
    .unwrap();
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["entry"][0]["response"]["status"], "201 Created");
    let in_a: Value = app.get(a, "Observation/only-a").await.json().await.unwrap();
    assert_eq!(in_a["code"]["text"], "x");
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_challenge_and_narrow_ones_get_403() {
    let w = world().await;
    let app = &w.app;
    let a = &w.tenants[0];
    let url = app.fhir(a, "Patient/same");

    let res = app.http.get(&url).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"fhirstream\"");
    assert_outcome(res, 401).await;

    let expired = {
        let mut c = fhirstream::http::auth::TokenClaims::new("x", &[a], "system/*.*", std::time::Duration::ZERO);
        c.exp -= 3600;
        fhirstream::http::auth::mint_hs256(SECRET, &c).unwrap()
    };
    let wrong_key = {
        let c = fhirstream::http::auth::TokenClaims::new("x", &[a], "system/*.*", std::time::Duration::from_secs(60));
        fhirstream::http::auth::mint_hs256("another-secret-of-sufficient-length", &c).unwrap()
    };
    let unsigned = {
        use base64::Engine as _;
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            encode(r#"{"alg":"none","typ":"JWT"}"#),
            encode(&format!(
                r#"{{"sub":"x","exp":{},"tenants":["{a}"],"scope":"system/*.*"}}"#,
                chrono::Utc::now().timestamp() + 600
            ))
        )
    };
    for (what, bad) in [
        ("expired", expired),
        ("wrong signature", wrong_key),
        ("alg none", unsigned),
        ("garbage", "abc.def.ghi".into()),
    ] {
        let res = app.http.get(&url).bearer_auth(&bad).send().await.unwrap();
        assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{what}");
        assert_outcome(res, 401).await;
    }
    let res = app.http.get(&url).header("authorization", "Basic dXNlcjpwdw==").send().await.unwrap();
    assert_outcome(res, 401).await;

    // Scope too narrow: read-only Patient.
    let narrow = token(&[a], "system/Patient.read");
    assert_eq!(app.http.get(&url).bearer_auth(&narrow).send().await.unwrap().status(), 200);
    assert_outcome(app.http.get(app.fhir(a, "Observation/only-a")).bearer_auth(&narrow).send().await.unwrap(), 403)
        .await;
    let res = app
        .http
        .post(app.fhir(a, "Patient"))
        .bearer_auth(&narrow)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .unwrap();
    assert_outcome(res, 403).await;
    assert_outcome(app.http.delete(&url).bearer_auth(&narrow).send().await.unwrap(), 403).await;
    // v2 scopes.
    let v2 = token(&[a], "system/Patient.rs");
    assert_eq!(app.http.get(&url).bearer_auth(&v2).send().await.unwrap().status(), 200);
    assert_outcome(app.http.delete(&url).bearer_auth(&v2).send().await.unwrap(), 403).await;

    // The admin API needs the admin scope, whatever the tenants.
    let no_admin = token(&["*"], "system/*.*");
    assert_outcome(app.http.get(app.url("/admin/tenants")).bearer_auth(&no_admin).send().await.unwrap(), 403).await;
    let res = app
        .http
        .post(app.url("/admin/tenants"))
        .bearer_auth(&no_admin)
        .body(r#"{"id":"sneaky"}"#)
        .send()
        .await
        .unwrap();
    assert_outcome(res, 403).await;
    let res = app.http.delete(app.url(&format!("/admin/tenants/{a}"))).bearer_auth(&no_admin).send().await.unwrap();
    assert_outcome(res, 403).await;
    let admin = token(&[], "fhirstream/admin");
    assert_eq!(app.http.get(app.url("/admin/tenants")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    assert_outcome(app.http.get(app.url("/admin/tenants")).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn metadata_is_public_but_no_oracle_for_which_tenants_exist() {
    let w = world().await;
    let app = &w.app;
    let existing = fingerprint(app.http.get(app.fhir(&w.tenants[0], "metadata")).send().await.unwrap()).await;
    let missing = fingerprint(app.http.get(app.fhir("zz-nowhere-1", "metadata")).send().await.unwrap()).await;
    assert_eq!(existing.0, 200);
    assert_eq!(missing.0, 200);
    assert_eq!(existing.2.replace(&w.tenants[0], "T"), missing.2.replace("zz-nowhere-1", "T"));
    // With a token for the tenant, its own statement; for a missing one, 404.
    let t = token(&["*"], "system/*.read");
    assert_eq!(app.http.get(app.fhir(&w.tenants[0], "metadata")).bearer_auth(&t).send().await.unwrap().status(), 200);
    assert_outcome(app.http.get(app.fhir("zz-nowhere-1", "metadata")).bearer_auth(&t).send().await.unwrap(), 404).await;
}

#[tokio::test]
async fn an_unfiltered_select_through_the_query_role_sees_only_the_transactions_tenant() {
    let w = world().await;
    let queries = query::Queries::connect(&w.app.db.url, 2).await.unwrap();
    for t in &w.tenants {
        let tenant = schemas::TenantId::parse(t).unwrap();
        let mut tx = queries.begin(&tenant).await.unwrap();
        // Deliberately no tenant filter: RLS is all that stands in the way.
        let seen: Vec<String> =
            sqlx::query_scalar("select distinct tenant_id from resource_versions").fetch_all(&mut *tx).await.unwrap();
        assert_eq!(seen, vec![t.clone()]);
        let indexed: Vec<String> =
            sqlx::query_scalar("select distinct tenant_id from search_values").fetch_all(&mut *tx).await.unwrap();
        assert_eq!(indexed, vec![t.clone()], "the search index is tenant-scoped too");
        let current: i64 = sqlx::query_scalar("select count(*) from resources").fetch_one(&mut *tx).await.unwrap();
        assert!(current >= 1);
        let writes = sqlx::query("delete from resources").execute(&mut *tx).await;
        assert!(writes.is_err(), "the query role cannot write");
    }
    // A read sets the tenant for its own statement only: on a one-connection
    // pool, the next statement sees no tenant at all.
    let single = query::Queries::connect(&w.app.db.url, 1).await.unwrap();
    let a = schemas::TenantId::parse(&w.tenants[0]).unwrap();
    let patient = schemas::ResourceType::parse("Patient").unwrap();
    let same = schemas::ResourceId::parse("same").unwrap();
    assert!(single.read(&a, patient, &same).await.unwrap().is_some());
    let after: Option<String> = sqlx::query_scalar("select nullif(current_setting('app.tenant', true), '')")
        .fetch_one(single.pool())
        .await
        .unwrap();
    assert_eq!(after, None, "the tenant setting does not outlive the read");
    let visible: i64 = sqlx::query_scalar("select count(*) from resources").fetch_one(single.pool()).await.unwrap();
    assert_eq!(visible, 0);

    // Outside a tenant transaction the query role sees nothing at all.
    let mut conn = w.app.db.pool().await.acquire().await.unwrap();
    sqlx::query("set role fhirstream_reader").execute(&mut *conn).await.unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from resource_versions").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(n, 0);
    let owns: i64 = sqlx::query_scalar("select count(*) from pg_tables where tableowner = 'fhirstream_reader'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(owns, 0);
    let bypass: bool = sqlx::query_scalar("select rolbypassrls from pg_roles where rolname = 'fhirstream_reader'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(!bypass);
    let forced: Vec<bool> = sqlx::query_scalar(
        "select relforcerowsecurity from pg_class where relname in ('resources', 'resource_versions')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(forced, vec![true, true]);
}

#[tokio::test]
async fn hostile_path_segments_never_reach_a_subject() {
    let w = world().await;
    let app = &w.app;
    let a = &w.tenants[0];
    let before = app.stream_count("fhir.>").await;
    let body = r#"{"resourceType":"Patient","id":"x"}"#;
    for path in [
        format!("/fhir/{a}/Patient/x*"),
        format!("/fhir/{a}/Patient/%3E"),
        format!("/fhir/{a}/Patient/a.%2A"),
        format!("/fhir/{a}/Patient/a%20b"),
        format!("/fhir/{a}/Patient/..%2F..%2Fetc"),
        format!("/fhir/{a}/Pat*ent/x"),
        format!("/fhir/{a}/%3E/x"),
        format!("/fhir/{a}.x/Patient/x"),
        "/fhir/*/Patient/x".to_owned(),
        "/fhir/%3E/Patient/x".to_owned(),
    ] {
        let res = app
            .authed(app.http.put(app.url(&path)))
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    assert_eq!(app.stream_count("fhir.>").await, before);
}

async fn search_as(app: &TestApp, tenant: &str, token: &str, path: &str) -> Value {
    let res = app.http.get(app.fhir(tenant, path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn put(app: &TestApp, t: &str, body: Value) {
    let path = format!("{}/{}", body["resourceType"].as_str().unwrap(), body["id"].as_str().unwrap());
    assert!(app.put(t, &path, &body).await.status().is_success(), "{path}");
}

/// Tenant a holds a patient `pa` with observations and a condition; tenant b
/// holds its own patient and an observation that points at `Patient/pa`,
/// an id that exists only in a. Every search feature, run from b, must
/// behave as if a did not exist.
#[tokio::test]
async fn no_search_feature_reaches_into_another_tenant() {
    let app = TestApp::spawn_secure().await;
    let (a, b) = (app.tenant("a").await, app.tenant("b").await);
    put(&app, &a, json!({"resourceType": "Patient", "id": "pa", "name": [{"family": "Secret"}], "gender": "female"}))
        .await;
    put(
        &app,
        &a,
        json!({"resourceType": "Observation", "id": "oa", "status": "final", "code": {"coding": [{"code": "x"}]},
                   "subject": {"reference": "Patient/pa"}}),
    )
    .await;
    put(
        &app,
        &a,
        json!({"resourceType": "Condition", "id": "ca", "subject": {"reference": "Patient/pa"},
                   "code": {"coding": [{"code": "y"}]}}),
    )
    .await;
    put(&app, &b, json!({"resourceType": "Patient", "id": "pb", "name": [{"family": "Secret"}], "gender": "male"}))
        .await;
    put(
        &app,
        &b,
        json!({"resourceType": "Observation", "id": "ob", "status": "final", "code": {"coding": [{"code": "z"}]},
                   "subject": {"reference": "Patient/pa"}}),
    )
    .await;

    let b_token = token(&[&b], "system/*.read");
    let ids = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
            })
            .collect()
    };
    for (query, expected, total) in [
        ("Patient?family=secret", vec!["Patient/pb"], Some(1)),
        ("Patient?_summary=count", vec![], Some(1)),
        ("Patient?_id=pa", vec![], Some(0)),
        ("Observation?subject=Patient/pa", vec!["Observation/ob"], Some(1)),
        ("Observation?subject:Patient.family=secret", vec![], Some(0)),
        ("Observation?subject.gender=female", vec![], Some(0)),
        ("Observation?_include=Observation:subject", vec!["Observation/ob"], Some(1)),
        ("Observation?code=x", vec![], Some(0)),
        ("Patient?_has:Observation:subject:code=x", vec![], Some(0)),
        ("Patient?_has:Condition:subject:code=y", vec![], Some(0)),
        ("Patient?_revinclude=Condition:subject&_revinclude=Observation:subject", vec!["Patient/pb"], Some(1)),
        ("Patient?_sort=family&_count=1", vec!["Patient/pb"], Some(1)),
        ("?_type=Patient,Observation,Condition", vec!["Observation/ob", "Patient/pb"], Some(2)),
        ("?_id=pa,oa,ca", vec![], Some(0)),
        ("_history", vec!["Observation/ob", "Patient/pb"], Some(2)),
        ("Patient/_history", vec!["Patient/pb"], Some(1)),
    ] {
        let bundle = search_as(&app, &b, &b_token, query).await;
        let mut got = ids(&bundle);
        got.sort();
        assert_eq!(got, expected, "{query}");
        assert_eq!(bundle["total"].as_u64(), total, "{query}: total");
        let text = bundle.to_string();
        assert!(!text.contains(&a), "{query}: names tenant a");
        assert!(!text.contains("\"oa\"") && !text.contains("\"ca\""), "{query}: a's resources");
    }
    // An id only a has and an id nobody has give the same answer.
    let only_a = search_as(&app, &b, &b_token, "Patient?_id=pa").await.to_string().replace("pa", "ID");
    let nobody = search_as(&app, &b, &b_token, "Patient?_id=zz").await.to_string().replace("zz", "ID");
    assert_eq!(only_a, nobody);
    // a's paging cursor is refused in b.
    let a_token = token(&[&a], "system/*.read");
    let page: Value = app
        .http
        .get(app.fhir(&a, "Observation?_count=1&_include=Observation:subject"))
        .bearer_auth(&a_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next");
    assert!(next.is_none(), "a has one observation");
    put(&app, &a, json!({"resourceType": "Observation", "id": "oa2", "status": "final", "code": {"text": "x"}})).await;
    let page: Value = app
        .http
        .get(app.fhir(&a, "Observation?_count=1"))
        .bearer_auth(&a_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .replace(&format!("/fhir/{a}/"), &format!("/fhir/{b}/"));
    let res = app.http.get(next).bearer_auth(&b_token).send().await.unwrap();
    assert_outcome(res, 400).await;
}
