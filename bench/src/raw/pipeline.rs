//! Raw baseline (b): the write pipeline with nothing else — publishers as
//! in (a), one pull consumer, and one writer that decodes each batch and
//! upserts it with `unnest` into `bench_raw`, advancing a checkpoint in the
//! same transaction and acking after the commit, as a correct projector
//! must. The rate is events from the first publish to the last commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream::Stream};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use schemas::{EventOp, ResourceEvent};

use crate::raw::PIPELINE_PREFIX;
use crate::raw::publish::{PublishResult, publish_chains};
use crate::stats::rate;

/// What the pipeline measured.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    /// From the first publish to the last commit.
    pub seconds: f64,
    pub events: u64,
    pub events_per_sec: Option<f64>,
    pub batches: u64,
    /// How long the last commit came after the last ack.
    pub drain_after_publish_ms: f64,
    pub publish: PublishResult,
}

pub async fn run(
    js: &jetstream::Context,
    stream: &Stream,
    pool: &PgPool,
    chains: u64,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<PipelineResult> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("benchraw-pipe".into()),
            filter_subject: format!("{PIPELINE_PREFIX}.>"),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(600),
            max_ack_pending: 100_000,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("create the raw pipeline consumer")?;
    let (expect_tx, expect_rx) = watch::channel(u64::MAX);
    let started = Instant::now();
    let writer = tokio::spawn(apply_all(consumer, pool.clone(), expect_rx, batch));
    let publish = publish_chains(js, PIPELINE_PREFIX, chains, concurrency).await?;
    let published = started.elapsed();
    expect_tx.send_replace(publish.events);
    let (events, batches) = tokio::time::timeout(Duration::from_secs(300), writer)
        .await
        .context("the raw pipeline did not drain within 300 s")?
        .context("the raw pipeline writer panicked")??;
    let elapsed = started.elapsed();
    Ok(PipelineResult {
        seconds: elapsed.as_secs_f64(),
        events,
        events_per_sec: rate(events, elapsed),
        batches,
        drain_after_publish_ms: elapsed.saturating_sub(published).as_secs_f64() * 1000.0,
        publish,
    })
}

/// Consumes and applies until `expect` events are applied; returns
/// (events applied, batches).
async fn apply_all(
    consumer: consumer::PullConsumer,
    pool: PgPool,
    mut expect: watch::Receiver<u64>,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .context("pull from the raw pipeline consumer")?;
    let batches = messages.chunks_timeout(batch.max(1), Duration::from_millis(2));
    tokio::pin!(batches);
    let (mut applied, mut count) = (0u64, 0u64);
    loop {
        if applied >= *expect.borrow() {
            return Ok((applied, count));
        }
        tokio::select! {
            b = batches.next() => {
                let Some(b) = b else { anyhow::bail!("the raw pipeline's message stream ended") };
                let mut events = Vec::with_capacity(b.len());
                let mut last = None;
                for m in b.into_iter().flatten() {
                    let seq = m.info().map_err(|e| anyhow::anyhow!("message without metadata: {e}"))?.stream_sequence;
                    let ev: ResourceEvent = serde_json::from_slice(&m.payload).context("decode a raw event")?;
                    events.push((seq, ev));
                    last = Some(m);
                }
                let Some(last) = last else { continue };
                write_batch(&pool, &events).await?;
                last.ack().await.map_err(|e| anyhow::anyhow!("ack a raw batch: {e}"))?;
                applied += events.len() as u64;
                count += 1;
            }
            changed = expect.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the raw publishers went away");
                }
            }
        }
    }
}

/// One transaction: every version, the newest state of each resource, and
/// the checkpoint — the projector's statements, on the scratch tables.
async fn write_batch(pool: &PgPool, events: &[(u64, ResourceEvent)]) -> anyhow::Result<()> {
    let mut v = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut newest: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (i, (seq, e)) in events.iter().enumerate() {
        v.0.push(e.tenant.as_str());
        v.1.push(e.resource_type.as_str());
        v.2.push(e.id.as_str());
        v.3.push(e.version.get() as i64);
        v.4.push(op_name(e.op));
        v.5.push(e.at);
        v.6.push(*seq as i64);
        v.7.push(e.resource.as_deref().map(|r| r.get()));
        let slot = newest.entry((e.tenant.as_str(), e.resource_type.as_str(), e.id.as_str())).or_insert(i);
        if events[*slot].1.version < e.version {
            *slot = i;
        }
    }
    let mut c = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for &i in newest.values() {
        let (seq, e) = &events[i];
        c.0.push(e.tenant.as_str());
        c.1.push(e.resource_type.as_str());
        c.2.push(e.id.as_str());
        c.3.push(e.version.get() as i64);
        c.4.push(e.op == EventOp::Delete);
        c.5.push(e.at);
        c.6.push(*seq as i64);
    }
    let max_seq = events.iter().map(|(s, _)| *s as i64).max().unwrap_or(0);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into bench_raw.resource_versions (tenant_id, resource_type, id, version, op, last_updated, seq, resource)
         select t, rt, i, v, o, lu, s, r::jsonb
         from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::timestamptz[], $7::int8[], $8::text[])
              as x(t, rt, i, v, o, lu, s, r)
         on conflict do nothing",
    )
    .bind(&v.0)
    .bind(&v.1)
    .bind(&v.2)
    .bind(&v.3)
    .bind(&v.4)
    .bind(&v.5)
    .bind(&v.6)
    .bind(&v.7)
    .execute(&mut *tx)
    .await
    .context("insert raw versions")?;
    sqlx::query(
        "insert into bench_raw.resources (tenant_id, resource_type, id, version, deleted, last_updated, seq)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::timestamptz[], $7::int8[])
         on conflict (tenant_id, resource_type, id) do update
         set version = excluded.version, deleted = excluded.deleted,
             last_updated = excluded.last_updated, seq = excluded.seq
         where bench_raw.resources.version < excluded.version",
    )
    .bind(&c.0)
    .bind(&c.1)
    .bind(&c.2)
    .bind(&c.3)
    .bind(&c.4)
    .bind(&c.5)
    .bind(&c.6)
    .execute(&mut *tx)
    .await
    .context("upsert raw current rows")?;
    sqlx::query("update bench_raw.checkpoints set seq = greatest(seq, $1) where name = 'raw'")
        .bind(max_seq)
        .execute(&mut *tx)
        .await
        .context("advance the raw checkpoint")?;
    tx.commit().await.context("commit a raw batch")?;
    Ok(())
}

fn op_name(op: EventOp) -> &'static str {
    match op {
        EventOp::Create => "create",
        EventOp::Update => "update",
        EventOp::Delete => "delete",
    }
}
