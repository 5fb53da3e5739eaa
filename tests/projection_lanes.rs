//! Several writers of the read model at once: projector lanes, and writes
//! that apply their own events for read-your-writes. The batch function is
//! order-independent (migration 0009), so whatever order events arrive in,
//! the read model is the fold of the stream.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use projector::apply::Sequenced;
use projector::store::{self, Checkpoint};
use schemas::{Actor, Commit, EventOp, ResourceEvent, ResourceId, ResourceType, TenantId, Version};
use serde_json::{Value, json};
use support::{TestApp, TestDb};

fn patient(tenant: &str, id: &str, version: u64, family: &str) -> ResourceEvent {
    let body = json!({"resourceType": "Patient", "id": id, "meta": {"versionId": version.to_string()},
                      "name": [{"family": family}]});
    ResourceEvent {
        schema: schemas::event::RESOURCE_EVENT_SCHEMA.into(),
        event_id: uuid::Uuid::now_v7(),
        tenant: TenantId::parse(tenant).unwrap(),
        resource_type: ResourceType::parse("Patient").unwrap(),
        id: ResourceId::parse(id).unwrap(),
        version: Version::new(version).unwrap(),
        op: if version == 1 { EventOp::Create } else { EventOp::Update },
        at: schemas::event::now(),
        actor: Actor::default(),
        commit: Commit::single(uuid::Uuid::now_v7()),
        resource: Some(serde_json::value::to_raw_value(&body).unwrap()),
    }
}

async fn families(pool: &sqlx::PgPool, tenant: &str, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select text_exact from search_values where tenant_id = $1 and resource_type = 'Patient' and id = $2
         and param = 'family' order by 1",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_older_version_applied_after_a_newer_one_leaves_the_newer_current_with_only_its_index() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    projector::migrate::run(&pool).await.unwrap();
    let at = Checkpoint::Outside { label: "test" };
    let (v1, v2) = (patient("acme", "p1", 1, "Older"), patient("acme", "p1", 2, "Newer"));

    store::apply_batch(&pool, at, &[Sequenced::new(2, v2.clone())], 0, 0).await.unwrap();
    store::apply_batch(&pool, at, &[Sequenced::new(1, v1)], 0, 0).await.unwrap();
    let current: (i64, i64) =
        sqlx::query_as("select version, seq from resources where tenant_id = 'acme' and id = 'p1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(current, (2, 2));
    assert_eq!(families(&pool, "acme", "p1").await, ["Newer"]);
    let versions: i64 = sqlx::query_scalar("select count(*) from resource_versions where tenant_id = 'acme'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(versions, 2, "the older version is still history");

    // The same event again (the projector after a direct apply) changes nothing.
    store::apply_batch(&pool, at, &[Sequenced::new(2, v2)], 0, 0).await.unwrap();
    assert_eq!(families(&pool, "acme", "p1").await, ["Newer"], "no index row doubled");
}

#[tokio::test]
async fn two_writers_applying_versions_of_one_resource_at_once_leave_the_newest() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    projector::migrate::run(&pool).await.unwrap();
    let at = Checkpoint::Outside { label: "test" };
    for round in 0..20u64 {
        let id = format!("r{round}");
        let older = Sequenced::new(1, patient("acme", &id, 1, "Older"));
        let newer = Sequenced::new(2, patient("acme", &id, 2, "Newer"));
        let older = async { store::apply_batch(&pool, at, std::slice::from_ref(&older), 0, 0).await };
        let newer = async { store::apply_batch(&pool, at, std::slice::from_ref(&newer), 0, 0).await };
        let (a, b) = tokio::join!(older, newer);
        a.unwrap();
        b.unwrap();
        assert_eq!(families(&pool, "acme", &id).await, ["Newer"], "round {round}");
    }
}

#[tokio::test]
async fn a_write_is_readable_and_searchable_when_it_answers_even_with_no_projector_running() {
    // No projector role: waiting for one would time out ("pending").
    let app = TestApp::spawn_with(|cfg| {
        cfg.roles = vec![fhirstream::config::Role::Command, fhirstream::config::Role::Query];
    })
    .await;
    let t = app.tenant("ryw").await;
    let res = app.post(&t, "Patient", &json!({"resourceType": "Patient", "name": [{"family": "Direct"}]})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-fhirstream-projection"], "applied");
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let read = app.get(&t, &format!("Patient/{id}")).await;
    assert_eq!(read.status(), 200);
    let found: Value = app.get(&t, "Patient?family=Direct").await.json().await.unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], id);

    // A neighbour tenant sees none of it, by id or by search.
    let other = app.tenant("ryw-other").await;
    assert_eq!(app.get(&other, &format!("Patient/{id}")).await.status(), 404);
    let none: Value = app.get(&other, "Patient?family=Direct").await.json().await.unwrap();
    assert_eq!(none["total"], 0);

    // A transaction's entries are applied together before it answers.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": "Txn"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:1"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    let res = app
        .authed(app.http.post(app.fhir(&t, "")))
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-fhirstream-projection"], "applied");
    let chained: Value = app.get(&t, "Observation?subject:Patient.family=Txn").await.json().await.unwrap();
    assert_eq!(chained["total"], 1);
}

#[tokio::test]
async fn a_backlog_applied_in_lanes_leaves_the_fold_of_the_stream_with_one_index_row_per_current_value() {
    // The server runs no projector while eight writers update three
    // patients each (eventual writes: no direct apply), so a backlog builds up;
    // then a projector process with four lanes applies it in large batches,
    // with versions of one resource spread over several of them.
    let app = TestApp::spawn_with(|cfg| {
        cfg.roles = vec![fhirstream::config::Role::Command, fhirstream::config::Role::Query];
    })
    .await;
    let t = app.tenant("lanes").await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (http, base) = (app.http.clone(), app.fhir(&t, ""));
            tokio::spawn(async move {
                for i in 0..40u32 {
                    let id = format!("p{w}-{}", i % 3);
                    let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("F{w}x{i}")}]});
                    let res = http
                        .put(format!("{base}Patient/{id}"))
                        .header("content-type", "application/fhir+json")
                        .header("x-fhirstream-consistency", "eventual")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert!(res.status().is_success(), "{}", res.status());
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut projector = std::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["serve", "--roles", "projector", "--listen", "127.0.0.1:0"])
        .args(["--projector-lanes", "4", "--projector-batch", "1000"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    app.wait_caught_up(Duration::from_secs(60)).await;
    projector.kill().unwrap();
    projector.wait().unwrap();

    app.fold_read_model(&t).await.assert_same_as(&app.fold_stream(&t).await);
    let pool = app.db.pool().await;
    for n in 0..24 {
        let id = format!("p{}-{}", n / 3, n % 3);
        let current: Value = app.get(&t, &format!("Patient/{id}")).await.json().await.unwrap();
        let family = current["name"][0]["family"].as_str().unwrap().to_owned();
        assert_eq!(families(&pool, &t, &id).await, [family], "{id}: the current version's value, once");
    }
}
