//! `fhirstream verify` and `fhirstream replay` against a running server:
//! damage is found exactly, a replay repairs it bit for bit without touching
//! other tenants, loses nothing while writes go on, and point-in-time
//! snapshots hold the versions current then.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::TestApp;
use tokio::process::Command;

/// The CLI as a child process: async, because the server under test runs on
/// the test's own runtime and must keep projecting meanwhile.
async fn cli(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(args)
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `verify --json`: the exit code and the report.
async fn verify(app: &TestApp, tenant: &str) -> (i32, Value) {
    let out = cli(app, &["verify", "--tenant", tenant, "--json"]).await;
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("a JSON report: {}", text(&out)));
    (out.status.code().unwrap(), report)
}

async fn replay(app: &TestApp, tenant: &str, extra: &[&str]) -> String {
    let out = cli(app, &[&["replay", "--tenant", tenant, "--quiet"], extra].concat()).await;
    assert!(out.status.success(), "replay {extra:?}: {}", text(&out));
    text(&out)
}

/// Every read-model row of a tenant, as text, sorted: equal dumps are equal
/// read models, bit for bit.
async fn dump(app: &TestApp, tenant: &str) -> Vec<String> {
    let pool = app.db.pool().await;
    let mut rows = Vec::new();
    for sql in [
        "select 'v ' || t::text from resource_versions t where tenant_id = $1",
        "select 'r ' || t::text from resources t where tenant_id = $1",
        "select 's ' || t::text from search_values t where tenant_id = $1",
    ] {
        rows.extend(sqlx::query_scalar::<_, String>(sql).bind(tenant).fetch_all(&pool).await.unwrap());
    }
    rows.sort();
    rows
}

async fn send(req: reqwest::RequestBuilder, body: &Value) -> Value {
    let res = req.header("content-type", "application/fhir+json").body(body.to_string()).send().await.unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn patient(id: &str, birth: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
           "name": [{"family": format!("Fam-{id}"), "given": ["Ann"]}]})
}

/// Creates, updates, a delete and a transaction in one tenant.
async fn populate(app: &TestApp, t: &str) {
    for i in 1..=5 {
        send(
            app.http.put(app.fhir(t, &format!("Patient/p{i}"))),
            &patient(&format!("p{i}"), &format!("19{i}0-01-0{i}")),
        )
        .await;
    }
    for i in 1..=3 {
        let obs = json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "subject": {"reference": format!("Patient/p{i}")}, "effectiveDateTime": format!("2020-01-0{i}T10:00:00Z"),
            "valueQuantity": {"value": 170.5 + f64::from(i), "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}});
        send(app.http.put(app.fhir(t, &format!("Observation/o{i}"))), &obs).await;
    }
    send(app.http.put(app.fhir(t, "Patient/p1")), &patient("p1", "1911-11-11")).await;
    send(app.http.put(app.fhir(t, "Patient/p1")), &patient("p1", "1912-12-12")).await;
    let res = app.http.delete(app.fhir(t, "Patient/p4")).send().await.unwrap();
    assert!(res.status().is_success());
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8c5ba4b8-7d5e-4ff4-9b47-0d5e0e0b2a01", "resource": patient("ignored", "2001-01-01"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                      "subject": {"reference": "urn:uuid:8c5ba4b8-7d5e-4ff4-9b47-0d5e0e0b2a01"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    send(app.http.post(app.fhir(t, "")), &bundle).await;
}

fn kinds(report: &Value) -> Vec<(String, String)> {
    let mut kinds: Vec<(String, String)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!("{}/{}", d["resource_type"].as_str().unwrap(), d["id"].as_str().unwrap()),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn verify_finds_an_intact_read_model_identical_and_then_exactly_the_damage_done_to_it() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("va").await, app.tenant("vb").await);
    populate(&app, &a).await;
    populate(&app, &b).await;
    app.wait_caught_up(Duration::from_secs(20)).await;

    for t in [&a, &b] {
        let (code, report) = verify(&app, t).await;
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["identical"], true);
        assert_eq!(report["expected"], report["actual"]);
        assert_eq!(report["expected"]["resources"], 10, "{report:#}");
        assert_eq!(report["expected"]["live"], 9);
        assert_eq!(report["expected"]["versions"], 13);
        assert!(report["expected"]["index_rows"].as_u64().unwrap() > 40, "{report:#}");
    }

    let pool = app.db.pool().await;
    let damage = [
        "delete from resources where tenant_id = $1 and resource_type = 'Patient' and id = 'p2'",
        "update resource_versions set resource = jsonb_set(resource, '{gender}', '\"other\"')
         where tenant_id = $1 and resource_type = 'Patient' and id = 'p3'",
        "delete from search_values where tenant_id = $1 and resource_type = 'Observation' and id = 'o1'",
    ];
    for sql in damage {
        sqlx::query(sql).bind(&a).execute(&pool).await.unwrap();
    }

    let (code, report) = verify(&app, &a).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["identical"], false);
    assert_eq!(
        kinds(&report),
        [
            ("Observation/o1".to_owned(), "index".to_owned()),
            ("Patient/p2".to_owned(), "missing".to_owned()),
            ("Patient/p3".to_owned(), "content".to_owned()),
        ]
    );
    assert_eq!(report["total_differences"], 3);
    assert_eq!(report["actual"]["resources"], 9);
    assert_eq!(verify(&app, &b).await.0, 0, "the other tenant is intact");

    let out = cli(&app, &["verify", "--tenant", &a, "--limit", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("3 differences") && human.contains("... and 2 more"), "{human}");
    assert!(human.contains("Observation/o1: index rows differ"), "{human}");

    let out = cli(&app, &["verify", "--tenant", "nobody-here"]).await;
    assert_eq!(out.status.code(), Some(2), "an unknown tenant is an error, not a difference: {}", text(&out));
}

