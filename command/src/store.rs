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

use schemas::subject::{RESOURCE_SUBJECTS, TENANT_SUBJECTS};

use crate::CommandError;

/// Header carrying an event's resource version, so the write side can read
/// a subject's state without decoding the envelope.
pub const VERSION_HEADER: &str = "Fhirstream-Version";
/// Header carrying an event's op (`create`, `update`, `delete`).
pub const OP_HEADER: &str = "Fhirstream-Op";

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

/// The last event of a subject, as far as the write side cares.
#[derive(Debug, Clone)]
pub struct LastEvent {
    pub seq: u64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Handle to the streams.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    resources: jetstream::stream::Stream,
    tenants: jetstream::stream::Stream,
}

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
        Ok(Self { js, resources, tenants })
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

    /// The last event on a resource subject, if any.
    pub async fn last_resource_event(&self, subject: &str) -> Result<Option<LastEvent>, CommandError> {
        last_on(&self.resources, subject).await
    }

    /// The last event on a tenant subject, if any.
    pub async fn last_tenant_event(&self, subject: &str) -> Result<Option<LastEvent>, CommandError> {
        last_on(&self.tenants, subject).await
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
        let mut msg = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(event_id.to_string())
            .expected_last_subject_sequence(expected_seq);
        for (name, value) in headers {
            msg = msg.header(*name, value.as_str());
        }
        let ack = self.js.send_publish(subject, msg).await.map_err(publish_error)?;
        let ack = ack.await.map_err(publish_error)?;
        Ok(ack.sequence)
    }
}

async fn last_on(stream: &jetstream::stream::Stream, subject: &str) -> Result<Option<LastEvent>, CommandError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(LastEvent { seq: m.sequence, headers: m.headers, payload: m.payload })),
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
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound => {
            CommandError::Unavailable(e.to_string())
        }
        _ => CommandError::Internal(anyhow::Error::new(e).context("publish an event")),
    }
}
