//! Fair shares of the resources tenants share: one tenant exhausting its
//! share of atomic batches (many transactions at once, or transactions
//! whose entries are too large to publish) leaves another tenant's
//! transactions unaffected.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use support::TestApp;

/// A transaction creating `n` Patients (two or more commit as one atomic batch).
fn transaction(n: usize, family: &str) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|_| {
            json!({"resource": {"resourceType": "Patient", "name": [{"family": family}]},
                   "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn send(app: &TestApp, tenant: &str, bundle: &Value) -> (u16, Option<String>, String) {
    let res = app.authed(app.http.post(app.fhir(tenant, ""))).json(bundle).send().await.unwrap();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), retry, res.text().await.unwrap())
}

#[tokio::test]
async fn transactions_with_an_entry_too_large_to_publish_leave_no_batch_open_for_other_tenants() {
    // NATS's default payload limit (1 MB) under the 8 MB request limit: a
    // transaction can carry an entry too large for one event.
    let app = TestApp::spawn_on(support::TestNats::start_with_config(&[], "max_payload: 1MB"), |_| {}).await;
    let (a, b) = (app.tenant("oversize").await, app.tenant("neighbour").await);
    // The second entry exceeds NATS's 1 MB payload limit, below the 8 MB
    // request limit. Opened first, such a batch would stay open on the
    // server until its timeout; 60 of them would exhaust the stream's ~50.
    let big = "x".repeat(1_200_000);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "small"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": big}]}, "request": {"method": "POST", "url": "Patient"}}
    ]});
    let attacks = futures::future::join_all((0..60).map(|_| send(&app, &a, &bundle))).await;
    for (status, _, body) in &attacks {
        assert_eq!(*status, 413, "{body}");
        assert!(body.contains("OperationOutcome"));
    }
    let quiet = transaction(2, "Quiet");
    let ok = futures::future::join_all((0..10).map(|_| send(&app, &b, &quiet))).await;
    for (status, _, body) in ok {
        assert_eq!(status, 200, "the neighbour's transaction: {body}");
    }
}

#[tokio::test]
async fn a_tenant_flooding_transactions_holds_only_its_share_of_batches_and_a_neighbour_always_gets_one() {
    let app = TestApp::spawn_with(|cfg| {
        cfg.limits.max_open_batches = 2;
        cfg.limits.tenant_open_batches = 1;
        // No queueing to speak of: a batch that cannot get a slot at once is refused.
        cfg.limits.batch_slot_wait_ms = 1;
    })
    .await;
    let (a, b) = (app.tenant("flood").await, app.tenant("calm").await);
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (app, a, stop) = (app.clone(), a.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match send(&app, &a, &transaction(3, "Flood")).await {
                    (200, _, _) => ok += 1,
                    (503, retry, body) => {
                        assert_eq!(retry.as_deref(), Some("1"), "{body}");
                        refused += 1;
                    }
                    (status, _, body) => panic!("{status}: {body}"),
                }
            }
            (ok, refused)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 0..15 {
        let (status, _, body) = send(&app, &b, &transaction(2, "Calm")).await;
        assert_eq!(status, 200, "the neighbour's transaction {i} while the flood goes on: {body}");
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for f in flood {
        let (o, r) = f.await.unwrap();
        (ok, refused) = (ok + o, refused + r);
    }
    assert!(ok > 0, "the flooding tenant still gets its share");
    assert!(refused > 0, "and is refused beyond it ({ok} committed)");
}

/// A request of `tenant` that stays in flight while the returned socket is
/// open: its body never finishes arriving.
async fn held_request(app: &TestApp, tenant: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let addr = app.base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /fhir/{tenant}/Patient HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/fhir+json\r\n\
         content-length: 1000\r\n\r\n{{\"resourceType\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

#[tokio::test]
async fn a_tenant_at_its_share_of_requests_in_flight_gets_429_while_a_neighbour_is_served() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_max_concurrent_requests = 2).await;
    let (a, b) = (app.tenant("busy").await, app.tenant("idle").await);
    let _held = [held_request(&app, &a).await, held_request(&app, &a).await];
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let res = app.get(&a, "Patient/x").await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    support::assert_outcome(res, 429).await;
    assert_eq!(app.get(&b, "Patient/x").await.status(), 404, "the neighbour is served (nothing there)");
    drop(_held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.get(&a, "Patient/x").await.status(), 404, "the share comes back with the requests");
}

#[tokio::test]
async fn a_tenant_at_its_share_of_change_feeds_gets_429_while_a_neighbour_opens_one() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_max_feeds = 2).await;
    let (a, b) = (app.tenant("feeds").await, app.tenant("one-feed").await);
    let open = |t: String| {
        let app = &app;
        async move { app.authed(app.http.get(app.fhir(&t, "$events"))).send().await.unwrap() }
    };
    let _feeds = [open(a.clone()).await, open(a.clone()).await];
    assert!(_feeds.iter().all(|f| f.status() == 200));
    let third = open(a.clone()).await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    assert_eq!(open(b.clone()).await.status(), 200, "the neighbour's feed opens");
}

