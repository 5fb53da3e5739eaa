//! The event store: fhirstream's JetStream streams and the two operations
//! the write side needs from them — read a subject's last event, and append
//! an event that must follow it.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{self, DirectGetErrorKind, StorageType},
};
use bytes::Bytes;
use uuid::Uuid;

use schemas::genuine::{NotGenuine, genuine_resource_event, genuine_tenant_event};
use schemas::subject::{RESOURCE_SUBJECTS, TENANT_SUBJECTS};

use crate::CommandError;
use crate::batch_slots::{BatchLimits, BatchSlots};

pub use schemas::genuine::{OP_HEADER, VERSION_HEADER};

/// Names and durability of the streams.
#[derive(Debug, Clone)]
pub struct StreamNames {
    /// The resource stream, subjects `fhir.>` (default `FHIR`).
    pub resources: String,
    /// The tenant-registry stream, subjects `fhirstream.tenants.>`.
    pub tenants: String,
    /// Replicas of each stream (3 in a NATS cluster).
    pub replicas: usize,
}

impl Default for StreamNames {
    fn default() -> Self {
        Self { resources: "FHIR".into(), tenants: "FHIRSTREAM_TENANTS".into(), replicas: 1 }
    }
}

/// The last genuine event of a subject, as far as the write side cares.
#[derive(Debug, Clone)]
pub struct LastEvent {
    pub seq: u64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Where a subject ends: its last sequence, which the next append on it
/// must expect, and its last genuine event. They differ only when messages
/// that are not fhirstream's events (see `schemas::genuine`) were placed
/// on the subject: those are skipped, but a write must still follow them.
#[derive(Debug, Clone, Default)]
pub struct SubjectTail {
    /// The subject's last stream sequence (0: empty).
    pub seq: u64,
    /// Its last genuine event, if any.
    pub last: Option<LastEvent>,
}

/// Most messages read walking a subject back to its last genuine event
/// (only needed after a forged message); beyond it the write is refused as
/// unavailable rather than trusting what it found.
const MAX_WALK: u32 = 10_000;

/// Handle to the streams.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    ack_timeout: Duration,
    resources: jetstream::stream::Stream,
    tenants: jetstream::stream::Stream,
    /// Atomic batches this process has open at once, shared fairly between
    /// tenants: JetStream refuses more than a few dozen per stream (429,
    /// "too many inflight").
    batch_slots: std::sync::Arc<BatchSlots>,
    /// Most search index rows one written resource may have (0: no cap).
    max_index_rows: usize,
}
/// How often a batch the server turned away as too many in flight is tried
/// again before the write is reported unavailable (503).
const BATCH_START_RETRIES: u32 = 6;

impl EventStore {
    /// Creates or updates both streams, then opens them. `ack_timeout` bounds
    /// how long a write waits for JetStream before reporting it unavailable.
    pub async fn open(client: async_nats::Client, names: &StreamNames, ack_timeout: Duration) -> anyhow::Result<Self> {
        let js = jetstream::ContextBuilder::new().timeout(ack_timeout).build(client);
        let resources = js
            .create_or_update_stream(stream::Config {
                name: names.resources.clone(),
                description: Some("fhirstream resource events: fhir.{tenant}.{type}.{id}".into()),
                subjects: vec![RESOURCE_SUBJECTS.into()],
                storage: StorageType::File,
                num_replicas: names.replicas,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                allow_atomic_publish: true,
                ..Default::default()
            })
            .await
            .with_context(|| format!("create or update the resource stream {}", names.resources))?;
        let tenants = js
            .create_or_update_stream(stream::Config {
                name: names.tenants.clone(),
                description: Some("fhirstream tenant registry events: fhirstream.tenants.{tenant}".into()),
                subjects: vec![TENANT_SUBJECTS.into()],
                storage: StorageType::File,
                num_replicas: names.replicas,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .with_context(|| format!("create or update the tenant stream {}", names.tenants))?;
        let resources = js.get_stream(resources.config.name).await.context("open the resource stream")?;
        let tenants = js.get_stream(tenants.config.name).await.context("open the tenant stream")?;
        let batch_slots = BatchSlots::new(BatchLimits::default());
        let max_index_rows = crate::index_cap::DEFAULT_MAX_INDEX_ROWS;
        Ok(Self { js, ack_timeout, resources, tenants, batch_slots, max_index_rows })
    }

    /// The same store with other shares of atomic batches.
    pub fn with_batch_limits(mut self, limits: BatchLimits) -> Self {
        self.batch_slots = BatchSlots::new(limits);
        self
    }

    /// The same store with another cap on a resource's index rows.
    pub fn with_max_index_rows(mut self, max: usize) -> Self {
        self.max_index_rows = max;
        self
    }

    /// Most bytes one resource may have: what one event can carry (the
    /// NATS payload limit), less room for the envelope around it.
    pub fn max_resource_bytes(&self) -> usize {
        self.js.client().server_info().max_payload.saturating_sub(4 * 1024)
    }

    /// Most search index rows one written resource may have (0: no cap).
    pub fn max_index_rows(&self) -> usize {
        self.max_index_rows
    }

    /// The JetStream context, for callers that need more than this API.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn resource_stream(&self) -> &jetstream::stream::Stream {
        &self.resources
    }

    pub fn tenant_stream(&self) -> &jetstream::stream::Stream {
        &self.tenants
    }

    /// Fails at once while the client is not connected to NATS: the client
    /// would otherwise queue the request until it reconnects or the ack
    /// timeout passes, so every write would hang for the whole timeout.
    fn require_connected(&self) -> Result<(), CommandError> {
        match self.js.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(CommandError::Unavailable(format!("NATS is not connected ({state})"))),
        }
    }