#[tokio::test]
async fn a_replay_restores_the_projected_rows_bit_for_bit_leaves_other_tenants_alone_and_can_run_twice() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("ra").await, app.tenant("rb").await);
    populate(&app, &a).await;
    populate(&app, &b).await;
    app.wait_caught_up(Duration::from_secs(20)).await;
    let (intact_a, intact_b) = (dump(&app, &a).await, dump(&app, &b).await);

    let pool = app.db.pool().await;
    sqlx::query("delete from resource_versions where tenant_id = $1 and id = 'p1' and version = 2")
        .bind(&a)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from search_values where tenant_id = $1").bind(&a).execute(&pool).await.unwrap();
    sqlx::query("update resources set version = 1 where tenant_id = $1 and id = 'o2'")
        .bind(&a)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(verify(&app, &a).await.0, 1);

    let said = replay(&app, &a, &[]).await;
    // p1 (a lost version), o2 (a wrong current row), and every live
    // resource for its index rows; the deleted p4 has none to lose.
    assert!(said.contains("replayed 13 events") && said.contains("(9 resources differed"), "{said}");
    assert_eq!(verify(&app, &a).await.0, 0);
    assert_eq!(dump(&app, &a).await, intact_a, "the replayed rows are the projected rows");
    assert_eq!(dump(&app, &b).await, intact_b, "the other tenant's rows are untouched");

    let said = replay(&app, &a, &["--batch", "3"]).await;
    assert!(said.contains("(0 resources differed"), "{said}");
    assert_eq!(dump(&app, &a).await, intact_a, "a second replay, in other batches, changes nothing");
    let staging: i64 = sqlx::query_scalar("select count(*) from pg_namespace where nspname like 'replay\\_%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(staging, 0, "no staging schema is left behind");
}

