//! The projector's consume loop: JetStream in, PostgreSQL transactions out.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream::Stream};
use futures::StreamExt as _;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span, warn};

use schemas::ResourceEvent;
use schemas::subject::{RESOURCE_EVENT_SUBJECTS, applied_subject};

use crate::apply::Sequenced;
use crate::genuine::{self, Reader};
use crate::statistics::{self, Statistics};
use crate::store::Checkpoint;
use crate::tenants::TenantProjection;
use crate::{lanes, refusal, store};

/// How a projector runs.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Names the durable consumer, the checkpoint row and the lock.
    pub name: String,
    /// The resource stream (default `FHIR`).
    pub stream: String,
    /// The tenant-registry stream (default `FHIRSTREAM_TENANTS`).
    pub tenant_stream: String,
    /// Most events applied in one PostgreSQL transaction.
    pub batch_size: usize,
    /// Most bytes of event payloads pulled and applied in one batch; a
    /// single event larger than this still goes through on its own.
    pub batch_bytes: usize,
    /// Parts a large batch is split into, applied at once on their own
    /// connections (see [`crate::lanes`]); 1 applies every batch whole.
    pub lanes: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            name: "main".into(),
            stream: "FHIR".into(),
            tenant_stream: "FHIRSTREAM_TENANTS".into(),
            batch_size: 1000,
            batch_bytes: 16 * 1024 * 1024,
            lanes: 1,
        }
    }
}

/// A projector ready to run; `applied()` watches its checkpoint.
pub struct Projector {
    cfg: ProjectorConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    pool: PgPool,
    applied: watch::Sender<u64>,
    /// When the planner's statistics are refreshed.
    statistics: Statistics,
}

impl Projector {
    pub fn new(cfg: ProjectorConfig, client: async_nats::Client, pool: PgPool) -> Self {
        let js = jetstream::new(client.clone());
        Self { cfg, client, js, pool, applied: watch::Sender::new(0), statistics: Statistics::default() }
    }