    /// The tail of a resource subject: its last sequence and its last
    /// genuine event.
    pub async fn resource_tail(&self, subject: &str) -> Result<SubjectTail, CommandError> {
        self.require_connected()?;
        tail_on(&self.resources, subject, |m| {
            genuine_resource_event(subject, |n| header(&m.headers, n), &m.payload).map(drop)
        })
        .await
    }

    /// The last genuine event on a resource subject, if any.
    pub async fn last_resource_event(&self, subject: &str) -> Result<Option<LastEvent>, CommandError> {
        Ok(self.resource_tail(subject).await?.last)
    }

    /// The last message on a claim subject (identifier and id claims), if
    /// any. Claims are not resource events; their readers decode them
    /// leniently and the claim is only a hint checked against the
    /// resource's own (genuine) events.
    pub async fn last_claim(&self, subject: &str) -> Result<Option<LastEvent>, CommandError> {
        self.require_connected()?;
        tail_on(&self.resources, subject, |_| Ok(())).await.map(|t| t.last)
    }

    /// The tail of a tenant's lifecycle subject.
    pub async fn tenant_tail(&self, subject: &str) -> Result<SubjectTail, CommandError> {
        self.require_connected()?;
        tail_on(&self.tenants, subject, |m| {
            genuine_tenant_event(subject, |n| header(&m.headers, n), &m.payload).map(drop)
        })
        .await
    }

    /// Removes every resource event on `filter` (e.g. `fhir.acme.>`);
    /// returns how many.
    pub async fn purge_subjects(&self, filter: &str) -> Result<u64, CommandError> {
        let res = self
            .resources
            .purge()
            .filter(filter)
            .await
            .map_err(|e| CommandError::Unavailable(format!("purge {filter}: {e}")))?;
        Ok(res.purged)
    }

    /// Removes the events on `filter` whose sequence is at most `up_to`;
    /// later events are kept. Returns how many were removed.
    pub async fn purge_subjects_up_to(&self, filter: &str, up_to: u64) -> Result<u64, CommandError> {
        let res = self
            .resources
            .purge()
            .filter(filter)
            .sequence(up_to + 1)
            .await
            .map_err(|e| CommandError::Unavailable(format!("purge {filter}: {e}")))?;
        Ok(res.purged)
    }

    /// The resource stream's last sequence.
    pub async fn last_resource_seq(&self) -> Result<u64, CommandError> {
        let mut stream = self.resources.clone();
        let info = stream.info().await.map_err(|e| CommandError::Unavailable(format!("stream info: {e}")))?;
        Ok(info.state.last_sequence)
    }

    /// How many resource events the stream holds on `filter`.
    pub async fn count_subjects(&self, filter: &str) -> Result<u64, CommandError> {
        use futures::TryStreamExt as _;
        let subjects = self
            .resources
            .info_with_subjects(filter)
            .await
            .map_err(|e| CommandError::Unavailable(format!("count {filter}: {e}")))?;
        let counts: Vec<(String, usize)> =
            subjects.try_collect().await.map_err(|e| CommandError::Unavailable(format!("count {filter}: {e}")))?;
        Ok(counts.iter().map(|(_, n)| *n as u64).sum())
    }

    /// Appends a tenant event that must directly follow `expected_seq`.
    pub async fn append_tenant(
        &self,
        subject: String,
        event_id: Uuid,
        expected_seq: u64,
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        self.append(subject, event_id, expected_seq, &[], payload).await
    }

