//! Property: whatever interleaving of writes many clients send, every
//! resource's history is linearisable. proptest generates programs of
//! creates and updates (`PUT`, with and without `If-Match`), deletes,
//! transaction Bundles and conditional creates over a few ids, runs each
//! program's clients concurrently against one real server (one tenant per
//! case), and then checks what the clients were told against what the
//! server kept:
//!
//! - each resource's versions are exactly the acknowledged ones, 1..n with
//!   no gap, and each holds the body of the write that was acknowledged at
//!   it (so no version was handed out twice and none was invented);
//! - an acknowledged `If-Match` update is the version after the one it named
//!   (no lost update);
//! - each identifier's conditional creates created exactly one resource and
//!   every one of them was told its id;
//! - the current read is the last acknowledged write, or 410 after a delete.
//!
//! Every answer must be an acknowledgement or a definite refusal (409, 412,
//! or 404/410 for an `If-Match` on a missing resource); anything else fails
//! the case, since it would leave the client unsure what was written.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use support::TestApp;

const IDS: u8 = 4;
const KEYS: u8 = 2;
const CLIENTS: usize = 4;
const CASES: u32 = 32;

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    /// Reads the resource, then updates it with `If-Match` on what it read.
    PutIfMatch(u8),
    Delete(u8),
    /// One transaction that `PUT`s each of these ids.
    Transaction(Vec<u8>),
    ConditionalCreate(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..IDS).prop_map(Op::Put),
        3 => (0..IDS).prop_map(Op::PutIfMatch),
        1 => (0..IDS).prop_map(Op::Delete),
        2 => prop::collection::btree_set(0..IDS, 1..=3).prop_map(|ids| Op::Transaction(ids.into_iter().collect())),
        1 => (0..KEYS).prop_map(Op::ConditionalCreate),
    ]
}

fn program() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 4..16), CLIENTS)
}

/// An acknowledged write: the version it got, and the marker its body
/// carried (`None` for a delete).
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    version: u64,
    marker: Option<String>,
    /// The version an `If-Match` named.
    based_on: Option<u64>,
}

/// What one client was told.
#[derive(Debug, Default)]
struct Told {
    acked: Vec<Acked>,
    /// Conditional creates: (key, status, id of the resource).
    conditional: Vec<(u8, u16, String)>,
    /// Writes refused with 409 or 412.
    refused: usize,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

fn id(n: u8) -> String {
    format!("p{n}")
}

fn patient(id: Option<&str>, marker: &str) -> Value {
    let mut p = json!({"resourceType": "Patient", "name": [{"text": marker}]});
    if let Some(id) = id {
        p["id"] = id.into();
    }
    p
}

fn etag_version(s: &str) -> Option<u64> {
    s.trim_start_matches("W/").trim_matches('"').parse().ok()
}

fn header_version(res: &reqwest::Response) -> Option<u64> {
    etag_version(res.headers().get("etag")?.to_str().ok()?)
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        req.send().await.map_err(|e| format!("no answer: {e}"))
    }

