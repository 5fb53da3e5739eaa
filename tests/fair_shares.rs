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
    let app = TestApp::spawn().await;
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