    /// Appends one event that must directly follow `expected_seq` on its
    /// subject (0: the subject must be empty). Returns its stream sequence.
    pub async fn append(
        &self,
        subject: String,
        event_id: Uuid,
        expected_seq: u64,
        headers: &[(&'static str, String)],
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        self.require_connected()?;
        let mut msg = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(event_id.to_string())
            .expected_last_subject_sequence(expected_seq);
        for (name, value) in headers {
            msg = msg.header(*name, value.as_str());
        }
        let started = std::time::Instant::now();
        let ack = self.js.send_publish(subject, msg).await.map_err(publish_error)?;
        let ack = ack.await.map_err(publish_error)?;
        metrics::histogram!("fhirstream_publish_duration_seconds", "kind" => "single")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("fhirstream_events_published_total").increment(1);
        Ok(ack.sequence)
    }
}

/// One message of an atomic batch.
#[derive(Debug)]
pub struct BatchMessage {
    pub subject: String,
    pub event_id: Uuid,
    /// Expected last sequence of the message's subject (0: empty subject).
    pub expected_seq: u64,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Vec<u8>,
}

impl EventStore {
    /// Appends several events as one JetStream atomic batch: consumers see
    /// all of them or none, and one failed expectation rejects them all.
    /// Returns each message's stream sequence, in order.
    pub async fn append_batch(&self, batch_id: &str, msgs: Vec<BatchMessage>) -> Result<Vec<u64>, CommandError> {
        let n = msgs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if n == 1 {
            let m = msgs.into_iter().next().context("one message")?;
            return Ok(vec![self.append(m.subject, m.event_id, m.expected_seq, &m.headers, m.payload).await?]);
        }
        if n > MAX_BATCH {
            return Err(CommandError::TooLarge(format!("{n} events exceed one atomic commit of {MAX_BATCH}")));
        }
        self.require_connected()?;
        // Every message is size-checked before the batch opens: a message
        // refused half-way would leave the batch open on the server until
        // its timeout, holding one of the stream's few batch slots.
        let max = self.js.client().server_info().max_payload;
        if let Some(m) = msgs.iter().find(|m| message_size(m) > max) {
            return Err(CommandError::TooLarge(format!(
                "an event of {} bytes exceeds the event stream's message size limit ({max} bytes)",
                message_size(m)
            )));
        }
        let tenant = msgs.iter().find_map(|m| tenant_of(&m.subject));
        let _slot = self.batch_slots.take(tenant.as_ref()).await?;
        let client = self.js.client();
        let started = std::time::Instant::now();
        let mut last_ack = None;
        for (i, m) in msgs.into_iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, m.event_id.to_string().as_str());
            h.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, m.expected_seq.to_string().as_str());
            h.insert(async_nats::header::NATS_BATCH_ID, batch_id);
            h.insert(async_nats::header::NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            for (name, value) in &m.headers {
                h.insert(*name, value.as_str());
            }
            let payload = Bytes::from(m.payload);
            if i == 0 {
                // The first message is a request, so a batch the server
                // refuses up front fails here instead of at the commit.
                let mut attempt = 0;
                loop {
                    let request = client.request_with_headers(m.subject.clone(), h.clone(), payload.clone());
                    let reply = tokio::time::timeout(self.ack_timeout, request)
                        .await
                        .map_err(|_| CommandError::Unavailable("atomic batch start timed out".into()))?
                        .map_err(|e| CommandError::Unavailable(format!("atomic batch start: {e}")))?;
                    match api_error_code(&reply.payload) {
                        None => break,
                        // Refused before anything was stored: try again shortly.
                        Some(TOO_MANY_INFLIGHT) if attempt < BATCH_START_RETRIES => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                        }
                        Some(code) => return Err(batch_error(code, &reply.payload)),
                    }
                }
            } else if i + 1 < n {
                client
                    .publish_with_headers(m.subject, h, payload)
                    .await
                    .map_err(|e| CommandError::Unavailable(format!("atomic batch: {e}")))?;
            } else {
                h.insert(async_nats::header::NATS_BATCH_COMMIT, async_nats::header::NATS_BATCH_COMMIT_FINAL);
                let ack = self
                    .js
                    .send_publish(m.subject, PublishMessage::build().headers(h).payload(payload))
                    .await
                    .map_err(publish_error)?
                    .await
                    .map_err(publish_error)?;
                last_ack = Some(ack.sequence);
            }
        }
        let last = last_ack.context("the commit message was sent")?;
        metrics::histogram!("fhirstream_publish_duration_seconds", "kind" => "atomic_batch")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("fhirstream_events_published_total").increment(n as u64);
        // A committed batch occupies consecutive sequences ending at the ack.
        Ok((0..n as u64).map(|k| last + 1 + k - n as u64).collect())
    }
}

