//! P5, the price of read-your-writes: each writer alternates a default
//! create (answered once projected) with an opted-out one
//! (`x-fhirstream-consistency: eventual`, answered once durable in
//! JetStream), so both modes see the same load and the same drift.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Fhir;
use crate::payloads::{Kind, Refs, resource};
use crate::scenarios::Errors;
use crate::stats::{Latencies, Summary, extra_percent};

/// What P5 measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyResult {
    pub seconds: f64,
    pub concurrency: usize,
    pub read_your_writes: Summary,
    pub eventual: Summary,
    /// Extra p50 latency of read-your-writes over eventual, in percent.
    pub extra_p50_percent: Option<f64>,
    pub extra_p99_percent: Option<f64>,
    /// `X-Fhirstream-Projection` values seen per mode, e.g. `ryw applied`.
    pub projection_headers: BTreeMap<String, u64>,
    pub errors: Errors,
}

pub async fn run(fhir: &Fhir, tenant: &str, concurrency: usize, duration: Duration) -> ConsistencyResult {
    let deadline = Instant::now() + duration;
    let mut users = JoinSet::new();
    for vu in 0..concurrency {
        let (fhir, tenant) = (fhir.clone(), tenant.to_owned());
        users.spawn(async move {
            let (mut ryw, mut eventual) = (Latencies::new(), Latencies::new());
            let (mut headers, mut errors) = (BTreeMap::<String, u64>::new(), Errors::default());
            let mut n = 500_000_000 + vu as u64 * 1_000_000;
            while Instant::now() < deadline {
                let opt_out = n % 2 == 1;
                let body = serde_json::to_vec(&resource(Kind::Patient, &Refs::default(), n, 0)).unwrap_or_default();
                n += 1;
                let started = Instant::now();
                let res = fhir.create(&tenant, Kind::Patient, body, opt_out).await;
                let done = Instant::now();
                if done > deadline {
                    break;
                }
                let mode = if opt_out { "eventual" } else { "ryw" };
                match res {
                    Ok(c) => {
                        let lat = if opt_out { &mut eventual } else { &mut ryw };
                        lat.record(done - started);
                        let seen = c.projection.unwrap_or_else(|| "absent".into());
                        *headers.entry(format!("{mode} {seen}")).or_default() += 1;
                    }
                    Err(e) => errors.add(&format!("create Patient ({mode})"), &e),
                }
            }
            (ryw, eventual, headers, errors)
        });
    }
    let (mut ryw, mut eventual) = (Latencies::new(), Latencies::new());
    let (mut headers, mut errors) = (BTreeMap::new(), Errors::default());
    while let Some(Ok((r, e, h, err))) = users.join_next().await {
        ryw.merge(&r);
        eventual.merge(&e);
        for (k, n) in h {
            *headers.entry(k).or_default() += n;
        }
        errors.merge(err);
    }
    let (r, e) = (ryw.summary(), eventual.summary());
    ConsistencyResult {
        seconds: duration.as_secs_f64(),
        concurrency,
        extra_p50_percent: extra_percent(Some(r.p50_ms), Some(e.p50_ms)).filter(|_| r.count > 0),
        extra_p99_percent: extra_percent(Some(r.p99_ms), Some(e.p99_ms)).filter(|_| r.count > 0),
        read_your_writes: r,
        eventual: e,
        projection_headers: headers,
        errors,
    }
}
