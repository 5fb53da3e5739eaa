//! P1, the CRUD mix: every virtual user creates a chain of nine linked
//! resources, then reads, updates and deletes each of them, and starts
//! over until the phase's deadline. Operations that finish after the
//! deadline are not counted, so the rate is over exactly the phase.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Fhir;
use crate::payloads::{Kind, Refs, resource};
use crate::scenarios::Errors;
use crate::stats::{Latencies, Summary, rate};

/// Latencies of each operation type, and what failed.
#[derive(Debug, Default)]
pub struct Tally {
    pub create: Latencies,
    pub read: Latencies,
    pub update: Latencies,
    pub delete: Latencies,
    pub chains: u64,
    pub errors: Errors,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.create.merge(&other.create);
        self.read.merge(&other.read);
        self.update.merge(&other.update);
        self.delete.merge(&other.delete);
        self.chains += other.chains;
        self.errors.merge(other.errors);
    }

    pub fn ops(&self) -> u64 {
        self.create.count() + self.read.count() + self.update.count() + self.delete.count()
    }

    pub fn writes(&self) -> u64 {
        self.create.count() + self.update.count() + self.delete.count()
    }
}

/// What P1 measured.
#[derive(Debug, Clone, Serialize)]
pub struct CrudResult {
    pub seconds: f64,
    pub concurrency: usize,
    pub chains: u64,
    pub ops: u64,
    pub ops_per_sec: Option<f64>,
    pub writes_per_sec: Option<f64>,
    pub create: Summary,
    pub read: Summary,
    pub update: Summary,
    pub delete: Summary,
    pub errors: Errors,
}

/// Runs the mix with `concurrency` users for `duration`.
pub async fn run(fhir: &Fhir, tenant: &str, concurrency: usize, duration: Duration) -> CrudResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut users = JoinSet::new();
    for vu in 0..concurrency {
        let (fhir, tenant) = (fhir.clone(), tenant.to_owned());
        users.spawn(async move {
            let mut tally = Tally::default();
            let mut n = vu as u64 * 1_000_000;
            while Instant::now() < deadline {
                chain(&fhir, &tenant, n, deadline, &mut tally).await;
                n += 1;
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(t) = users.join_next().await {
        if let Ok(t) = t {
            all.merge(t);
        }
    }
    CrudResult {
        seconds: duration.as_secs_f64(),
        concurrency,
        chains: all.chains,
        ops: all.ops(),
        ops_per_sec: rate(all.ops(), duration),
        writes_per_sec: rate(all.writes(), duration),
        create: all.create.summary(),
        read: all.read.summary(),
        update: all.update.summary(),
        delete: all.delete.summary(),
        errors: all.errors,
    }
}

/// Records `started.elapsed()` into `lat` unless the deadline has passed.
fn timed(lat: &mut Latencies, started: Instant, deadline: Instant) -> bool {
    let now = Instant::now();
    if now > deadline {
        return false;
    }
    lat.record(now - started);
    true
}

/// One chain: 9 creates, 9 reads, 9 updates, 9 deletes.
async fn chain(fhir: &Fhir, tenant: &str, n: u64, deadline: Instant, t: &mut Tally) {
    let mut refs = Refs::default();
    let mut created = Vec::with_capacity(Kind::CHAIN.len());
    for kind in Kind::CHAIN {
        let body = serde_json::to_vec(&resource(kind, &refs, n, 0)).unwrap_or_default();
        let started = Instant::now();
        match fhir.create(tenant, kind, body, false).await {
            Ok(c) => {
                if !timed(&mut t.create, started, deadline) {
                    return;
                }
                refs.set(kind, c.id);
                created.push(kind);
            }
            Err(e) if Instant::now() <= deadline => t.errors.add(&format!("create {}", kind.as_str()), &e),
            Err(_) => return,
        }
    }
    for &kind in &created {
        let id = refs.get(kind).unwrap_or_default();
        let started = Instant::now();
        match fhir.read(tenant, kind, id).await {
            Ok(()) if timed(&mut t.read, started, deadline) => {}
            Err(e) if Instant::now() <= deadline => t.errors.add(&format!("read {}", kind.as_str()), &e),
            _ => return,
        }
    }
    for &kind in &created {
        let id = refs.get(kind).unwrap_or_default();
        let body = serde_json::to_vec(&resource(kind, &refs, n, 1)).unwrap_or_default();
        let started = Instant::now();
        match fhir.update(tenant, kind, id, body).await {
            Ok(()) if timed(&mut t.update, started, deadline) => {}
            Err(e) if Instant::now() <= deadline => t.errors.add(&format!("update {}", kind.as_str()), &e),
            _ => return,
        }
    }
    for &kind in &created {
        let id = refs.get(kind).unwrap_or_default();
        let started = Instant::now();
        match fhir.delete(tenant, kind, id).await {
            Ok(()) if timed(&mut t.delete, started, deadline) => {}
            Err(e) if Instant::now() <= deadline => t.errors.add(&format!("delete {}", kind.as_str()), &e),
            _ => return,
        }
    }
    t.chains += 1;
}
