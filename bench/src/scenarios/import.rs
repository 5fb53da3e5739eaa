//! P2, import: every Synthea transaction Bundle in a directory (one
//! synthetic patient each, `urn:uuid:` references between entries) is
//! POSTed to the tenant's base as a transaction by a few parallel clients.
//! A transaction is answered once applied to the read model, so resources
//! per second is the rate at which imported data becomes readable. Bundles
//! the server refuses (e.g. more entries than one atomic batch holds) are
//! counted and reported, not retried or split.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Fhir;
use crate::scenarios::Errors;
use crate::stats::{Latencies, Summary, rate};

/// One Bundle, ready to send.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub body: Bytes,
    pub entries: usize,
}

/// Reads every `*.json` and `*.json.gz` Bundle under `dir`, in name order.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Bundle>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".json") || s.ends_with(".json.gz")))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let raw = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let body = if path.extension().is_some_and(|e| e == "gz") {
            let mut json = Vec::with_capacity(raw.len() * 8);
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut json)
                .with_context(|| format!("gunzip {}", path.display()))?;
            json
        } else {
            raw
        };
        let entries = count_entries(&body).with_context(|| format!("parse {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push(Bundle { name, body: Bytes::from(body), entries });
    }
    Ok(out)
}

/// Entries of a Bundle, without building its resources.
pub fn count_entries(body: &[u8]) -> serde_json::Result<usize> {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(default)]
        entry: Vec<serde::de::IgnoredAny>,
    }
    Ok(serde_json::from_slice::<Shape>(body)?.entry.len())
}

/// What P2 measured.
#[derive(Debug, Clone, Serialize)]
pub struct ImportResult {
    pub seconds: f64,
    pub concurrency: usize,
    pub bundles: usize,
    pub bundles_applied: usize,
    /// Entries of the applied Bundles.
    pub resources: u64,
    pub resources_per_sec: Option<f64>,
    pub bytes: u64,
    /// Time per Bundle, from request to the applied response.
    pub bundle_latency: Summary,
    pub errors: Errors,
}

pub async fn run(fhir: &Fhir, tenant: &str, bundles: Arc<Vec<Bundle>>, concurrency: usize) -> ImportResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (fhir, tenant, bundles, next) = (fhir.clone(), tenant.to_owned(), bundles.clone(), next.clone());
        clients.spawn(async move {
            let (mut lat, mut errors, mut applied, mut resources, mut bytes) =
                (Latencies::new(), Errors::default(), 0usize, 0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = bundles.get(i) else { break };
                let sent = Instant::now();
                match fhir.transaction(&tenant, b.body.clone()).await {
                    Ok(()) => {
                        lat.record(sent.elapsed());
                        applied += 1;
                        resources += b.entries as u64;
                        bytes += b.body.len() as u64;
                    }
                    Err(e) => errors.add(&format!("transaction {} ({} entries)", b.name, b.entries), &e),
                }
            }
            (lat, errors, applied, resources, bytes)
        });
    }
    let (mut lat, mut errors, mut applied, mut resources, mut bytes) = (Latencies::new(), Errors::default(), 0, 0, 0);
    while let Some(Ok((l, e, a, r, b))) = clients.join_next().await {
        lat.merge(&l);
        errors.merge(e);
        applied += a;
        resources += r;
        bytes += b;
    }
    let elapsed: Duration = started.elapsed();
    ImportResult {
        seconds: elapsed.as_secs_f64(),
        concurrency,
        bundles: bundles.len(),
        bundles_applied: applied,
        resources,
        resources_per_sec: rate(resources, elapsed),
        bytes,
        bundle_latency: lat.summary(),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_counted_without_caring_what_they_hold() {
        let b = br#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"a":1}},{"request":{}}]}"#;
        assert_eq!(count_entries(b).unwrap(), 2);
        assert_eq!(count_entries(br#"{"resourceType":"Bundle"}"#).unwrap(), 0);
        assert!(count_entries(b"[").is_err());
    }
}
