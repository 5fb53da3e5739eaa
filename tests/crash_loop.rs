//! The crash loop: the real server, SIGKILLed at random moments while
//! clients write, loses no acknowledged write and invents none.
//!
//! Several clients write continuously (creates, updates with If-Match,
//! deletes, transaction Bundles) and keep a ledger of every acknowledged
//! version and of every request whose fate they could not know (a timeout,
//! a reset connection, a 5xx). The server is killed with SIGKILL and
//! restarted `FHIRSTREAM_CRASH_KILLS` times (20 by default; `make
//! reliability` runs 200). Afterwards the stream, the HTTP API and
//! `fhirstream verify` must all agree with the ledger. The seed is printed;
//! `FHIRSTREAM_CRASH_SEED` replays the same kill schedule.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use support::{TestDb, TestNats, free_port};

/// A small seeded generator (splitmix64): the schedule is reproducible
/// from the printed seed without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients know: acknowledged versions (with whether each was a
/// delete) and, per resource, how many requests ended without an answer.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, BTreeMap<u64, bool>>,
    /// Versions acknowledged twice (must stay empty).
    double_acks: Vec<(String, u64)>,
    uncertain: HashMap<String, u64>,
    /// POSTs without an answer: each may have created one unknown resource.
    uncertain_posts: u64,
    writes_acked: u64,
    failed: u64,
}

impl Ledger {
    fn ack(&mut self, key: &str, version: u64, deleted: bool) {
        self.writes_acked += 1;
        if self.acked.entry(key.to_owned()).or_default().insert(version, deleted).is_some() {
            self.double_acks.push((key.to_owned(), version));
        }
    }
}

/// How a request ended, from the client's side.
enum Outcome {
    /// 2xx: the response, whose versions are acknowledged.
    Acked(reqwest::Response),
    /// Refused before anything was sent, or a 4xx: nothing was written.
    NotWritten,
    /// A timeout, a reset, a 5xx: it may or may not have been written.
    Unknown,
}

async fn send(req: reqwest::RequestBuilder) -> Outcome {
    match req.header("x-fhirstream-consistency", "eventual").send().await {
        Ok(res) if res.status().is_success() => Outcome::Acked(res),
        Ok(res) if res.status().is_client_error() => Outcome::NotWritten,
        Ok(_) => Outcome::Unknown,
        Err(e) if e.is_connect() => {
            // The server is down: nothing was sent. Do not spin meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Outcome::NotWritten
        }
        Err(_) => Outcome::Unknown,
    }
}

fn etag_version(res: &reqwest::Response) -> Option<u64> {
    let tag = res.headers().get("etag")?.to_str().ok()?;
    tag.trim_start_matches("W/").trim_matches('"').parse().ok()
}

/// What a client believes about one of its resources.
#[derive(Clone, Copy, Debug)]
enum Known {
    Unknown,
    Absent,
    Live(u64),
}