#[tokio::test]
async fn a_tenant_running_its_share_of_exports_gets_429_while_a_neighbour_starts_one() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_max_exports = 1).await;
    let (a, b) = (app.tenant("exporter").await, app.tenant("exporter-b").await);
    // Enough data that the first export is still running when the second asks.
    let (status, _, body) = send(&app, &a, &transaction(1000, "Bulk")).await;
    assert_eq!(status, 200, "{body}");
    app.wait_caught_up(std::time::Duration::from_secs(60)).await;
    let kick = |t: String| {
        let app = &app;
        async move {
            app.authed(app.http.get(app.fhir(&t, "$export"))).header("prefer", "respond-async").send().await.unwrap()
        }
    };
    let (first, second) = tokio::join!(kick(a.clone()), kick(a.clone()));
    let mut codes = [first.status().as_u16(), second.status().as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [202, 429], "one export per tenant at a time");
    assert_eq!(kick(b.clone()).await.status(), 202, "the neighbour's export starts");
}

#[tokio::test]
async fn every_reader_connection_carries_the_configured_statement_timeout() {
    let app = TestApp::spawn().await;
    let t = schemas::TenantId::parse(&app.tenant("timeout").await).unwrap();
    let queries = query::Queries::connect_with(&app.db.url, 1, std::time::Duration::from_millis(1234)).await.unwrap();
    let direct: String = sqlx::query_scalar("show statement_timeout").fetch_one(queries.pool()).await.unwrap();
    assert_eq!(direct, "1234ms", "plain reads on the pool");
    let mut tx = queries.begin(&t).await.unwrap();
    let scoped: String = sqlx::query_scalar("show statement_timeout").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(scoped, "1234ms", "tenant transactions (history, _at, conditional lookups, export)");
    // A statement past the bound is cancelled, which the query side reports
    // as unavailable (503), never as an internal error.
    let err = sqlx::query("select pg_sleep(2)").execute(&mut *tx).await.unwrap_err();
    assert!(matches!(query::QueryError::from(err), query::QueryError::Unavailable(_)));
}

#[tokio::test]
async fn a_resource_whose_index_rows_exceed_the_cap_is_refused_before_it_reaches_the_projector() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.max_index_rows = 100).await;
    let (a, b) = (app.tenant("huge-index").await, app.tenant("small-index").await);
    let ids: Vec<Value> = (0..500).map(|i| json!({"system": "urn:x", "value": format!("v{i}")})).collect();
    let huge = json!({"resourceType": "Patient", "id": "huge", "identifier": ids});
    let body = support::assert_outcome(app.put(&a, "Patient/huge", &huge).await, 413).await;
    assert!(body.contains("search index rows"), "{body}");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "ok"}, "request": {"method": "PUT", "url": "Patient/ok"}},
        {"resource": huge, "request": {"method": "PUT", "url": "Patient/huge"}}
    ]});
    let (status, _, body) = send(&app, &a, &bundle).await;
    assert_eq!(status, 413, "{body}");
    let before = app.stream_count(&format!("fhir.{a}.>")).await;
    assert_eq!(before, 0, "nothing of the refused writes reached the stream");

    let small = json!({"resourceType": "Patient", "id": "s", "identifier": [{"system": "urn:x", "value": "1"}]});
    let res = app.put(&b, "Patient/s", &small).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.get(&b, "Patient/s").await.status(), 200, "the neighbour reads its write at once");
}

