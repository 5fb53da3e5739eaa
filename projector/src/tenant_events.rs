//! Reading one tenant's resource events from the stream, in stream order,
//! up to a cut: what replay and verify fold.
//!
//! An ordered consumer (ephemeral, no acks, recreated by the client on a
//! gap) on `fhir.{tenant}.*.*` delivers the tenant's resource events and
//! none of its identifier claims, which have five tokens. Events are checked
//! against their subject exactly as the projector checks them, and a poison
//! event is skipped exactly as the projector skips it, so a fold of what
//! this reads is what the projector would have written.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tracing::warn;

use schemas::subject::tenant_resource_filter;
use schemas::{ResourceEvent, TenantId};

use crate::ProjectorError;
use crate::apply::Sequenced;
use crate::consumer::complete_commits;
use crate::genuine::{self, Reader};

/// Where a read stops: at stream sequence `until_seq`, and before the first
/// event stamped (`at`, its `meta.lastUpdated`) after `until_time`. Both
/// cut the stream into a prefix, so what is read is always a state the
/// tenant really was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub until_seq: u64,
    pub until_time: Option<DateTime<Utc>>,
}

impl Cut {
    /// Up to and including stream sequence `seq`.
    pub fn at_seq(seq: u64) -> Self {
        Self { until_seq: seq, until_time: None }
    }

    /// Whether the event at `seq`, stamped `at` (`None`: undecodable),
    /// belongs to the prefix; the first one that does not ends it.
    pub fn admits(&self, seq: u64, at: Option<DateTime<Utc>>) -> bool {
        let in_time = match (self.until_time, at) {
            (Some(until), Some(at)) => at <= until,
            _ => true,
        };
        seq <= self.until_seq && in_time
    }
}

/// Whole commits of events, and the highest sequence consumed with them
/// (poison events included, which the batch leaves out).
#[derive(Debug)]
pub struct EventBatch {
    pub events: Vec<Sequenced>,
    pub max_seq: u64,
}

/// How long a read waits for the next event it knows is there.
const NEXT_EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// An open read of one tenant's events after some sequence.
pub struct TenantEvents {
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    pending: u64,
}

impl TenantEvents {
    /// Opens an ordered consumer on the tenant's events after sequence `after`.
    pub async fn open(
        js: &jetstream::Context,
        stream: &str,
        tenant: &TenantId,
        after: u64,
    ) -> Result<Self, ProjectorError> {
        let stream = js.get_stream(stream).await.map_err(|e| ProjectorError::Stream(format!("open {stream}: {e}")))?;
        let deliver_policy = match after {
            0 => consumer::DeliverPolicy::All,
            n => consumer::DeliverPolicy::ByStartSequence { start_sequence: n + 1 },
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: tenant_resource_filter(tenant),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| ProjectorError::Stream(format!("create a consumer of {tenant}'s events: {e}")))?;
        let pending = consumer.cached_info().num_pending;
        Ok(Self { consumer, pending })
    }

    /// The tenant's events after the start, up to the stream's head (more
    /// than a cut may let through).
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Sends the events up to `cut` in batches of whole commits of about
    /// `batch_size`, until the cut or the stream's end as it was when each
    /// event was delivered. A commit that the cut splits (only an explicit
    /// sequence can) is left out whole. Returns the last sequence consumed
    /// within the cut (0 if none); stops early if the receiver goes away.
    pub async fn send(self, cut: Cut, batch_size: usize, tx: mpsc::Sender<EventBatch>) -> Result<u64, ProjectorError> {
        if self.pending == 0 {
            return Ok(0);
        }
        let stream_err = |e: &dyn std::fmt::Display| ProjectorError::Stream(format!("read events: {e}"));
        let mut messages = self.consumer.messages().await.map_err(|e| stream_err(&e))?;
        let mut carry: Vec<(u64, Option<ResourceEvent>)> = Vec::new();
        let mut last = 0;
        loop {
            let next = tokio::time::timeout(NEXT_EVENT_TIMEOUT, messages.next()).await;
            let msg = match next {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(e))) => return Err(stream_err(&e)),
                Ok(None) => return Err(stream_err(&"the stream ended")),
                Err(_) => return Err(stream_err(&"no event within 60 s although more were pending")),
            };
            let info = msg.info().map_err(|e| stream_err(&e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let event = genuine::resource_event(Reader::Replay, &msg.subject, seq, msg.headers.as_ref(), &msg.payload);
            if !cut.admits(seq, event.as_ref().map(|e| e.at)) {
                break;
            }
            last = seq;
            carry.push((seq, event));
            if carry.len() >= batch_size && !flush(&mut carry, &tx).await {
                return Ok(last);
            }
            if pending == 0 {
                break;
            }
        }
        flush(&mut carry, &tx).await;
        if !carry.is_empty() {
            warn!(events = carry.len(), "the cut splits a commit; its events before the cut are left out");
        }
        Ok(last)
    }
}

/// Sends the whole commits at the front of `carry`; false if nobody listens.
async fn flush(carry: &mut Vec<(u64, Option<ResourceEvent>)>, tx: &mpsc::Sender<EventBatch>) -> bool {
    let commits: Vec<_> = carry.iter().map(|(_, e)| e.as_ref().map(|e| &e.commit)).collect();
    let split = complete_commits(&commits);
    if split == 0 {
        return true;
    }
    let mut batch = EventBatch { events: Vec::with_capacity(split), max_seq: 0 };
    for (seq, event) in carry.drain(..split) {
        batch.max_seq = batch.max_seq.max(seq);
        if let Some(event) = event {
            batch.events.push(Sequenced::indexed(seq, event));
        }
    }
    tx.send(batch).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_admits_a_prefix_by_sequence_and_by_time() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let cut = Cut { until_seq: 10, until_time: Some(t("2026-01-01T12:00:00Z")) };
        assert!(cut.admits(10, Some(t("2026-01-01T12:00:00Z"))), "both bounds are inclusive");
        assert!(!cut.admits(11, Some(t("2026-01-01T11:00:00Z"))));
        assert!(!cut.admits(5, Some(t("2026-01-01T12:00:00.001Z"))));
        assert!(cut.admits(5, None), "a poison event carries no time; the sequence decides");
        assert!(Cut::at_seq(3).admits(3, Some(t("2100-01-01T00:00:00Z"))));
    }
}
