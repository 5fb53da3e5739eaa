//! Slow and greedy clients against a real server: a client that trickles
//! its headers is cut off, idle keep-alive connections are reclaimed, the
//! connection cap makes new connections wait rather than cost memory, many
//! slow bodies neither starve a normal request nor pin memory, and a
//! graceful shutdown still lets an in-flight request finish.
//!
//! Requests go over raw TCP so that the test, not a client library,
//! decides how slowly each byte arrives.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::TestApp;

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://").to_owned();
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection or `within` passes;
/// returns what arrived and whether the server closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (raw, closed)
}

/// The status code of a raw response, if one arrived.
fn status(raw: &[u8]) -> Option<u16> {
    let line = raw.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line).ok()?.split(' ').nth(1)?.parse().ok()
}

fn health_request(close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET /health HTTP/1.1\r\nhost: x\r\nconnection: {connection}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_trickles_its_headers_is_disconnected_at_the_header_timeout() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.header_read_timeout_ms = 800).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // One header byte every 100 ms: each read makes progress, none finishes.
    let mut cut_off = None;
    for i in 0..60 {
        if stream.write_all(if i % 2 == 0 { b"x" } else { b"y" }).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                assert_eq!(status(&buf[..n]), Some(408), "{}", String::from_utf8_lossy(&buf[..n]));
                cut_off = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let cut_off = cut_off.expect("the trickling client was still connected after 6 s");
    assert!(cut_off >= Duration::from_millis(700), "cut off before the timeout: {cut_off:?}");
    assert!(cut_off < Duration::from_millis(2500), "cut off too late: {cut_off:?}");

    let mut fresh = connect(&app).await;
    fresh.write_all(health_request(true).as_bytes()).await.unwrap();
    let (raw, closed) = read_until_closed(&mut fresh, Duration::from_secs(5)).await;
    assert!(closed && status(&raw) == Some(200), "{}", String::from_utf8_lossy(&raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.header_read_timeout_ms = 800).await;
    let mut stream = connect(&app).await;
    stream.write_all(health_request(false).as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(status(&buf[..n]), Some(200));
    let idle_since = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stayed open for 5 s");
    assert!(rest.is_empty() || status(&rest) == Some(408), "{}", String::from_utf8_lossy(&rest));
    assert!(idle_since.elapsed() >= Duration::from_millis(700), "closed early: {:?}", idle_since.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_the_connection_cap_a_new_connection_waits_until_a_slot_is_free() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.max_connections = 2).await;
    let mut first = connect(&app).await;
    let second = connect(&app).await;
    // Both slots are taken once the server has accepted them.
    first.write_all(health_request(false).as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert_eq!(status(&buf[..n]), Some(200));

    let mut third = connect(&app).await;
    third.write_all(health_request(true).as_bytes()).await.unwrap();
    let (raw, _) = read_until_closed(&mut third, Duration::from_millis(700)).await;
    assert!(raw.is_empty(), "a third connection was served beside two: {}", String::from_utf8_lossy(&raw));

    drop(second);
    let (raw, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(closed && status(&raw) == Some(200), "{}", String::from_utf8_lossy(&raw));
    drop(first);
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_slow_bodies_neither_starve_a_normal_request_nor_outlive_the_body_timeout() {
    const SLOW: usize = 200;
    const BODY: usize = 64 * 1024;
    let app = TestApp::spawn_with(|cfg| cfg.limits.body_read_timeout_ms = 3000).await;
    let t = app.tenant("slow").await;
    let before = resident_kib();
    let head = format!(
        "POST /fhir/{t}/Patient HTTP/1.1\r\nhost: x\r\ncontent-type: application/fhir+json\r\n\
         content-length: {BODY}\r\nconnection: close\r\n\r\n"
    );
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = connect(&app).await;
        let head = head.clone();
        slow.push(tokio::spawn(async move {
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&vec![b' '; BODY / 2]).await.unwrap();
            // Then a byte now and then: never enough to finish in time.
            let (mut rd, mut wr) = stream.into_split();
            let trickle = tokio::spawn(async move {
                while wr.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut raw)).await;
            trickle.abort();
            (status(&raw), started.elapsed(), String::from_utf8_lossy(&raw).into_owned())
        }));
    }
    // While all of them hold a connection and half a body, a normal write
    // is answered at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let res = app.post(&t, "Patient", &json!({"resourceType": "Patient", "active": true})).await;
    let took = asked.elapsed();
    assert_eq!(res.status(), 201);
    assert!(took < Duration::from_secs(2), "a normal request took {took:?} beside {SLOW} slow ones");
    let during = resident_kib();

    for handle in slow {
        let (code, at, raw) = handle.await.unwrap();
        assert_eq!(code, Some(408), "a slow client got: {raw}");
        assert!(raw.contains("OperationOutcome"), "{raw}");
        assert!(at >= Duration::from_millis(2900) && at < Duration::from_secs(10), "answered at {at:?}");
    }
    let grown = during.saturating_sub(before);
    eprintln!("RSS before {before} KiB, with {SLOW} slow clients {during} KiB (+{grown} KiB)");
    assert!(grown < 64 * 1024, "{SLOW} slow clients grew the process by {grown} KiB");
    let res = app.get(&t, "Patient?_total=accurate").await;
    let bundle: serde_json::Value = res.json().await.unwrap();
    assert_eq!(bundle["total"], 1, "no slow body was stored: {bundle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_shutdown_finishes_the_request_in_flight_and_then_stops_accepting() {
    let mut app = TestApp::spawn().await;
    let t = app.tenant("bye").await;
    let body = json!({"resourceType": "Patient", "active": false}).to_string();
    let (first, rest) = body.split_at(10);
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /fhir/{t}/Patient HTTP/1.1\r\nhost: x\r\ncontent-type: application/fhir+json\r\n\
         content-length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest = rest.to_owned();
    let in_flight = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(rest.as_bytes()).await.unwrap();
        read_until_closed(&mut stream, Duration::from_secs(10)).await
    });
    let stopping = Instant::now();
    app.stop().await;
    let stopped_in = stopping.elapsed();
    eprintln!("stopped in {stopped_in:?}");
    let (raw, closed) = in_flight.await.unwrap();
    let answer = String::from_utf8_lossy(&raw).to_lowercase();
    assert_eq!(status(&raw), Some(201), "{answer}");
    assert!(answer.contains("x-fhirstream-projection: applied"), "the projector stopped first: {answer}");
    assert!(closed, "the connection was closed after its last answer");
    assert!(stopped_in >= Duration::from_millis(400) && stopped_in < Duration::from_secs(3), "{stopped_in:?}");
    let addr = app.base.trim_start_matches("http://").to_owned();
    assert!(TcpStream::connect(addr).await.is_err(), "a stopped server still accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_bounded_to_one_byte_per_batch_still_applies_large_resources_and_whole_transactions() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.projector_batch_bytes = 1).await;
    let t = app.tenant("bytes").await;
    let big = json!({"resourceType": "Patient", "id": "big", "text": {"status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(200_000))}});
    let res = app.put(&t, "Patient/big", &big).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-fhirstream-projection"], "applied");
    let entries: Vec<_> = (0..5)
        .map(|i| {
            json!({"resource": {"resourceType": "Patient", "id": format!("t{i}")},
                        "request": {"method": "PUT", "url": format!("Patient/t{i}")}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let res = app
        .http
        .post(app.fhir(&t, ""))
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-fhirstream-projection"], "applied");
    let found: serde_json::Value = app.get(&t, "Patient?_total=accurate").await.json().await.unwrap();
    assert_eq!(found["total"], 6, "{found}");
    app.wait_caught_up(Duration::from_secs(10)).await;
}