#[tokio::test]
async fn a_tenants_own_quota_overrides_the_node_default_both_ways() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_max_feeds = 2).await;
    let create = |id: String, feeds: usize| {
        let app = &app;
        async move {
            let doc = json!({"id": id, "name": "Quota", "config": {"quotas": {"feeds": feeds}}});
            let res = app.authed(app.http.post(app.url("/admin/tenants"))).json(&doc).send().await.unwrap();
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            id
        }
    };
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (low, high) = (create(format!("low-{suffix}"), 1).await, create(format!("high-{suffix}"), 3).await);
    let mut low_feeds = Vec::new();
    for _ in 0..2 {
        low_feeds.push(app.authed(app.http.get(app.fhir(&low, "$events"))).send().await.unwrap());
    }
    assert_eq!(low_feeds.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>(), [200, 429], "lowered to 1");
    let mut high_feeds = Vec::new();
    for _ in 0..4 {
        high_feeds.push(app.authed(app.http.get(app.fhir(&high, "$events"))).send().await.unwrap());
    }
    let codes: Vec<u16> = high_feeds.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes, [200, 200, 200, 429], "raised to 3");
    let bad = json!({"id": format!("zero-{suffix}"), "name": "Zero", "config": {"quotas": {"feeds": 0}}});
    let res = app.authed(app.http.post(app.url("/admin/tenants"))).json(&bad).send().await.unwrap();
    assert_eq!(res.status(), 400, "a quota of 0 is refused");
}

#[tokio::test]
async fn metrics_and_ready_can_listen_apart_from_the_fhir_api() {
    let port = support::free_port();
    let app = TestApp::spawn_with(|cfg| cfg.ops_listen = Some(format!("127.0.0.1:{port}").parse().unwrap())).await;
    let t = app.tenant("ops").await;
    assert_eq!(app.put(&t, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    let ops = |path: &str| app.http.get(format!("http://127.0.0.1:{port}{path}")).send();
    let metrics = ops("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("fhirstream_http_requests_total"));
    app.wait_caught_up(std::time::Duration::from_secs(20)).await;
    assert_eq!(ops("/ready").await.unwrap().status(), 200);
    assert_eq!(ops("/health").await.unwrap().status(), 200);
    let api_path = format!("/fhir/{t}/Patient/p");
    assert_eq!(ops(&api_path).await.unwrap().status(), 404, "no FHIR API on the operations address");
    for path in ["/metrics", "/ready"] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path} is not on the API address");
    }
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn per_tenant_usage_is_counted_in_hashed_buckets_that_never_name_a_tenant() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.tenant_usage_buckets = 4).await;
    let (a, b) = (app.tenant("usage-a").await, app.tenant("usage-b").await);
    for _ in 0..3 {
        assert_eq!(app.get(&a, "Patient/none").await.status(), 404);
    }
    assert_eq!(app.put(&b, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let bucket = |t: &str| schemas::quota::usage_bucket(&schemas::TenantId::parse(t).unwrap(), 4).unwrap();
    let line = format!("fhirstream_tenant_usage_requests_total{{bucket=\"b{}\",class=\"4xx\"}}", bucket(&a));
    let count: u64 = metrics
        .lines()
        .find(|l| l.starts_with(&line))
        .unwrap_or_else(|| panic!("{line} in {metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 3, "{count}");
    let line = format!("fhirstream_tenant_usage_requests_total{{bucket=\"b{}\",class=\"2xx\"}}", bucket(&b));
    assert!(metrics.lines().any(|l| l.starts_with(&line)), "{line}");
    let buckets: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fhirstream_tenant_usage_requests_total{"))
        .filter_map(|l| l.split("bucket=\"").nth(1)?.split('"').next())
        .collect();
    assert!(buckets.len() <= 4, "{buckets:?}");
    assert!(!metrics.contains(&a) && !metrics.contains(&b), "metrics never name a tenant");
}

#[tokio::test]
async fn finished_exports_expire_and_their_files_are_removed() {
    let dir = std::env::temp_dir().join(format!("fhirstream-expiry-{}", uuid::Uuid::new_v4().simple()));
    let app = TestApp::spawn_with(|cfg| {
        cfg.export.export_dir = Some(dir.clone());
        cfg.export.export_retention_secs = 1;
    })
    .await;
    let t = app.tenant("expiring").await;
    assert_eq!(app.put(&t, "Patient/p", &json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
    app.wait_caught_up(std::time::Duration::from_secs(20)).await;
    let res = app.authed(app.http.get(app.fhir(&t, "$export"))).header("prefer", "respond-async").send().await.unwrap();
    assert_eq!(res.status(), 202);
    let status = res.headers()["content-location"].to_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut completed = false;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the export neither completed nor expired");
        match app.authed(app.http.get(&status)).send().await.unwrap().status().as_u16() {
            200 => completed = true,
            404 if completed => break,
            202 | 404 => {}
            other => panic!("{other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = std::fs::read_dir(dir.join(&t)).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the expired job's files are gone");
    let _ = std::fs::remove_dir_all(&dir);
}