    /// The stream sequence this projector has applied, as it advances.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Consumes until `cancel` fires, then finishes the batch in hand. Waits
    /// as a standby while another instance holds the projector's lock. The
    /// tenant projection runs beside the resource one, under the same lock.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let span = info_span!("projector", projector = %self.cfg.name);
        self.run_inner(cancel).instrument(span).await
    }

    async fn run_inner(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let lock = tokio::select! {
            lock = self.acquire_lock() => lock?,
            () = cancel.cancelled() => return Ok(()),
        };
        let tenants = TenantProjection {
            name: self.cfg.name.clone(),
            stream: self.cfg.tenant_stream.clone(),
            client: self.client.clone(),
            pool: self.pool.clone(),
        };
        let resources = async {
            let mut lock = lock;
            loop {
                // The lock lives as long as its PostgreSQL session: after a
                // PostgreSQL restart a standby may hold it, and two active
                // projectors would race on the same rows.
                let consumed = tokio::select! {
                    r = self.consume(&cancel) => Some(r),
                    () = lock_lost(&mut lock) => None,
                };
                match consumed {
                    Some(Ok(())) => return,
                    Some(Err(e)) => {
                        warn!(error = %format!("{e:#}"), "projector interrupted; resuming from its checkpoint");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            () = cancel.cancelled() => return,
                        }
                    }
                    None => {
                        warn!("the projector lock's PostgreSQL session ended; taking the lock again");
                        // Closed, never returned: a session that only answered
                        // slowly may still hold the lock.
                        drop(lock.detach());
                        lock = tokio::select! {
                            lock = self.reacquire_lock() => lock,
                            () = cancel.cancelled() => return,
                        };
                    }
                }
            }
        };
        tokio::join!(resources, tenants.run(cancel.clone()));
        Ok(())
    }

    /// [`Self::acquire_lock`] until PostgreSQL is back.
    async fn reacquire_lock(&self) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
        loop {
            match self.acquire_lock().await {
                Ok(lock) => return lock,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "taking the projector lock failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Holds a session-level advisory lock on a dedicated connection for as
    /// long as the returned connection lives.
    async fn acquire_lock(&self) -> anyhow::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        let key = format!("fhirstream.projector.{}", self.cfg.name);
        let mut announced = false;
        loop {
            let mut conn = self.pool.acquire().await.context("acquire the projector lock connection")?;
            let got: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut *conn)
                .await
                .context("try the projector lock")?;
            if got {
                info!("projector lock held; this instance is active");
                // The connection must never go back to the pool holding the lock.
                return Ok(conn);
            }
            if !announced {
                info!("another instance holds the projector lock; standing by");
                announced = true;
            }
            drop(conn);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn consume(&self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let checkpoint = store::checkpoint(&self.pool, &self.cfg.name).await.context("read the checkpoint")?;
        self.applied.send_replace(checkpoint);
        self.announce(checkpoint).await;
        let stream = self.js.get_stream(&self.cfg.stream).await.context("open the resource stream")?;
        let consumer = self.ensure_consumer(&stream, checkpoint).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.cfg.batch_size.max(1))
            .max_bytes_per_batch(self.pull_bytes())
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .context("start pulling events")?;
        let max = BatchBound { events: self.cfg.batch_size.max(1), bytes: self.cfg.batch_bytes.max(1) };
        let batches = batches(messages, max, |m| m.as_ref().map_or(0, |m| m.payload.len()));
        let mut carry = Vec::new();
        tokio::pin!(batches);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                batch = batches.next() => {
                    let Some(batch) = batch else { anyhow::bail!("the event stream ended") };
                    self.apply(&mut carry, batch).await?;
                }
                _ = heartbeat.tick() => {
                    let applied = *self.applied.borrow();
                    self.announce(applied).await;
                }
            }
        }
    }

    /// The byte bound of one pull request. JetStream refuses a pull whose
    /// bound is below the next message's size and would do so forever, so
    /// it is never below the largest message the server accepts.
    fn pull_bytes(&self) -> usize {
        let largest = self.client.server_info().max_payload.saturating_add(64 * 1024);
        self.cfg.batch_bytes.max(largest)
    }

    /// (Re-)creates the durable consumer at the checkpoint. The checkpoint
    /// in PostgreSQL is the only position that counts: a consumer left by an
    /// earlier session may hold deliveries that were never applied and would
    /// only come back after their ack wait, out of order, behind newer
    /// events that the sequence guard would then let overtake them. Starting
    /// every session with a fresh consumer at checkpoint + 1 keeps delivery in
    /// stream order; the advisory lock makes deleting it safe.
    async fn ensure_consumer(&self, stream: &Stream, checkpoint: u64) -> anyhow::Result<consumer::PullConsumer> {
        let durable = format!("projector-{}", self.cfg.name);
        if stream.consumer_info(&durable).await.is_ok() {
            stream.delete_consumer(&durable).await.context("delete the previous projector consumer")?;
        }
        let deliver_policy = if checkpoint == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence { start_sequence: checkpoint + 1 }
        };
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(durable),
                // Resource events only: identifier claims have five tokens.
                filter_subject: RESOURCE_EVENT_SUBJECTS.into(),
                ack_policy: consumer::AckPolicy::All,
                // Long enough that a batch being applied is never redelivered
                // behind its successors in the same session (a failed batch
                // ends the session; the next one starts at the checkpoint).
                ack_wait: Duration::from_secs(600),
                max_ack_pending: 100_000,
                deliver_policy,
                ..Default::default()
            })
            .await
            .context("create the projector consumer")
    }

    /// Applies what of `carry` + `batch` forms whole commits; keeps the
    /// tail of a commit that continues in the next pull in `carry`, so a
    /// transaction is always applied in one PostgreSQL transaction.
    async fn apply(
        &self,
        carry: &mut Vec<Consumed>,
        batch: Vec<Result<jetstream::Message, jetstream::consumer::pull::MessagesError>>,
    ) -> anyhow::Result<()> {
        for item in batch {
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %e, "pull status");
                    continue;
                }
            };
            let (seq, pending) = match msg.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => {
                    warn!(error = %e, "event without JetStream metadata skipped");
                    continue;
                }
            };
            let event =
                genuine::resource_event(Reader::Projector, &msg.subject, seq, msg.headers.as_ref(), &msg.payload);
            carry.push(Consumed { msg, seq, pending, event });
        }
        let split = complete_prefix(carry);
        if split == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut max_seq = 0;
        let mut pending = 0;
        let mut last_msg = None;
        let mut events = Vec::with_capacity(split);
        for c in carry.drain(..split) {
            max_seq = max_seq.max(c.seq);
            pending = c.pending;
            if let Some(event) = c.event {
                events.push(Sequenced::new(c.seq, event));
            }
            last_msg = Some(c.msg);
        }
        let count = events.len();
        let tenants = statistics::tenant_counts(&events);
        let newest_at = events.last().map(|s| s.event.at);
        // Refused data is recorded and skipped inside; only errors that a
        // retry may cure (PostgreSQL away, busy) come back here, and those
        // restart consumption from the checkpoint PostgreSQL holds. Retrying
        // in place would trust the checkpoint this instance last wrote, and
        // a PostgreSQL that crashed may have lost those commits (the pool
        // runs with synchronous_commit off): the lost events were acked
        // already, so only the checkpoint in the database brings them back.
        let known = *self.applied.borrow();
        // No tenant label: metrics never name tenants (the ERROR log does).
        let refused = |_: &Sequenced| {
            metrics::counter!("fhirstream_projector_refused_events_total", "projector" => self.cfg.name.clone())
                .increment(1);
        };
        let checkpoint = self.apply_parts(events, max_seq, known, &refused).await.context("apply a batch")?;
        self.statistics.after_batch(&self.pool, tenants, count as u64, pending).await;
        // Acking the last message acknowledges everything before it
        // (AckPolicy::All), and only after the commit above.
        if let Some(last) = last_msg
            && let Err(e) = last.ack().await
        {
            warn!(error = %e, "ack after commit failed; the batch will be redelivered and skipped");
        }
        debug!(count, checkpoint, "batch applied");
        let projector = self.cfg.name.clone();
        metrics::histogram!("fhirstream_projector_batch_events", "projector" => projector.clone()).record(count as f64);
        metrics::gauge!("fhirstream_projector_applied_sequence", "projector" => projector.clone())
            .set(checkpoint as f64);
        metrics::gauge!("fhirstream_projector_lag_events", "projector" => projector.clone()).set(pending as f64);
        if let Some(at) = newest_at {
            let behind = (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("fhirstream_projector_lag_seconds", "projector" => projector).set(behind);
        }
        self.applied.send_replace(checkpoint);
        self.announce(checkpoint).await;
        metrics::histogram!("fhirstream_projector_batch_seconds", "projector" => self.cfg.name.clone())
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Applies a batch in lanes: one part keeps its checkpoint in its own
    /// transaction; several parts are applied at once, each in its own
    /// transaction, and the checkpoint moves once all of them committed.
    /// A crash in between applies the committed parts again on restart,
    /// which changes nothing (migration 0009).
    async fn apply_parts(
        &self,
        events: Vec<Sequenced>,
        max_seq: u64,
        known: u64,
        refused: &(dyn Fn(&Sequenced) + Send + Sync),
    ) -> Result<u64, sqlx::Error> {
        let name = self.cfg.name.as_str();
        let mut parts = lanes::split(events, self.cfg.lanes);
        if parts.len() <= 1 {
            let part = parts.pop().unwrap_or_default();
            return refusal::apply_or_refuse(&self.pool, Checkpoint::InBatch(name), &part, max_seq, known, refused)
                .await;
        }
        let outside = Checkpoint::Outside { label: name };
        futures::future::try_join_all(parts.iter().map(|part| {
            let part_max = part.iter().map(|s| s.seq).max().unwrap_or(known);
            refusal::apply_or_refuse(&self.pool, outside, part, part_max, known, refused)
        }))
        .await?;
        store::set_checkpoint(&self.pool, name, max_seq).await?;
        Ok(max_seq.max(known))
    }

    async fn announce(&self, seq: u64) {
        if seq == 0 {
            return;
        }
        let subject = applied_subject(&self.cfg.name);
        if let Err(e) = self.client.publish(subject, seq.to_string().into()).await {
            debug!(error = %e, "could not announce the checkpoint");
        }
    }
}