    /// Runs one client's program; an answer that is neither an
    /// acknowledgement nor a definite refusal is an error.
    async fn run(self, client: usize, ops: Vec<Op>) -> Result<Told, String> {
        let mut told = Told::default();
        for (n, op) in ops.into_iter().enumerate() {
            let marker = format!("c{client}-o{n}");
            let fhir = |req: reqwest::RequestBuilder, body: &Value| {
                req.header("content-type", "application/fhir+json").body(body.to_string())
            };
            match op {
                Op::Put(i) => {
                    let res = self
                        .send(fhir(
                            self.http.put(self.url(&format!("Patient/{}", id(i)))),
                            &patient(Some(&id(i)), &marker),
                        ))
                        .await?;
                    match res.status().as_u16() {
                        200 | 201 => told.acked.push(Acked {
                            id: id(i),
                            version: need_version(&res)?,
                            marker: Some(marker),
                            based_on: None,
                        }),
                        409 | 412 => told.refused += 1,
                        s => {
                            return Err(format!(
                                "PUT {} answered {s}: {}",
                                id(i),
                                res.text().await.unwrap_or_default()
                            ));
                        }
                    }
                }
                Op::PutIfMatch(i) => {
                    let read = self.send(self.http.get(self.url(&format!("Patient/{}", id(i))))).await?;
                    let Some(seen) = header_version(&read).filter(|_| read.status() == 200) else { continue };
                    let req = self
                        .http
                        .put(self.url(&format!("Patient/{}", id(i))))
                        .header("if-match", format!("W/\"{seen}\""));
                    let res = self.send(fhir(req, &patient(Some(&id(i)), &marker))).await?;
                    match res.status().as_u16() {
                        200 | 201 => told.acked.push(Acked {
                            id: id(i),
                            version: need_version(&res)?,
                            marker: Some(marker),
                            based_on: Some(seen),
                        }),
                        409 | 412 => told.refused += 1,
                        404 | 410 => {}
                        s => {
                            return Err(format!(
                                "PUT If-Match {} answered {s}: {}",
                                id(i),
                                res.text().await.unwrap_or_default()
                            ));
                        }
                    }
                }
                Op::Delete(i) => {
                    let res = self.send(self.http.delete(self.url(&format!("Patient/{}", id(i))))).await?;
                    match res.status().as_u16() {
                        // No ETag: there was nothing to delete, nothing was written.
                        200 | 204 => {
                            if let Some(version) = header_version(&res) {
                                told.acked.push(Acked { id: id(i), version, marker: None, based_on: None });
                            }
                        }
                        409 | 412 => told.refused += 1,
                        s => return Err(format!("DELETE {} answered {s}", id(i))),
                    }
                }
                Op::Transaction(ids) => {
                    let entries: Vec<Value> = ids
                        .iter()
                        .map(|i| json!({"resource": patient(Some(&id(*i)), &marker), "request": {"method": "PUT", "url": format!("Patient/{}", id(*i))}}))
                        .collect();
                    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
                    let res = self.send(fhir(self.http.post(self.base.clone()), &bundle)).await?;
                    match res.status().as_u16() {
                        200 => {
                            let body: Value = res.json().await.map_err(|e| e.to_string())?;
                            for (i, entry) in ids.iter().zip(body["entry"].as_array().cloned().unwrap_or_default()) {
                                let version = entry["response"]["etag"].as_str().and_then(etag_version);
                                let version =
                                    version.ok_or_else(|| format!("a transaction entry without an etag: {entry}"))?;
                                told.acked.push(Acked {
                                    id: id(*i),
                                    version,
                                    marker: Some(marker.clone()),
                                    based_on: None,
                                });
                            }
                        }
                        409 | 412 => told.refused += 1,
                        s => {
                            return Err(format!(
                                "transaction {ids:?} answered {s}: {}",
                                res.text().await.unwrap_or_default()
                            ));
                        }
                    }
                }
                Op::ConditionalCreate(k) => {
                    let mut body = patient(None, &marker);
                    body["identifier"] = json!([{"system": "urn:prop", "value": format!("k{k}")}]);
                    let req = self
                        .http
                        .post(self.url("Patient"))
                        .header("if-none-exist", format!("identifier=urn:prop|k{k}"));
                    let res = self.send(fhir(req, &body)).await?;
                    let status = res.status().as_u16();
                    let location = res.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
                    let body: Value = res.json().await.unwrap_or_default();
                    match status {
                        200 | 201 => {
                            let rid = body["id"].as_str().map(str::to_owned).or_else(|| {
                                location.and_then(|l| {
                                    l.split("/Patient/")
                                        .nth(1)
                                        .map(|r| r.split('/').next().unwrap_or_default().to_owned())
                                })
                            });
                            told.conditional.push((k, status, rid.ok_or("a conditional create named no resource")?));
                        }
                        409 | 412 => told.refused += 1,
                        s => return Err(format!("conditional create k{k} answered {s}: {body}")),
                    }
                }
            }
        }
        Ok(told)
    }

    /// The versions of a resource's history, oldest first, with their markers.
    async fn history(&self, id: &str) -> Result<Vec<(u64, Option<String>)>, String> {
        let res = self.send(self.http.get(self.url(&format!("Patient/{id}/_history?_count=1000")))).await?;
        if res.status() == 404 {
            return Ok(Vec::new());
        }
        let body: Value = res.json().await.map_err(|e| e.to_string())?;
        let mut versions: Vec<(u64, Option<String>)> = body["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let v = e["response"]["etag"].as_str().and_then(etag_version).unwrap_or(0);
                (v, e["resource"]["name"][0]["text"].as_str().map(str::to_owned))
            })
            .collect();
        versions.sort();
        Ok(versions)
    }
}

