//! fhirstream on a three-server NATS cluster (streams with three replicas,
//! `sync_interval: always`): the leader of the resource stream is stopped
//! and restarted while writes keep coming, and every write that was
//! acknowledged is readable afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fhirstream::startup::App;
use serde_json::{Value, json};
use support::{TestDb, free_port, nats_server_bin, serve_args};
use tokio::sync::Mutex;

/// One server of the cluster: its ports and store survive a restart.
struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not come up", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Three servers routed to each other on loopback ports, with the
    /// configuration the README gives for production.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let port = free_port();
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                 jetstream {{ store_dir: {store:?}, sync_interval: always }}\n\
                 cluster {{ name: fhirstream, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n",
                route_urls.join(", ")
            );
            std::fs::write(&config, text).unwrap();
            nodes.push(Node { name, port, config, child: None });
        }
        nodes.iter_mut().for_each(Node::start);
        Self { nodes, _dir: dir }
    }

    fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }
}

/// The resource stream's cluster view: (leader, [(peer, current)]).
async fn stream_cluster(js: &async_nats::jetstream::Context) -> Option<(String, Vec<(String, bool)>)> {
    let mut stream = js.get_stream("FHIR").await.ok()?;
    let info = stream.info().await.ok()?;
    let cluster = info.cluster.as_ref()?;
    let peers = cluster.replicas.iter().map(|p| (p.name.clone(), p.current)).collect();
    Some((cluster.leader.clone()?, peers))
}

/// Writes Patients until told to stop; returns every acknowledged
/// (id, versionId) and the number of failures.
async fn writer(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, Instant)>>>,
) -> usize {
    let mut failures = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"resourceType": "Patient", "name": [{"family": format!("Cluster{n}")}]});
        let res = http.post(&url).header("content-type", "application/fhir+json").body(body.to_string()).send().await;
        match res {
            Ok(r) if r.status() == 201 => {
                let p: Value = r.json().await.unwrap();
                let id = p["id"].as_str().unwrap().to_owned();
                let vid = p["meta"]["versionId"].as_str().unwrap().to_owned();
                acked.lock().await.push((id, vid, Instant::now()));
            }
            Ok(r) => {
                // A failed write is allowed during fail-over, but never a
                // client error: the request itself was fine.
                let status = r.status().as_u16();
                assert!(status >= 500, "unexpected {status}: {}", r.text().await.unwrap_or_default());
                failures += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => failures += 1,
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_and_restarted_cluster_server_loses_no_acknowledged_write() {
    let started = Instant::now();
    fhirstream::telemetry::init(&fhirstream::config::LogArgs { log: "warn".into(), log_json: false });
    let mut cluster = Cluster::start();
    let db = TestDb::create().await;
    let urls = cluster.urls();
    // The cluster elects its JetStream meta leader first; until then the
    // streams cannot be created.
    let mut cfg = serve_args(&support::TestNats::start(), &db);
    cfg.conn.nats_url = urls.clone();
    cfg.conn.stream_replicas = 3;
    let app = loop {
        match App::build(cfg.clone()).await {
            Ok(app) => break app,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(20), "the cluster never took the streams: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let base = app.base_url().to_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let tenant = format!("cluster-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let res =
        http.post(format!("{base}/admin/tenants")).json(&json!({"id": tenant, "name": "c"})).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let nats = async_nats::connect(urls.split(',').collect::<Vec<_>>()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let (leader, peers) = stream_cluster(&js).await.expect("the resource stream is clustered");
    assert_eq!(peers.len() + 1, 3, "three replicas: leader {leader} and {peers:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writing =
        tokio::spawn(writer(http.clone(), format!("{base}/fhir/{tenant}/Patient"), stop.clone(), acked.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = acked.lock().await.len();
    assert!(before > 0, "no write was acknowledged before the fail-over");
    cluster.node(&leader).stop();
    let down_at = Instant::now();
    // Two servers are a quorum: writes must resume (after an election of
    // 4-8 s here) before the third is back.
    let resumed = loop {
        let during = acked.lock().await.iter().filter(|(_, _, t)| *t > down_at).count();
        if during >= 20 {
            break down_at.elapsed();
        }
        assert!(down_at.elapsed() < Duration::from_secs(25), "writes never resumed with two of three servers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node(&leader).start();
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = writing.await.unwrap();

    let acked = acked.lock().await.clone();
    let during = acked.iter().filter(|(_, _, t)| *t > down_at && *t < up_at).count();
    let after = acked.iter().filter(|(_, _, t)| *t > up_at).count();
    let longest_gap = acked.windows(2).map(|w| w[1].2 - w[0].2).max().unwrap_or_default();
    eprintln!(
        "acknowledged {} writes ({before} before stopping {leader}, {during} while it was down, {after} after), \
         {failures} failed; longest time without an acknowledged write: {longest_gap:?}; \
         writes resumed {resumed:?} after the stop",
        acked.len()
    );
    assert!(during > 0, "two of three servers are a quorum: writes must go on while one is down");
    assert!(after > 0, "writes go on after the restart");

    // The restarted server catches up and becomes a current replica again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = stream_cluster(&js).await;
        if let Some((_, peers)) = &view
            && peers.len() == 2
            && peers.iter().all(|(_, current)| *current)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted server never caught up: {view:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged write is in the stream, at its version: this is
    // the durability promise.
    let mut stream = js.get_stream("FHIR").await.unwrap();
    for (id, vid, _) in &acked {
        let msg = stream
            .get_last_raw_message_by_subject(&format!("fhir.{tenant}.Patient.{id}"))
            .await
            .unwrap_or_else(|e| panic!("acknowledged Patient/{id} is not in the stream: {e}"));
        let event: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event["version"].to_string().trim_matches('"'), vid.as_str(), "{id}: {event}");
    }
    // And the projector gets past the fail-over: the read model has each
    // one. A pull consumer notices a lost consumer leader only by missed
    // heartbeats (2 x 5 s), so this may take a while.
    let caught_up_from = Instant::now();
    let deadline = caught_up_from + Duration::from_secs(30);
    for (id, vid, _) in &acked {
        let url = format!("{base}/fhir/{tenant}/Patient/{id}");
        loop {
            let res = http.get(&url).send().await.unwrap();
            if res.status() == 200 {
                let p: Value = res.json().await.unwrap();
                assert_eq!(p["meta"]["versionId"], vid.as_str(), "{id}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged Patient/{id} never reached the read model: {}",
                res.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("read model had every acknowledged write {:?} after the writes stopped", caught_up_from.elapsed());
    // And the stream holds exactly one event per acknowledged create (a
    // failed write may have been stored too: never fewer, at most that many more).
    let stored = stream.info().await.unwrap().state.messages as usize;
    assert!(stored >= acked.len(), "stream holds {stored} events for {} acknowledged writes", acked.len());
    assert!(stored <= acked.len() + failures, "{stored} events for {} acked and {failures} failed", acked.len());

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    assert!(started.elapsed() < Duration::from_secs(55), "took {:?}", started.elapsed());
}
