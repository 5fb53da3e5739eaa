//! The change feed over Server-Sent Events (`GET /fhir/{tenant}/$events`):
//! events in stream order with their sequence as `id:`, resumption with
//! `Last-Event-ID` without gaps or duplicates, `_type` and scopes, and a
//! neighbour that can neither open nor receive another tenant's events.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::{TestApp, assert_outcome, token, validate_event};

/// One SSE message.
#[derive(Debug, Clone)]
struct Msg {
    id: u64,
    event: String,
    data: Value,
}

/// An open feed, parsed as it arrives.
struct Feed {
    res: reqwest::Response,
    buf: String,
    comments: usize,
}

impl Feed {
    async fn open(app: &TestApp, bearer: &str, tenant: &str, query: &str, last_id: Option<u64>) -> Self {
        let mut req = app.http.get(app.fhir(tenant, &format!("$events{query}"))).bearer_auth(bearer);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Self { res, buf: String::new(), comments: 0 }
    }

    /// The next message, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:")) {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                        data.push_str(v);
                    }
                }
                match (id, event) {
                    (Some(id), Some(event)) => {
                        return Some(Msg { id, event, data: serde_json::from_str(&data).unwrap() });
                    }
                    _ => continue,
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await.ok()?.unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.next(Duration::from_secs(10)).await;
            out.push(m.unwrap_or_else(|| panic!("only {} of {n} events arrived", out.len())));
        }
        out
    }

    /// Asserts nothing more arrives for a moment.
    async fn assert_quiet(&mut self) {
        if let Some(m) = self.next(Duration::from_millis(700)).await {
            panic!("unexpected event {m:?}");
        }
    }
}

/// POSTs a resource, or PUTs it when it names its id.
async fn create(app: &TestApp, tenant: &str, body: Value) -> String {
    let rt = body["resourceType"].as_str().unwrap().to_string();
    let res = match body["id"].as_str() {
        Some(id) => app.put(tenant, &format!("{rt}/{id}"), &body).await,
        None => app.post(tenant, &rt, &body).await,
    };
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

fn observation(patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
           "subject": {"reference": format!("Patient/{patient}")}})
}

#[tokio::test]
async fn events_arrive_in_stream_order_with_their_sequence_kind_and_envelope() {
    let mut app = TestApp::spawn_secure().await;
    let t = app.tenant("feed").await;
    let bearer = token(&[&t], "system/*.read");
    // Opened before any write, without a position: only new events.
    let mut live = Feed::open(&app, &bearer, &t, "", None).await;
    let p = create(&app, &t, json!({"resourceType": "Patient"})).await;
    let res =
        app.put(&t, &format!("Patient/{p}"), &json!({"resourceType": "Patient", "id": p, "gender": "male"})).await;
    assert_eq!(res.status(), 200);
    let o = create(&app, &t, observation(&p)).await;
    let res = app.authed(app.http.delete(app.fhir(&t, &format!("Patient/{p}")))).send().await.unwrap();
    assert!(res.status().is_success());

    let got = live.take(4).await;
    let kinds: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|m| (m.event.as_str(), m.data["resource_type"].as_str().unwrap(), m.data["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("create", "Patient", p.as_str()),
            ("update", "Patient", p.as_str()),
            ("create", "Observation", o.as_str()),
            ("delete", "Patient", p.as_str())
        ]
    );
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    for m in &got {
        validate_event(&m.data);
        assert_eq!(m.data["tenant"], t.as_str());
    }
    // The ids are the stream's sequences, and these are all the tenant's events.
    let truth = app.events(&format!("fhir.{t}.*.*")).await;
    let truth_ids: Vec<&str> = truth.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let got_ids: Vec<&str> = got.iter().map(|m| m.data["event_id"].as_str().unwrap()).collect();
    assert_eq!(got_ids, truth_ids);
    live.assert_quiet().await;

    // From the start (`since=0`), the same events with the same ids.
    let mut from_start = Feed::open(&app, &bearer, &t, "?since=0", None).await;
    let again = from_start.take(4).await;
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), got.iter().map(|m| m.id).collect::<Vec<_>>());
    from_start.assert_quiet().await;

    // `_type` narrows the feed.
    let mut obs = Feed::open(&app, &bearer, &t, "?since=0&_type=Observation", None).await;
    let only = obs.take(1).await;
    assert_eq!(only[0].data["id"], o.as_str());
    obs.assert_quiet().await;

    // Open feeds end when the server stops: they do not hold up its shutdown.
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    let end = tokio::time::timeout(Duration::from_secs(2), obs.res.chunk()).await.expect("the feed ended");
    assert!(end.is_err() || end.unwrap().is_none());
}