/// Returns once the lock's session no longer answers (checked every second).
async fn lock_lost(lock: &mut sqlx::pool::PoolConnection<sqlx::Postgres>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = tokio::time::timeout(Duration::from_secs(5), sqlx::query("select 1").execute(&mut **lock)).await;
        if !matches!(alive, Ok(Ok(_))) {
            return;
        }
    }
}

/// How large one batch may grow: events and bytes of their payloads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchBound {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

/// Group commit: waits for one message, then takes whatever else has
/// already arrived, until `max` events or bytes (by `weight`) are reached.
/// An idle projector applies a lone write at once; a busy one gets large
/// batches because messages pile up while the previous batch is being
/// written, and the byte bound keeps a burst of large resources from
/// holding `events` times the largest body in memory.
pub(crate) fn batches<S, T>(
    messages: S,
    max: BatchBound,
    weight: impl Fn(&T) -> usize + Copy,
) -> impl futures::Stream<Item = Vec<T>>
where
    S: futures::Stream<Item = T> + Unpin,
{
    futures::stream::unfold(messages, move |mut messages| async move {
        let first = messages.next().await?;
        let mut bytes = weight(&first);
        let mut batch = vec![first];
        while batch.len() < max.events && bytes < max.bytes {
            match futures::FutureExt::now_or_never(messages.next()) {
                Some(Some(m)) => {
                    bytes += weight(&m);
                    batch.push(m);
                }
                _ => break,
            }
        }
        Some((batch, messages))
    })
}