/// Writers that PUT, DELETE and commit small transactions on ids of their
/// own until `stop`; returns how many writes succeeded.
fn writers(app: &TestApp, t: &str, stop: &Arc<AtomicBool>, done: &Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|w| {
            let (http, base, stop, done) = (app.http.clone(), app.fhir(t, ""), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{}", i % 7);
                    let req = match i % 6 {
                        5 => http.delete(format!("{base}Patient/{id}")),
                        4 => {
                            let entries: Vec<Value> = (0..3)
                                .map(|k| {
                                    let id = format!("w{w}-t{}", (i + k) % 5);
                                    json!({"resource": patient(&id, "1999-09-09"), "request": {"method": "PUT", "url": format!("Patient/{id}")}})
                                })
                                .collect();
                            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
                            http.post(&base).header("content-type", "application/fhir+json").body(bundle.to_string())
                        }
                        _ => {
                            let body = patient(&id, &format!("19{:02}-02-03", i % 100));
                            http.put(format!("{base}Patient/{id}"))
                                .header("content-type", "application/fhir+json")
                                .body(body.to_string())
                        }
                    };
                    let res = req.header("x-fhirstream-consistency", "eventual").send().await.unwrap();
                    assert!(res.status().is_success(), "write {i} of writer {w}: {}", res.status());
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn a_replay_while_writes_go_on_loses_no_event() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("wa").await, app.tenant("wb").await);
    populate(&app, &a).await;
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let mut running = writers(&app, &a, &stop, &done);
    running.extend(writers(&app, &b, &stop, &done));
    while done.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = done.load(Ordering::Relaxed);
    replay(&app, &a, &["--batch", "7"]).await;
    replay(&app, &a, &["--restart"]).await;
    let during = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for w in running {
        w.await.unwrap();
    }
    assert!(during > 20, "writes went on during the replays ({during})");
    app.wait_caught_up(Duration::from_secs(30)).await;

    for t in [&a, &b] {
        let (code, report) = verify(&app, t).await;
        assert_eq!(code, 0, "{t}: {report:#}");
        app.fold_read_model(t).await.assert_same_as(&app.fold_stream(t).await);
    }
}

#[tokio::test]
async fn a_snapshot_until_a_time_between_two_updates_holds_the_version_current_then() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("sa").await, app.tenant("sb").await);
    populate(&app, &b).await;
    let mut at = Vec::new();
    for (i, birth) in ["1950-05-05", "1960-06-06", "1970-07-07"].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let res = app.put(&a, "Patient/x", &patient("x", birth)).await;
        let body: Value = res.json().await.unwrap();
        let stamp = body["meta"]["lastUpdated"].as_str().unwrap();
        at.push(chrono::DateTime::parse_from_rfc3339(stamp).unwrap());
    }
    app.put(&a, "Patient/y", &patient("y", "1980-08-08")).await;
    let between = at[0] + (at[1] - at[0]) / 2;
    let until = between.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let out = cli(&app, &["replay", "--tenant", &a, "--until", &until]).await;
    assert!(!out.status.success() && text(&out).contains("--into"), "{}", text(&out));

    let pool = app.db.pool().await;
    let snapshot_rows = |schema: &'static str| {
        let pool = pool.clone();
        async move {
            let current: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select tenant_id, id, version from {schema}.resources order by id"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            let birth: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select (lo at time zone 'UTC')::date::text from {schema}.search_values where id = 'x' and param = 'birthdate'"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            (current, birth)
        }
    };

    replay(&app, &a, &["--until", &until, "--into", "mid"]).await;
    let (current, birth) = snapshot_rows("snapshot_mid").await;
    assert_eq!(current, [(a.clone(), "x".to_owned(), 1)], "only x existed then, at version 1; no other tenant");
    assert_eq!(birth, ["1950-05-05"], "the index describes version 1");
    let versions: i64 =
        sqlx::query_scalar("select count(*) from snapshot_mid.resource_versions").fetch_one(&pool).await.unwrap();
    assert_eq!(versions, 1);

    let seq_v2: i64 =
        sqlx::query_scalar("select seq from resource_versions where tenant_id = $1 and id = 'x' and version = 2")
            .bind(&a)
            .fetch_one(&pool)
            .await
            .unwrap();
    replay(&app, &a, &["--until-seq", &seq_v2.to_string(), "--into", "at_v2"]).await;
    assert_eq!(snapshot_rows("snapshot_at_v2").await.0, [(a.clone(), "x".to_owned(), 2)]);

    replay(&app, &a, &["--until", &until, "--into", "mid"]).await;
    assert_eq!(
        snapshot_rows("snapshot_mid").await,
        (vec![(a.clone(), "x".to_owned(), 1)], vec!["1950-05-05".to_owned()])
    );
    let live: i64 = sqlx::query_scalar("select version from resources where tenant_id = $1 and id = 'x'")
        .bind(&a)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 3, "a snapshot never touches the live model");
    assert_eq!(verify(&app, &a).await.0, 0);
}