#[tokio::test]
async fn a_resumed_feed_yields_exactly_the_missed_events_without_gap_or_duplicate() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("feed").await;
    let other = app.tenant("noise").await;
    let bearer = token(&[&t], "system/*.read");
    for i in 0..5 {
        create(&app, &t, json!({"resourceType": "Patient", "id": format!("p{i}")})).await;
        // Another tenant's events interleave: sequences have gaps the feed skips.
        create(&app, &other, json!({"resourceType": "Patient"})).await;
    }
    let mut feed = Feed::open(&app, &bearer, &t, "?since=0", None).await;
    let first = feed.take(2).await;
    drop(feed); // the client goes away after two events
    for i in 5..8 {
        create(&app, &t, json!({"resourceType": "Patient", "id": format!("p{i}")})).await;
        create(&app, &other, json!({"resourceType": "Patient"})).await;
    }
    let last_seen = first[1].id;
    let mut resumed = Feed::open(&app, &bearer, &t, "", Some(last_seen)).await;
    let rest = resumed.take(6).await;
    resumed.assert_quiet().await;

    let all: Vec<String> =
        first.iter().chain(&rest).map(|m| m.data["event_id"].as_str().unwrap().to_string()).collect();
    let truth: Vec<String> = app
        .events(&format!("fhir.{t}.*.*"))
        .await
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all, truth, "first session + resumed session = every event once, in order");
    assert_eq!(
        rest.iter().map(|m| m.data["id"].as_str().unwrap()).collect::<Vec<_>>(),
        ["p2", "p3", "p4", "p5", "p6", "p7"]
    );

    // `since` in the query resumes the same way; the header wins over it.
    let mut by_query = Feed::open(&app, &bearer, &t, &format!("?since={last_seen}"), None).await;
    assert_eq!(
        by_query.take(6).await.iter().map(|m| m.id).collect::<Vec<_>>(),
        rest.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    let mut both = Feed::open(&app, &bearer, &t, "?since=0", Some(rest[4].id)).await;
    assert_eq!(both.take(1).await[0].id, rest[5].id);
    both.assert_quiet().await;

    // A position that is not a number is a 400 OperationOutcome.
    let res =
        app.http.get(app.fhir(&t, "$events")).bearer_auth(&bearer).header("last-event-id", "x").send().await.unwrap();
    assert_outcome(res, 400).await;
    let res = app.http.get(app.fhir(&t, "$events?since=-1")).bearer_auth(&bearer).send().await.unwrap();
    assert_outcome(res, 400).await;
    let res = app.http.get(app.fhir(&t, "$events?_type=Nope")).bearer_auth(&bearer).send().await.unwrap();
    assert_outcome(res, 400).await;
}

#[tokio::test]
async fn a_neighbours_token_is_refused_and_a_neighbours_feed_never_carries_our_events() {
    let app = TestApp::spawn_secure().await;
    let a = app.tenant("feeda").await;
    let b = app.tenant("feedb").await;
    let token_a = token(&[&a], "system/*.read");
    let token_b = token(&[&b], "system/*.*");

    // B's token cannot open A's feed, from any position.
    for q in ["", "?since=0", "?_type=Patient"] {
        let res = app.http.get(app.fhir(&a, &format!("$events{q}"))).bearer_auth(&token_b).send().await.unwrap();
        assert_outcome(res, 403).await;
    }
    // No token, or a token without any read scope, is refused too.
    assert_outcome(app.http.get(app.fhir(&a, "$events")).send().await.unwrap(), 401).await;
    let writer = token(&[&a], "system/*.write");
    assert_outcome(app.http.get(app.fhir(&a, "$events")).bearer_auth(&writer).send().await.unwrap(), 403).await;
    // A narrow token sees only its type, and cannot ask for another.
    let patients_only = token(&[&a], "system/Patient.read");
    let res = app.http.get(app.fhir(&a, "$events?_type=Observation")).bearer_auth(&patients_only).send().await.unwrap();
    assert_outcome(res, 403).await;

    let mut feed_b = Feed::open(&app, &token_b, &b, "?since=0", None).await;
    let mut feed_a = Feed::open(&app, &token_a, &a, "?since=0", None).await;
    let mut narrow_a = Feed::open(&app, &patients_only, &a, "?since=0", None).await;
    let mut b_ids = Vec::new();
    for i in 0..4 {
        let pa = create(&app, &a, json!({"resourceType": "Patient", "id": format!("same-{i}")})).await;
        create(&app, &a, observation(&pa)).await;
        // The same ids in B: only the tenant tells them apart.
        b_ids.push(create(&app, &b, json!({"resourceType": "Patient", "id": format!("same-{i}")})).await);
    }
    let got_b = feed_b.take(4).await;
    feed_b.assert_quiet().await;
    assert!(got_b.iter().all(|m| m.data["tenant"] == b.as_str()), "{got_b:?}");
    assert_eq!(got_b.iter().map(|m| m.data["id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), b_ids);
    let got_a = feed_a.take(8).await;
    feed_a.assert_quiet().await;
    assert!(got_a.iter().all(|m| m.data["tenant"] == a.as_str()));
    // No sequence is in both feeds.
    assert!(got_a.iter().all(|x| got_b.iter().all(|y| x.id != y.id)));
    let got_narrow = narrow_a.take(4).await;
    narrow_a.assert_quiet().await;
    assert!(got_narrow.iter().all(|m| m.data["resource_type"] == "Patient"));

    // B resuming from A's sequences still gets only B's events.
    let mut resumed_b = Feed::open(&app, &token_b, &b, "", Some(got_a[0].id)).await;
    let later_b: Vec<Msg> = resumed_b.take(got_b.iter().filter(|m| m.id > got_a[0].id).count()).await;
    resumed_b.assert_quiet().await;
    assert!(later_b.iter().all(|m| m.data["tenant"] == b.as_str()));
}

#[tokio::test]
async fn an_idle_feed_receives_keep_alive_comments_and_no_events() {
    let app = TestApp::spawn_secure().await;
    let t = app.tenant("idle").await;
    let mut feed = Feed::open(&app, &token(&[&t], "system/*.read"), &t, "?since=0", None).await;
    // The server sends one every 15 s.
    assert!(feed.next(Duration::from_secs(17)).await.is_none());
    assert!(feed.comments >= 1, "no keep-alive comment in 17 s");
}
