//! Raw baseline (a): JetStream publish-with-ack of the events P1 causes, at
//! P1's concurrency, exactly as the write side publishes them — message id
//! for de-duplication, expected last subject sequence for optimistic
//! concurrency, version and op headers — each publisher awaiting its ack
//! before the next, as a request handler does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use schemas::{EventOp, TenantId};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::payloads::raw_chain;
use crate::raw::RAW_TENANT;
use crate::stats::{Latencies, Summary, rate};

/// What a publishing phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    pub seconds: f64,
    pub concurrency: usize,
    pub events: u64,
    pub bytes: u64,
    pub events_per_sec: Option<f64>,
    pub latency: Summary,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

struct Tally {
    lat: Latencies,
    events: u64,
    bytes: u64,
    errors: u64,
    samples: Vec<String>,
}

/// Publishes `chains` CRUD chains (27 events each) under `prefix` with
/// `concurrency` publishers.
pub async fn publish_chains(
    js: &jetstream::Context,
    prefix: &str,
    chains: u64,
    concurrency: usize,
) -> anyhow::Result<PublishResult> {
    let tenant = TenantId::parse(RAW_TENANT)?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    for _ in 0..concurrency {
        let (js, prefix, tenant, next) = (js.clone(), prefix.to_owned(), tenant.clone(), next.clone());
        publishers.spawn(async move {
            let mut t = Tally { lat: Latencies::new(), events: 0, bytes: 0, errors: 0, samples: Vec::new() };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= chains {
                    return t;
                }
                let events = match raw_chain(&tenant, n) {
                    Ok(e) => e,
                    Err(e) => {
                        t.errors += 1;
                        t.samples.push(format!("build chain: {e:#}"));
                        return t;
                    }
                };
                // Stream sequence of each resource's last event, by chain position.
                let mut last = [0u64; 9];
                for (i, ev) in events.into_iter().enumerate() {
                    let slot = i % 9;
                    let subject = format!("{prefix}.{tenant}.{}.{}", ev.kind.as_str(), ev.id.replace('.', "_"));
                    let op = match ev.op {
                        EventOp::Create => "create",
                        EventOp::Update => "update",
                        EventOp::Delete => "delete",
                    };
                    t.bytes += ev.payload.len() as u64;
                    let msg = PublishMessage::build()
                        .payload(Bytes::from(ev.payload))
                        .message_id(ev.event_id.to_string())
                        .expected_last_subject_sequence(last[slot])
                        .header("Fhirstream-Version", ev.version.to_string().as_str())
                        .header("Fhirstream-Op", op);
                    let sent = Instant::now();
                    let acked = match js.send_publish(subject, msg).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    match acked {
                        Ok(ack) => {
                            t.lat.record(sent.elapsed());
                            t.events += 1;
                            last[slot] = ack.sequence;
                        }
                        Err(e) => {
                            t.errors += 1;
                            if t.samples.len() < 5 {
                                t.samples.push(e.to_string());
                            }
                            break; // the rest of this chain would only conflict
                        }
                    }
                }
            }
        });
    }
    let mut lat = Latencies::new();
    let (mut events, mut bytes, mut errors, mut samples) = (0, 0, 0, Vec::new());
    while let Some(t) = publishers.join_next().await {
        let t = t?;
        lat.merge(&t.lat);
        events += t.events;
        bytes += t.bytes;
        errors += t.errors;
        samples.extend(t.samples.into_iter().take(5usize.saturating_sub(samples.len())));
    }
    let elapsed = started.elapsed();
    Ok(PublishResult {
        seconds: elapsed.as_secs_f64(),
        concurrency,
        events,
        bytes,
        events_per_sec: rate(events, elapsed),
        latency: lat.summary(),
        errors,
        error_samples: samples,
    })
}
