//! The tenant registry: an in-memory fold of the tenant stream.
//!
//! Every process that serves requests follows `fhirstream.tenants.>` (every
//! event, so a message that is not a genuine tenant event can be skipped
//! without hiding the genuine one before it) and answers "does tenant T exist, and how is it
//! configured" from memory. A miss is confirmed with a direct get of the
//! tenant's subject, the source of truth, so a tenant created a moment ago
//! by another process is never reported unknown.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{
    self, consumer,
    stream::{DirectGetError, DirectGetErrorKind},
};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tracing::{Instrument as _, info_span, warn};

use schemas::subject::{TENANT_SUBJECTS, tenant_subject};

use crate::genuine::{self, Reader};

/// Most messages read walking a tenant subject back to its last genuine
/// event; beyond it the lookup fails rather than trusting what it found.
const MAX_WALK: u32 = 10_000;

/// A direct get's message, `None` when the subject has none.
fn direct(r: Result<StreamMessage, DirectGetError>) -> anyhow::Result<Option<StreamMessage>> {
    match r {
        Ok(m) => Ok(Some(m)),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("look the tenant up in the stream")),
    }
}
use schemas::{Incarnation, TenantConfig, TenantEvent, TenantEventOp, TenantId};

/// What the registry knows of a live tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantState {
    pub id: TenantId,
    pub name: String,
    pub config: TenantConfig,
    pub updated_at: DateTime<Utc>,
    /// Stream sequence of the event this state comes from.
    #[serde(skip)]
    pub seq: u64,
    /// The tenant's current life; tokens issued before it are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Incarnation>,
}

/// The newest known event of a tenant; `None` state is a deletion, kept so
/// an older event can never bring the tenant back.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    state: Option<TenantState>,
}

/// Shared handle to the registry.
#[derive(Clone)]
pub struct TenantRegistry {
    entries: Arc<RwLock<HashMap<TenantId, Entry>>>,
    stream: jetstream::stream::Stream,
}

impl TenantRegistry {
    /// Opens the tenant stream and starts following it in the background.
    pub async fn follow(js: &jetstream::Context, stream_name: &str) -> anyhow::Result<Self> {
        let stream = js.get_stream(stream_name).await.context("open the tenant stream")?;
        let registry = Self { entries: Arc::default(), stream };
        let follower = registry.clone();
        tokio::spawn(
            async move {
                loop {
                    if let Err(e) = follower.follow_once().await {
                        warn!(error = %format!("{e:#}"), "tenant registry follower restarting");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            .instrument(info_span!("tenant_registry")),
        );
        Ok(registry)
    }

    async fn follow_once(&self) -> anyhow::Result<()> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: TENANT_SUBJECTS.into(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("create the tenant follower")?;
        let mut messages = consumer.messages().await.context("follow tenant events")?;
        while let Some(msg) = messages.next().await {
            let msg = msg.context("receive a tenant event")?;
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            if let Some(event) =
                genuine::tenant_event(Reader::Registry, &msg.subject, seq, msg.headers.as_ref(), &msg.payload)
            {
                self.fold(seq, event);
            }
        }
        anyhow::bail!("tenant event stream ended")
    }

    /// Applies one event, unless a newer one is already known.
    fn fold(&self, seq: u64, event: TenantEvent) {
        let state = (event.op != TenantEventOp::Deleted).then(|| TenantState {
            id: event.tenant.clone(),
            name: event.name,
            config: event.config,
            updated_at: event.at,
            seq,
            incarnation: event.incarnation,
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match entries.get(&event.tenant) {
            Some(known) if known.seq >= seq => {}
            _ => {
                entries.insert(event.tenant, Entry { seq, state });
            }
        }
    }

    /// The tenant's state, or `None` if it does not exist (or was deleted).
    pub async fn get(&self, tenant: &TenantId) -> anyhow::Result<Option<TenantState>> {
        if let Some(entry) = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(tenant)
            && entry.state.is_some()
        {
            return Ok(entry.state.clone());
        }
        // Not known as live here: ask the stream, which is never stale.
        let Some((seq, event)) = self.last_genuine(tenant).await? else {
            return Ok(None);
        };
        self.fold(seq, event);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        Ok(entries.get(tenant).and_then(|e| e.state.clone()))
    }

    /// The tenant subject's last genuine event. The last message almost
    /// always is one; when it is not, it is skipped and the subject (a
    /// handful of lifecycle events) is walked from its start.
    async fn last_genuine(&self, tenant: &TenantId) -> anyhow::Result<Option<(u64, TenantEvent)>> {
        let subject = tenant_subject(tenant);
        let check = |m: &StreamMessage| {
            genuine::tenant_event(Reader::Registry, &subject, m.sequence, Some(&m.headers), &m.payload)
        };
        let Some(last) = direct(self.stream.direct_get_last_for_subject(subject.as_str()).await)? else {
            return Ok(None);
        };
        if let Some(event) = check(&last) {
            return Ok(Some((last.sequence, event)));
        }
        let mut found = None;
        let mut from = 1;
        for _ in 0..MAX_WALK {
            let next = direct(self.stream.direct_get_next_for_subject(subject.as_str(), Some(from)).await)?;
            let Some(m) = next.filter(|m| m.sequence < last.sequence) else { return Ok(found) };
            from = m.sequence + 1;
            if let Some(event) = check(&m) {
                found = Some((m.sequence, event));
            }
        }
        anyhow::bail!("{subject} holds too many messages that are not tenant events")
    }

    /// What this process already knows of a live tenant, without asking
    /// the stream (for hot paths that can fall back to defaults).
    pub fn known(&self, tenant: &TenantId) -> Option<TenantState> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(tenant).and_then(|e| e.state.clone())
    }

    /// Every live tenant, sorted by id.
    pub fn list(&self) -> Vec<TenantState> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<TenantState> = entries.values().filter_map(|e| e.state.clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Records an event this process has just published, so its own next
    /// request sees it without waiting for the follower.
    pub fn observe(&self, seq: u64, event: TenantEvent) {
        self.fold(seq, event);
    }
}

/// Every live tenant, read once from the stream (for the CLI).
pub async fn snapshot(stream: &jetstream::stream::Stream) -> anyhow::Result<Vec<TenantState>> {
    let registry = TenantRegistry { entries: Arc::default(), stream: stream.clone() };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: TENANT_SUBJECTS.into(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("create a tenant reader")?;
    let mut pending = consumer.cached_info().num_pending;
    if pending > 0 {
        let mut messages = consumer.messages().await.context("read tenant events")?;
        while pending > 0 {
            let Some(msg) = messages.next().await else { break };
            let msg = msg.context("receive a tenant event")?;
            let info = msg.info().map_err(|e| anyhow::anyhow!("tenant event metadata: {e}"))?;
            pending = info.pending;
            let seq = info.stream_sequence;
            if let Some(event) =
                genuine::tenant_event(Reader::Registry, &msg.subject, seq, msg.headers.as_ref(), &msg.payload)
            {
                registry.fold(seq, event);
            }
        }
    }
    Ok(registry.list())
}