#[tokio::test]
async fn the_api_serves_a_snapshot_read_only_and_only_to_its_own_tenant() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("sa").await, app.tenant("sb").await);
    let first: Value = app.put(&a, "Patient/x", &patient("x", "1950-05-05")).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let second: Value = app.put(&a, "Patient/x", &patient("x", "1960-06-06")).await.json().await.unwrap();
    app.put(&a, "Patient/y", &patient("y", "1980-08-08")).await;
    let stamp = |v: &Value| chrono::DateTime::parse_from_rfc3339(v["meta"]["lastUpdated"].as_str().unwrap()).unwrap();
    let (t1, t2) = (stamp(&first), stamp(&second));
    let until = (t1 + (t2 - t1) / 2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    replay(&app, &a, &["--until", &until, "--into", "then"]).await;

    let snap = |path: &str| format!("_snapshot/then/{path}");
    let res = app.get(&a, &snap("Patient/x")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"1\"");
    let x: Value = res.json().await.unwrap();
    assert_eq!(x["birthDate"], "1950-05-05", "the version current then");
    support::assert_outcome(app.get(&a, &snap("Patient/y")).await, 404).await;
    let found: Value = app.get(&a, &snap("Patient?birthdate=1950-05-05")).await.json().await.unwrap();
    assert_eq!(found["total"], 1, "{found}");
    let url = found["entry"][0]["fullUrl"].as_str().unwrap();
    assert!(url.ends_with(&format!("/fhir/{a}/_snapshot/then/Patient/x")), "{url}");
    let found: Value = app.get(&a, &snap("Patient?birthdate=1960-06-06")).await.json().await.unwrap();
    assert_eq!(found["total"], 0, "the live model's version is not in the snapshot");
    let history: Value = app.get(&a, &snap("Patient/x/_history")).await.json().await.unwrap();
    assert_eq!(history["total"], 1);
    assert_eq!(app.get(&a, &snap("Patient/x/_history/1")).await.status(), 200);
    support::assert_outcome(app.get(&a, &snap("Patient/x/_history/2")).await, 404).await;
    // The live model is untouched.
    let live: Value = app.get(&a, "Patient/x").await.json().await.unwrap();
    assert_eq!(live["birthDate"], "1960-06-06");

    // Read-only: every write is refused and writes nothing.
    let before = app.stream_count("fhir.>").await;
    let url = app.fhir(&a, &snap("Patient/x"));
    let res = app.authed(app.http.put(&url)).json(&patient("x", "2000-01-01")).send().await.unwrap();
    support::assert_outcome(res, 405).await;
    let res = app.authed(app.http.delete(&url)).send().await.unwrap();
    support::assert_outcome(res, 405).await;
    let res = app.authed(app.http.post(app.fhir(&a, &snap("Patient")))).json(&patient("z", "2000-01-01"));
    support::assert_outcome(res.send().await.unwrap(), 405).await;
    assert_eq!(app.stream_count("fhir.>").await, before);

    // Another tenant cannot address it: the same 404 as a snapshot that
    // does not exist, and its own data never comes from it.
    let theirs = support::assert_outcome(app.get(&b, &snap("Patient/x")).await, 404).await;
    let none = support::assert_outcome(app.get(&a, "_snapshot/never/Patient/x").await, 404).await;
    assert_eq!(theirs, none);
    support::assert_outcome(app.get(&b, &snap("Patient?birthdate=1950-05-05")).await, 404).await;
    support::assert_outcome(app.get(&a, "_snapshot/Bad-Name/Patient/x").await, 404).await;
    // The shared space has no snapshots: never live data at a snapshot URL.
    let res = app.put("shared", "Practitioner/sp", &json!({"resourceType": "Practitioner", "id": "sp"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.get("shared", "Practitioner/sp").await.status(), 200);
    support::assert_outcome(app.get("shared", "_snapshot/then/Practitioner/sp").await, 404).await;
    // Row-level security guards the snapshot's tables as it does the live ones.
    let pool = app.db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("set local role fhirstream_reader").execute(&mut *tx).await.unwrap();
    sqlx::query("select set_config('app.tenant', $1, true)").bind(&b).execute(&mut *tx).await.unwrap();
    let seen: i64 =
        sqlx::query_scalar("select count(*) from snapshot_then.resources").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seen, 0, "tenant b's transaction sees none of a's snapshot rows");
}

#[tokio::test]
async fn a_replay_killed_midway_resumes_from_its_staging_checkpoint() {
    let app = TestApp::spawn().await;
    let t = app.tenant("resume").await;
    // Batch Bundles: every entry its own commit, so the replay can stop
    // between any two events.
    for part in 0..2 {
        let entries: Vec<Value> = (0..500)
            .map(|i| {
                let id = format!("r{part}-{i}");
                json!({"resource": patient(&id, "1990-01-01"), "request": {"method": "PUT", "url": format!("Patient/{id}")}})
            })
            .collect();
        send(app.http.post(app.fhir(&t, "")), &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}))
            .await;
    }
    app.wait_caught_up(Duration::from_secs(30)).await;
    let intact = dump(&app, &t).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["replay", "--tenant", &t, "--quiet", "--batch", "2", "--log", "error"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pool = app.db.pool().await;
    let staged = loop {
        assert!(child.try_wait().unwrap().is_none(), "the replay finished before it could be interrupted");
        let schema: Option<String> =
            sqlx::query_scalar("select nspname::text from pg_namespace where nspname like 'replay\\_%'")
                .fetch_optional(&pool)
                .await
                .unwrap();
        let seq: Option<i64> = match schema {
            Some(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select seq from {s}.projector_checkpoints")))
                .fetch_optional(&pool)
                .await
                .unwrap_or(None),
            None => None,
        };
        if seq.is_some_and(|s| s > 0) {
            break seq.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().await.unwrap();

    let said = replay(&app, &t, &[]).await;
    assert!(said.contains("resumed after sequence"), "staged up to {staged} before the kill: {said}");
    assert_eq!(dump(&app, &t).await, intact);
    assert_eq!(verify(&app, &t).await.0, 0);
}