/// One client: owns a few ids, writes them in a loop until `stop`.
async fn client(base: String, w: usize, seed: u64, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut rng = Rng(seed ^ (w as u64).wrapping_mul(0x1234_5678_9abc_def1));
    let ids: Vec<String> = (0..6).map(|k| format!("w{w}-{k}")).collect();
    let mut known: Vec<Known> = vec![Known::Absent; ids.len()];
    let url = |id: &str| format!("{base}/Patient/{id}");
    let body =
        |id: &str, n: u64| json!({"resourceType": "Patient", "id": id, "birthDate": format!("19{:02}", n % 100)});
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        let k = rng.below(ids.len() as u64) as usize;
        let id = &ids[k];
        let key = format!("Patient/{id}");
        if roll < 6 {
            let post = http.post(format!("{base}/Patient")).json(&json!({"resourceType": "Patient", "active": true}));
            match send(post).await {
                Outcome::Acked(res) => {
                    let location = res.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default();
                    let new_id = location.split("/Patient/").nth(1).and_then(|r| r.split('/').next()).unwrap();
                    let v = etag_version(&res).unwrap();
                    ledger.lock().unwrap().ack(&format!("Patient/{new_id}"), v, false);
                }
                Outcome::NotWritten => ledger.lock().unwrap().failed += 1,
                Outcome::Unknown => {
                    let mut l = ledger.lock().unwrap();
                    l.failed += 1;
                    l.uncertain_posts += 1;
                }
            }
            continue;
        }
        if roll < 12 {
            // A transaction over two of this client's resources.
            let k2 = (k + 1 + rng.below(ids.len() as u64 - 1) as usize) % ids.len();
            if matches!(known[k], Known::Unknown) || matches!(known[k2], Known::Unknown) {
                known[k] = refresh(&http, &url(id)).await;
                continue;
            }
            let entry = |i: usize| {
                let mut request = json!({"method": "PUT", "url": format!("Patient/{}", ids[i])});
                if let Known::Live(v) = known[i] {
                    request["ifMatch"] = json!(format!("W/\"{v}\""));
                }
                json!({"resource": body(&ids[i], roll + i as u64), "request": request})
            };
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry(k), entry(k2)]});
            let outcome = send(http.post(&base).json(&bundle)).await;
            let parsed = match outcome {
                Outcome::Acked(res) => res.json::<Value>().await.ok(),
                Outcome::NotWritten => {
                    ledger.lock().unwrap().failed += 1;
                    known[k] = Known::Unknown;
                    known[k2] = Known::Unknown;
                    continue;
                }
                Outcome::Unknown => None,
            };
            let mut l = ledger.lock().unwrap();
            match parsed {
                Some(reply) => {
                    for (n, i) in [k, k2].into_iter().enumerate() {
                        let etag = reply["entry"][n]["response"]["etag"].as_str().unwrap();
                        let v = etag.trim_start_matches("W/").trim_matches('"').parse().unwrap();
                        l.ack(&format!("Patient/{}", ids[i]), v, false);
                        known[i] = Known::Live(v);
                    }
                }
                None => {
                    l.failed += 1;
                    for i in [k, k2] {
                        *l.uncertain.entry(format!("Patient/{}", ids[i])).or_default() += 1;
                        known[i] = Known::Unknown;
                    }
                }
            }
            continue;
        }
        let (req, deleting) = match known[k] {
            Known::Unknown => {
                known[k] = refresh(&http, &url(id)).await;
                continue;
            }
            Known::Absent => (http.put(url(id)).json(&body(id, roll)), false),
            Known::Live(v) if roll < 22 => (http.delete(url(id)).header("if-match", format!("W/\"{v}\"")), true),
            Known::Live(v) => (http.put(url(id)).header("if-match", format!("W/\"{v}\"")).json(&body(id, roll)), false),
        };
        match send(req).await {
            Outcome::Acked(res) => match etag_version(&res) {
                Some(v) => {
                    ledger.lock().unwrap().ack(&key, v, deleting);
                    known[k] = if deleting { Known::Absent } else { Known::Live(v) };
                }
                // A delete of nothing writes nothing.
                None => known[k] = Known::Absent,
            },
            Outcome::NotWritten => {
                ledger.lock().unwrap().failed += 1;
                known[k] = Known::Unknown;
            }
            Outcome::Unknown => {
                let mut l = ledger.lock().unwrap();
                l.failed += 1;
                *l.uncertain.entry(key).or_default() += 1;
                known[k] = Known::Unknown;
            }
        }
    }
}

/// Asks the server what it holds now (the read model may lag; a stale
/// answer only costs a 412 later).
async fn refresh(http: &reqwest::Client, url: &str) -> Known {
    match http.get(url).send().await {
        Ok(res) if res.status() == 200 => etag_version(&res).map_or(Known::Unknown, Known::Live),
        Ok(res) if res.status() == 404 || res.status() == 410 => Known::Absent,
        _ => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Known::Unknown
        }
    }
}

