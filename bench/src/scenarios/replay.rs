//! P6, replay: `fhirstream replay --tenant T` of the tenant P2 loaded (all
//! Synthea Bundles), as the operator runs it, beside the raw consume rate
//! of the same subjects (a plain JetStream consumer that reads them and
//! does nothing else), measured right after it in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use serde::Serialize;

use crate::stats::rate;

/// What P6 measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    pub tenant_events: u64,
    pub replay_seconds: f64,
    pub replay_events_per_sec: Option<f64>,
    /// The replay's own summary line.
    pub replay_report: String,
    pub raw_consume_seconds: f64,
    pub raw_consume_events_per_sec: Option<f64>,
}

/// Replays `tenant` with the server's binary, then consumes its subjects raw.
pub async fn run(
    fhirstream: &Path,
    nats_url: &str,
    database_url: &str,
    js: &jetstream::Context,
    tenant: &str,
) -> anyhow::Result<ReplayResult> {
    let started = Instant::now();
    let out = tokio::process::Command::new(fhirstream)
        .args(["replay", "--tenant", tenant, "--quiet", "--log", "error"])
        .args(["--nats-url", nats_url, "--database-url", database_url])
        .output()
        .await
        .with_context(|| format!("run {} replay", fhirstream.display()))?;
    let replay_seconds = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(out.status.success(), "replay failed: {report} {}", String::from_utf8_lossy(&out.stderr));
    // "replayed N events of T in ..."
    let events: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("read the event count from the replay's report: {report}"))?;
    let (raw_events, raw_seconds) = consume(js, &format!("fhir.{tenant}.*.*")).await?;
    anyhow::ensure!(raw_events == events, "the raw consumer read {raw_events} events, the replay {events}");
    Ok(ReplayResult {
        tenant_events: events,
        replay_seconds,
        replay_events_per_sec: rate(events, Duration::from_secs_f64(replay_seconds)),
        replay_report: report,
        raw_consume_seconds: raw_seconds,
        raw_consume_events_per_sec: rate(raw_events, Duration::from_secs_f64(raw_seconds)),
    })
}

/// Reads every message of `filter` in the resource stream once, without
/// acks or decoding: the floor under any fold of those events.
async fn consume(js: &jetstream::Context, filter: &str) -> anyhow::Result<(u64, f64)> {
    let stream = js.get_stream("FHIR").await.context("open the resource stream")?;
    let started = Instant::now();
    let mut consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .context("create the raw consumer")?;
    let total = consumer.info().await.context("read the raw consumer's pending count")?.num_pending;
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.context("pull messages")?;
    let mut seen = 0u64;
    while seen < total {
        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
            Ok(Some(m)) => {
                m.map_err(|e| anyhow::anyhow!("raw consume: {e}"))?;
                seen += 1;
            }
            Ok(None) => break,
            Err(_) => anyhow::bail!("raw consume stalled after {seen} of {total} events"),
        }
    }
    Ok((seen, started.elapsed().as_secs_f64()))
}