/// A consumed message, its stream sequence and its event (`None`: poison).
pub(crate) struct Consumed {
    msg: jetstream::Message,
    seq: u64,
    /// Messages still pending on the consumer when this one was delivered.
    pending: u64,
    event: Option<ResourceEvent>,
}

/// How many leading messages form whole commits: a trailing commit whose
/// last event has not arrived yet is held back.
fn complete_prefix(consumed: &[Consumed]) -> usize {
    let commits: Vec<Option<&schemas::Commit>> = consumed.iter().map(|c| c.event.as_ref().map(|e| &e.commit)).collect();
    complete_commits(&commits)
}

/// The pure rule behind [`complete_prefix`].
pub(crate) fn complete_commits(commits: &[Option<&schemas::Commit>]) -> usize {
    let Some(Some(last)) = commits.last() else { return commits.len() };
    if last.index + 1 >= last.count {
        return commits.len();
    }
    let open = last.id;
    let tail = commits.iter().rev().take_while(|c| c.is_some_and(|c| c.id == open)).count();
    commits.len() - tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_whose_last_event_has_not_arrived_is_held_back() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let c = |id, index, count| schemas::Commit { id, index, count };
        let (a0, a1, b0, b1, b2) = (c(a, 0, 2), c(a, 1, 2), c(b, 0, 3), c(b, 1, 3), c(b, 2, 3));
        assert_eq!(complete_commits(&[Some(&a0), Some(&a1)]), 2);
        assert_eq!(complete_commits(&[Some(&a0), Some(&a1), Some(&b0), Some(&b1)]), 2);
        assert_eq!(complete_commits(&[Some(&b0)]), 0);
        assert_eq!(complete_commits(&[Some(&b0), Some(&b1), Some(&b2)]), 3);
        assert_eq!(complete_commits(&[Some(&a0), None]), 2, "poison never blocks");
        assert_eq!(complete_commits(&[]), 0);
    }

    #[test]
    fn a_batch_stops_at_its_byte_bound_but_always_takes_one_event() {
        let sizes = futures::stream::iter(vec![400usize, 400, 400, 5000, 10, 10, 10]);
        let max = BatchBound { events: 100, bytes: 1000 };
        let got: Vec<Vec<usize>> = futures::executor::block_on(batches(sizes, max, |n| *n).collect());
        assert_eq!(got, vec![vec![400, 400, 400], vec![5000], vec![10, 10, 10]]);
        let few = BatchBound { events: 2, bytes: usize::MAX };
        let got: Vec<Vec<usize>> =
            futures::executor::block_on(batches(futures::stream::iter([1, 2, 3]), few, |n| *n).collect());
        assert_eq!(got, vec![vec![1, 2], vec![3]]);
    }
}
