//! NATS and PostgreSQL stopped and restarted under load: fhirstream answers
//! 503 OperationOutcome within a bound while a dependency is away, never
//! reports a write it did not make, and recovers by itself when the
//! dependency returns, losing and doubling nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestApp, assert_outcome, free_port};

/// Longest a request may take while a dependency is away.
const BOUND: Duration = Duration::from_secs(5);

/// Background writers; each acknowledged (id, version) is kept.
struct Load {
    acked: Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &TestApp, tenant: &str, writers: usize) -> Self {
        let acked = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<u64>>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let tasks = (0..writers)
            .map(|w| {
                let (http, acked, stop, base) = (http.clone(), acked.clone(), stop.clone(), app.fhir(tenant, ""));
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Steady load, not a flood the projector needs a
                        // minute to catch up with after the outage.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        i += 1;
                        let id = format!("load{w}-{}", i % 5);
                        let body =
                            json!({"resourceType": "Patient", "id": id, "birthDate": format!("19{:02}", i % 100)});
                        let res = http
                            .put(format!("{base}Patient/{id}"))
                            .header("x-fhirstream-consistency", "eventual")
                            .json(&body)
                            .send()
                            .await;
                        match res {
                            Ok(res) if res.status().is_success() => {
                                let tag = res.headers()["etag"].to_str().unwrap().to_owned();
                                let v = tag.trim_start_matches("W/").trim_matches('"').parse().unwrap();
                                assert!(acked.lock().unwrap().entry(id).or_default().insert(v), "acked twice");
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Self { acked, stop, tasks }
    }

    async fn finish(self) -> BTreeMap<String, BTreeSet<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// The stream holds each version once, every acknowledged version is on
/// it, and the read model is its exact fold.
async fn assert_nothing_lost_or_doubled(app: &TestApp, tenant: &str, acked: &BTreeMap<String, BTreeSet<u64>>) {
    app.wait_caught_up(Duration::from_secs(30)).await;
    let events = app.events(&format!("fhir.{tenant}.*.*")).await;
    let mut seen = BTreeSet::new();
    for e in &events {
        let key = (e["id"].as_str().unwrap().to_owned(), e["version"].as_u64().unwrap());
        assert!(seen.insert(key.clone()), "{key:?} is on the stream twice");
    }
    for (id, versions) in acked {
        for v in versions {
            assert!(seen.contains(&(id.clone(), *v)), "acknowledged {id}/{v} is not on the stream");
        }
    }
    let stream = app.fold_stream(tenant).await;
    app.fold_read_model(tenant).await.assert_same_as(&stream);
    let total: usize = acked.values().map(BTreeSet::len).sum();
    eprintln!("{total} writes acknowledged under load, {} events, read model = fold of the stream", events.len());
}

/// A request that must answer within [`BOUND`].
async fn bounded(
    what: &str,
    req: impl std::future::Future<Output = reqwest::Response>,
) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let res = tokio::time::timeout(BOUND * 2, req).await.unwrap_or_else(|_| panic!("{what} hung"));
    let took = started.elapsed();
    assert!(took < BOUND, "{what} took {took:?}");
    (res, took)
}

/// Retries a write until it succeeds (bounded): recovery without restart.
async fn until_written(app: &TestApp, tenant: &str, id: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let body = json!({"resourceType": "Patient", "id": id});
        let res = tokio::time::timeout(BOUND * 2, app.put(tenant, &format!("Patient/{id}"), &body)).await;
        if res.is_ok_and(|r| r.status().is_success()) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "writes did not recover within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_away_writes_fail_fast_reads_go_on_and_writes_recover_without_a_restart() {
    let mut app = TestApp::spawn_with(|cfg| cfg.conn.publish_timeout_ms = 2000).await;
    let t = app.tenant("natsfault").await;
    assert_eq!(app.put(&t, "Patient/anchor", &json!({"resourceType": "Patient", "id": "anchor"})).await.status(), 201);
    app.wait_caught_up(Duration::from_secs(10)).await;
    let load = Load::start(&app, &t, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;

    app.nats.stop();
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let body = json!({"resourceType": "Patient", "id": format!("probe{i}")});
        let (res, took) = bounded("a write while NATS is away", app.put(&t, &format!("Patient/probe{i}"), &body)).await;
        assert_outcome(res, 503).await;
        slowest = slowest.max(took);
        let (res, _) = bounded("a read while NATS is away", app.get(&t, "Patient/anchor")).await;
        assert_eq!(res.status(), 200, "reads do not need NATS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.nats.restart();
    let recovered = until_written(&app, &t, "after", Duration::from_secs(30)).await;
    eprintln!("NATS away: slowest failed write {slowest:?}; writes recovered {recovered:?} after the restart");

    let acked = load.finish().await;
    assert!(acked.values().map(BTreeSet::len).sum::<usize>() > 0, "the load wrote something");
    assert_nothing_lost_or_doubled(&app, &t, &acked).await;
    let probes = app.fold_stream(&t).await.current.keys().filter(|(_, id)| id.starts_with("probe")).count();
    assert_eq!(probes, 0, "a write answered 503 was not made");
}

/// A private PostgreSQL cluster, so stopping it harms no other test.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// Whether commands run as the `postgres` user (initdb refuses root).
    as_postgres: bool,
}

impl PrivatePg {
    fn start() -> Self {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        let dir = tempfile::tempdir().unwrap();
        let root = Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n");
        let pg = Self { dir, port: free_port(), bin, as_postgres: root };
        if root {
            assert!(Command::new("chown").args(["-R", "postgres:"]).arg(pg.dir.path()).status().unwrap().success());
        }
        pg.run("initdb", &["-A", "trust", "-U", "postgres", "-D", &pg.data()]);
        pg.ctl("start");
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn ctl(&self, action: &str) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        // `immediate` is a crash: whatever was not flushed is lost, as when
        // the machine or the OOM killer takes PostgreSQL down.
        let mode = if action == "stop" { ["-m", "immediate"] } else { ["-l", log.as_str()] };
        self.run("pg_ctl", &["-D", &self.data(), "-o", &opts, "-w", mode[0], mode[1], action]);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.as_postgres {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        } else {
            let _ =
                Command::new(self.bin.join("pg_ctl")).args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_away_reads_answer_503_and_everything_written_is_projected_when_it_returns() {
    let pg = PrivatePg::start();
    let mut app = TestApp::spawn_with(|cfg| cfg.conn.database_url = pg.url()).await;
    // The helpers read the read model through `db`: point it at the cluster.
    app.db.url = pg.url();
    let t = app.tenant("pgfault").await;
    assert_eq!(app.put(&t, "Patient/anchor", &json!({"resourceType": "Patient", "id": "anchor"})).await.status(), 201);
    app.wait_caught_up(Duration::from_secs(10)).await;
    let load = Load::start(&app, &t, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;

    pg.ctl("stop");
    let mut slowest = Duration::ZERO;
    for _ in 0..2 {
        let (res, took) = bounded("a read while PostgreSQL is away", app.get(&t, "Patient/anchor")).await;
        assert_outcome(res, 503).await;
        slowest = slowest.max(took);
        let (res, took) = bounded("a search while PostgreSQL is away", app.get(&t, "Patient?birthdate=ge1900")).await;
        assert_outcome(res, 503).await;
        slowest = slowest.max(took);
    }
    // Writes go to NATS and need no PostgreSQL: they are projected later.
    let during = json!({"resourceType": "Patient", "id": "during"});
    let write = app
        .http
        .put(app.fhir(&t, "Patient/during"))
        .header("x-fhirstream-consistency", "eventual")
        .json(&during)
        .send();
    let (res, _) = bounded("a write while PostgreSQL is away", async { write.await.unwrap() }).await;
    let written_during = res.status().is_success();
    pg.ctl("start");

    let recovered = Instant::now();
    loop {
        let res = tokio::time::timeout(BOUND * 2, app.get(&t, "Patient/anchor")).await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(recovered.elapsed() < Duration::from_secs(30), "reads did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "PostgreSQL away: slowest failed read {slowest:?}; reads recovered {:?} after the restart; \
         a write during the outage {}",
        recovered.elapsed(),
        if written_during { "was accepted" } else { "was refused" }
    );
    until_written(&app, &t, "after", Duration::from_secs(30)).await;
    let acked = load.finish().await;
    assert_nothing_lost_or_doubled(&app, &t, &acked).await;
    // The restart ended the session that held the projector's lock; the
    // projector must hold it again, or a standby could run beside it.
    let pool = app.db.pool().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = pool.acquire().await.unwrap();
        let key = "fhirstream.projector.main";
        let free: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if !free {
            break;
        }
        sqlx::query("select pg_advisory_unlock(hashtext($1))").bind(key).execute(&mut *conn).await.unwrap();
        assert!(Instant::now() < deadline, "nobody holds the projector lock after PostgreSQL restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if written_during {
        app.wait_caught_up(Duration::from_secs(30)).await;
        assert_eq!(app.get(&t, "Patient/during").await.status(), 200, "the write made during the outage is projected");
    }
}