fn start_server(port: u16, nats: &TestNats, db: &TestDb) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--auth-disabled", "--log", "error"])
        .args(["--nats-url", &nats.url, "--database-url", &db.url, "--publish-timeout-ms", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fhirstream serve")
}

async fn wait_healthy(http: &reqwest::Client, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/health")).send().await
            && res.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "fhirstream did not come up on {port}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every resource event of the tenant: (type/id, version, op), stream order.
async fn stream_events(nats: &TestNats, tenant: &str) -> Vec<(String, u64, String)> {
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = js.get_stream("FHIR").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("fhir.{tenant}.*.*"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pending = consumer.cached_info().num_pending;
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.unwrap();
    while pending > 0 {
        let msg = messages.next().await.unwrap().unwrap();
        pending = msg.info().unwrap().pending;
        let ev: Value = serde_json::from_slice(&msg.payload).unwrap();
        let key = format!("{}/{}", ev["resource_type"].as_str().unwrap(), ev["id"].as_str().unwrap());
        out.push((key, ev["version"].as_u64().unwrap(), ev["op"].as_str().unwrap().to_owned()));
    }
    out
}

async fn projector_caught_up(nats: &TestNats) -> bool {
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = js.get_stream("FHIR").await.unwrap();
    stream.consumer_info("projector-main").await.is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_random_moments_loses_and_invents_no_acknowledged_write() {
    let kills: u32 = std::env::var("FHIRSTREAM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("FHIRSTREAM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash loop: {kills} kills, seed {seed} (FHIRSTREAM_CRASH_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let nats = TestNats::start();
    let db = TestDb::create().await;
    let port = free_port();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut server = start_server(port, &nats, &db);
    wait_healthy(&http, port, Duration::from_secs(30)).await;
    let tenant = "crash";
    let res = http
        .post(format!("http://127.0.0.1:{port}/admin/tenants"))
        .json(&json!({"id": tenant, "name": "Crash loop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "create the tenant");

    let base = format!("http://127.0.0.1:{port}/fhir/{tenant}");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..4).map(|w| tokio::spawn(client(base.clone(), w, seed, ledger.clone(), stop.clone()))).collect();

    for _ in 0..kills {
        // Sometimes during start-up, mostly while serving.
        if rng.below(5) > 0 {
            wait_healthy(&http, port, Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.below(600))).await;
        server.kill().expect("SIGKILL fhirstream");
        server.wait().expect("reap fhirstream");
        server = start_server(port, &nats, &db);
    }
    // The last restart must serve writes again by itself.
    wait_healthy(&http, port, Duration::from_secs(30)).await;
    let before = ledger.lock().unwrap().writes_acked;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.lock().unwrap().writes_acked < before + 20 {
        assert!(Instant::now() < deadline, "writes do not succeed after the last restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !projector_caught_up(&nats).await {
        assert!(Instant::now() < deadline, "the projector does not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(ledger.double_acks.is_empty(), "one version acknowledged twice: {:?}", ledger.double_acks);

    // The stream: each version once, contiguous per resource.
    let events = stream_events(&nats, tenant).await;
    let mut stream: BTreeMap<String, BTreeMap<u64, bool>> = BTreeMap::new();
    for (key, v, op) in &events {
        let before = stream.entry(key.clone()).or_default().insert(*v, op == "delete");
        assert!(before.is_none(), "{key} version {v} is on the stream twice");
    }
    for (key, versions) in &stream {
        let got: Vec<u64> = versions.keys().copied().collect();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        assert_eq!(got, want, "{key}: versions are not contiguous from 1");
    }

    // Every acknowledged version is on the stream and readable as written.
    for (key, versions) in &ledger.acked {
        for (v, deleted) in versions {
            assert_eq!(stream.get(key).and_then(|s| s.get(v)), Some(deleted), "acknowledged {key}/{v} is not stored");
            let res = http.get(format!("{base}/{key}/_history/{v}")).send().await.unwrap();
            let want = if *deleted { 410 } else { 200 };
            assert_eq!(res.status(), want, "vread {key}/_history/{v}");
            if !deleted {
                assert_eq!(etag_version(&res), Some(*v), "vread {key}/_history/{v} answers its own version");
            }
        }
    }

    // Nothing was invented: what nobody acknowledged came from a request
    // whose client saw it fail.
    let mut unknown_resources = 0;
    for (key, versions) in &stream {
        let acked = ledger.acked.get(key);
        let unacked = versions.keys().filter(|v| !acked.is_some_and(|a| a.contains_key(v))).count() as u64;
        if acked.is_none() && !key.starts_with("Patient/w") {
            unknown_resources += 1;
            assert_eq!(unacked, 1, "{key}: an unacknowledged POST creates one version");
        } else {
            let allowed = ledger.uncertain.get(key).copied().unwrap_or(0);
            assert!(unacked <= allowed, "{key}: {unacked} unacknowledged versions, {allowed} requests in doubt");
        }
    }
    assert!(unknown_resources <= ledger.uncertain_posts, "{unknown_resources} resources nobody created");

    // The read model is the fold of the stream.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["verify", "--tenant", tenant, "--log", "error"])
        .args(["--nats-url", &nats.url, "--database-url", &db.url])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "verify found differences:\n{report}");
    server.kill().unwrap();
    server.wait().unwrap();

    let in_doubt = ledger.uncertain.values().sum::<u64>() + ledger.uncertain_posts;
    eprintln!(
        "crash loop: {} writes acknowledged, {kills} crashes survived, {} failed requests ({in_doubt} in doubt), \
         {} events on the stream, {} resources; nothing lost, nothing invented ({:.1} s, seed {seed})",
        ledger.writes_acked,
        ledger.failed,
        events.len(),
        stream.len(),
        started.elapsed().as_secs_f64()
    );
}
