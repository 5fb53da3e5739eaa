//! P3, read by id: a fixed set of live resources (whole chains, so every
//! type is read) is created first, then every virtual user reads random
//! ones until the deadline. The raw select reads the same set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Fhir;
use crate::payloads::{Kind, Refs, resource};
use crate::scenarios::{Errors, Rng};
use crate::stats::{Latencies, Summary, rate};

/// The resources P3 reads: (type, id).
pub type ReadSet = Arc<Vec<(Kind, String)>>;

/// Creates at least `count` resources (whole chains) and returns them.
pub async fn seed(fhir: &Fhir, tenant: &str, count: usize, concurrency: usize) -> anyhow::Result<ReadSet> {
    let chains = count.div_ceil(Kind::CHAIN.len()).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let mut users = JoinSet::new();
    for _ in 0..concurrency.min(chains) {
        let (fhir, tenant, next) = (fhir.clone(), tenant.to_owned(), next.clone());
        users.spawn(async move {
            let mut made = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= chains {
                    return Ok::<_, anyhow::Error>(made);
                }
                let mut refs = Refs::default();
                for kind in Kind::CHAIN {
                    let body = serde_json::to_vec(&resource(kind, &refs, 900_000_000 + n as u64, 0))?;
                    let created = fhir
                        .create(&tenant, kind, body, false)
                        .await
                        .with_context(|| format!("create a {} for P3", kind.as_str()))?;
                    refs.set(kind, created.id.clone());
                    made.push((kind, created.id));
                }
            }
        });
    }
    let mut all = Vec::with_capacity(chains * Kind::CHAIN.len());
    while let Some(made) = users.join_next().await {
        all.extend(made.context("a P3 seeding task failed")??);
    }
    Ok(Arc::new(all))
}

/// What P3 (or the raw select) measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    pub seconds: f64,
    pub concurrency: usize,
    pub set_size: usize,
    pub reads: u64,
    pub reads_per_sec: Option<f64>,
    pub latency: Summary,
    pub errors: Errors,
}

/// Reads random members of `set` with `concurrency` users for `duration`.
pub async fn run(fhir: &Fhir, tenant: &str, set: &ReadSet, concurrency: usize, duration: Duration) -> ReadResult {
    let deadline = Instant::now() + duration;
    let mut users = JoinSet::new();
    for vu in 0..concurrency {
        let (fhir, tenant, set) = (fhir.clone(), tenant.to_owned(), set.clone());
        users.spawn(async move {
            let (mut lat, mut errors, mut rng) = (Latencies::new(), Errors::default(), Rng::new(vu as u64 + 1));
            while Instant::now() < deadline {
                let (kind, id) = &set[rng.below(set.len())];
                let started = Instant::now();
                let res = fhir.read(&tenant, *kind, id).await;
                let done = Instant::now();
                if done > deadline {
                    break;
                }
                match res {
                    Ok(()) => lat.record(done - started),
                    Err(e) => errors.add(&format!("read {}", kind.as_str()), &e),
                }
            }
            (lat, errors)
        });
    }
    let (mut lat, mut errors) = (Latencies::new(), Errors::default());
    while let Some(Ok((l, e))) = users.join_next().await {
        lat.merge(&l);
        errors.merge(e);
    }
    ReadResult {
        seconds: duration.as_secs_f64(),
        concurrency,
        set_size: set.len(),
        reads: lat.count(),
        reads_per_sec: rate(lat.count(), duration),
        latency: lat.summary(),
        errors,
    }
}