/// The bytes a batch message occupies against NATS's payload limit: its
/// payload and headers, with room for the batch headers added when sent.
fn message_size(m: &BatchMessage) -> usize {
    let headers: usize = m.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    m.payload.len() + headers + m.subject.len() + 256
}

/// The tenant whose share a batch message counts against (`None` for the
/// shared id-claim space `fhir._ids`, which is no tenant's).
fn tenant_of(subject: &str) -> Option<schemas::TenantId> {
    let token = subject.strip_prefix("fhir.")?.split('.').next()?;
    schemas::TenantId::parse(token).ok()
}

/// Most events JetStream accepts in one atomic batch (server default).
pub const MAX_BATCH: usize = 1000;

/// The JetStream API error code in a reply, if the reply is an error.
fn api_error_code(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.get("error")?.get("err_code")?.as_u64()
}

/// JetStream's "atomic publish too many inflight" (HTTP-like code 429).
const TOO_MANY_INFLIGHT: u64 = 10210;

fn batch_error(code: u64, payload: &[u8]) -> CommandError {
    match code {
        TOO_MANY_INFLIGHT => CommandError::Unavailable("too many atomic commits in flight; retry".into()),
        // Wrong last sequence: another writer got there first.
        10071 => CommandError::Conflict,
        // Too many messages in one batch.
        10199 => CommandError::TooLarge("the commit exceeds the server's atomic batch limit".into()),
        _ => CommandError::Internal(anyhow::anyhow!(
            "atomic batch refused: {}",
            String::from_utf8_lossy(payload).chars().take(300).collect::<String>()
        )),
    }
}

/// A header's value, as the pure check in `schemas::genuine` reads it.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.as_str())
}

/// Reads a subject's tail. The last message is almost always genuine; when
/// it is not, it is skipped (counted, logged) and the subject is walked
/// from its start to find the last genuine event.
async fn tail_on(
    stream: &jetstream::stream::Stream,
    subject: &str,
    check: impl Fn(&async_nats::jetstream::message::StreamMessage) -> Result<(), NotGenuine> + Send + Sync,
) -> Result<SubjectTail, CommandError> {
    let last = match direct(stream.direct_get_last_for_subject(subject).await)? {
        None => return Ok(SubjectTail::default()),
        Some(m) => m,
    };
    let tail_seq = last.sequence;
    match check(&last) {
        Ok(()) => return Ok(SubjectTail { seq: tail_seq, last: Some(last_event(last)) }),
        Err(why) => skipped(subject, tail_seq, &why),
    }
    let mut found = None;
    let mut from = 1;
    for _ in 0..MAX_WALK {
        let next = direct(stream.direct_get_next_for_subject(subject, Some(from)).await)?;
        let Some(m) = next.filter(|m| m.sequence < tail_seq) else {
            return Ok(SubjectTail { seq: tail_seq, last: found });
        };
        from = m.sequence + 1;
        match check(&m) {
            Ok(()) => found = Some(last_event(m)),
            Err(why) => skipped(subject, m.sequence, &why),
        }
    }
    Err(CommandError::Unavailable(format!("{subject} holds too many messages that are not fhirstream events")))
}

fn last_event(m: async_nats::jetstream::message::StreamMessage) -> LastEvent {
    LastEvent { seq: m.sequence, headers: m.headers, payload: m.payload }
}

/// Records a skipped message: a WARN with the subject (never the payload)
/// and a counter labelled only by reader and reason (bounded cardinality).
fn skipped(subject: &str, seq: u64, why: &NotGenuine) {
    tracing::warn!(subject, seq, why = %why, "message that is not a genuine fhirstream event skipped");
    metrics::counter!("fhirstream_stream_messages_skipped_total", "reader" => "write", "reason" => why.reason())
        .increment(1);
}

/// A direct get's message, `None` when the subject has none.
fn direct(
    r: Result<async_nats::jetstream::message::StreamMessage, stream::DirectGetError>,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, CommandError> {
    match r {
        Ok(m) => Ok(Some(m)),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::TimedOut | DirectGetErrorKind::Request) => {
            Err(CommandError::Unavailable(e.to_string()))
        }
        Err(e) => Err(CommandError::Internal(anyhow::Error::new(e).context("read the subject's last event"))),
    }
}

fn publish_error(e: jetstream::context::PublishError) -> CommandError {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => CommandError::Conflict,
        PublishErrorKind::MaxPayloadExceeded => {
            CommandError::TooLarge(format!("the event exceeds the event stream's message size limit ({e})"))
        }
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound => {
            CommandError::Unavailable(e.to_string())
        }
        _ => CommandError::Internal(anyhow::Error::new(e).context("publish an event")),
    }
}