fn need_version(res: &reqwest::Response) -> Result<u64, String> {
    header_version(res).ok_or_else(|| format!("an acknowledgement ({}) without an ETag", res.status()))
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

/// Totals over all cases, for the report.
#[derive(Debug, Default)]
struct Tally {
    acked: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
}

async fn run_case(app: &TestApp, program: Vec<Vec<Op>>, tally: &Tally) -> Result<(), TestCaseError> {
    use std::sync::atomic::Ordering::Relaxed;
    let t = app.tenant("prop").await;
    let client = Client { http: app.http.clone(), base: format!("{}/fhir/{t}", app.base) };
    let tasks: Vec<_> =
        program.into_iter().enumerate().map(|(n, ops)| tokio::spawn(client.clone().run(n, ops))).collect();
    let mut acked: BTreeMap<String, Vec<Acked>> = BTreeMap::new();
    let mut conditional: BTreeMap<u8, Vec<(u16, String)>> = BTreeMap::new();
    for task in tasks {
        let told = task.await.map_err(|e| fail(e.to_string()))?.map_err(fail)?;
        tally.acked.fetch_add(told.acked.len() + told.conditional.len(), Relaxed);
        tally.refused.fetch_add(told.refused, Relaxed);
        for a in told.acked {
            acked.entry(a.id.clone()).or_default().push(a);
        }
        for (k, status, rid) in told.conditional {
            conditional.entry(k).or_default().push((status, rid));
        }
    }

    for (rid, writes) in &mut acked {
        writes.sort_by_key(|a| a.version);
        let want: Vec<(u64, Option<String>)> = writes.iter().map(|a| (a.version, a.marker.clone())).collect();
        let numbers: Vec<u64> = (1..=writes.len() as u64).collect();
        let got_numbers: Vec<u64> = writes.iter().map(|a| a.version).collect();
        prop_assert_eq!(&got_numbers, &numbers, "{}: acknowledged versions are not 1..n, each once", rid);
        for a in writes.iter().filter(|a| a.based_on.is_some()) {
            prop_assert_eq!(Some(a.version - 1), a.based_on, "{}: a lost update: {:?}", rid, a);
        }
        // The projection may trail the last acknowledgement a little.
        let deadline = Instant::now() + Duration::from_secs(10);
        let history = loop {
            let history = client.history(rid).await.map_err(fail)?;
            if history.len() >= want.len() || Instant::now() > deadline {
                break history;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        prop_assert_eq!(&history, &want, "{}: the history is not what was acknowledged", rid);

        let last = writes.last().unwrap();
        let res = client.send(client.http.get(client.url(&format!("Patient/{rid}")))).await.map_err(fail)?;
        match &last.marker {
            None => prop_assert_eq!(res.status().as_u16(), 410, "{}: read after an acknowledged delete", rid),
            Some(marker) => {
                prop_assert_eq!(header_version(&res), Some(last.version), "{}: current version", rid);
                let body: Value = res.json().await.map_err(|e| fail(e.to_string()))?;
                prop_assert_eq!(body["name"][0]["text"].as_str(), Some(marker.as_str()), "{}: current body", rid);
            }
        }
    }
    // Ids no acknowledged write touched must have no history either.
    for i in 0..IDS {
        if !acked.contains_key(&id(i)) {
            prop_assert!(
                client.history(&id(i)).await.map_err(fail)?.is_empty(),
                "{} has unacknowledged versions",
                id(i)
            );
        }
    }

    for (k, answers) in &conditional {
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        let ids: BTreeSet<&String> = answers.iter().map(|(_, rid)| rid).collect();
        prop_assert_eq!(created, 1, "k{}: conditional creates that created: {:?}", k, answers);
        prop_assert_eq!(ids.len(), 1, "k{}: conditional creates named different resources: {:?}", k, answers);
        let deadline = Instant::now() + Duration::from_secs(10);
        let total = loop {
            let res = client.send(client.http.get(client.url(&format!("Patient?identifier=urn:prop|k{k}")))).await;
            let bundle: Value = res.map_err(fail)?.json().await.map_err(|e| fail(e.to_string()))?;
            let total = bundle["total"].as_u64().unwrap_or(0);
            if total >= 1 || Instant::now() > deadline {
                break total;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        prop_assert_eq!(total, 1, "k{}: resources with the identifier", k);
    }
    Ok(())
}

#[test]
fn concurrent_clients_never_lose_an_update_and_every_history_is_the_acknowledged_writes_in_order() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let app = rt.block_on(TestApp::spawn());
    let mut runner = TestRunner::new(Config { cases: CASES, max_shrink_iters: 64, ..Config::default() });
    let ops = std::sync::atomic::AtomicUsize::new(0);
    let tally = Tally::default();
    let started = Instant::now();
    let result = runner.run(&program(), |program| {
        ops.fetch_add(program.iter().map(Vec::len).sum::<usize>(), std::sync::atomic::Ordering::Relaxed);
        rt.block_on(run_case(&app, program, &tally))
    });
    eprintln!(
        "{CASES} cases, {ops:?} operations from {CLIENTS} concurrent clients each: {:?} acknowledged, {:?} refused, in {:?}",
        tally.acked,
        tally.refused,
        started.elapsed()
    );
    rt.block_on(async move {
        let mut app = app;
        app.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
