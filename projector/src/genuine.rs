//! The projector's side of `schemas::genuine`: reading the write headers
//! off a JetStream message, and recording what was skipped.
//!
//! Every reader in this crate (the live projection, replay and verify, the
//! tenant registry and the tenant projection) goes through these, so a
//! message that is not a genuine event for its subject is skipped the same
//! way everywhere: a WARN naming the subject and sequence (never the
//! payload) and `fhirstream_stream_messages_skipped_total{reader,reason}`.

use async_nats::HeaderMap;
use schemas::genuine::{NotGenuine, genuine_resource_event, genuine_tenant_event};
use schemas::{ResourceEvent, TenantEvent};

/// Which reader skipped a message (a metric label; a fixed set).
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    Projector,
    Replay,
    Registry,
    TenantProjection,
}

impl Reader {
    fn label(self) -> &'static str {
        match self {
            Reader::Projector => "projector",
            Reader::Replay => "replay",
            Reader::Registry => "registry",
            Reader::TenantProjection => "tenant_projection",
        }
    }
}

fn header<'h>(headers: Option<&'h HeaderMap>, name: &str) -> Option<&'h str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// The resource event of a message, or `None` (recorded) if it is not a
/// genuine one for its subject.
pub fn resource_event(
    reader: Reader,
    subject: &str,
    seq: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<ResourceEvent> {
    genuine_resource_event(subject, |n| header(headers, n), payload)
        .map_err(|why| skipped(reader, subject, seq, &why))
        .ok()
}

/// The tenant event of a message, or `None` (recorded) if it is not a
/// genuine one for its subject.
pub fn tenant_event(
    reader: Reader,
    subject: &str,
    seq: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<TenantEvent> {
    genuine_tenant_event(subject, |n| header(headers, n), payload)
        .map_err(|why| skipped(reader, subject, seq, &why))
        .ok()
}

/// Logs and counts one skipped message.
pub fn skipped(reader: Reader, subject: &str, seq: u64, why: &NotGenuine) {
    tracing::warn!(reader = reader.label(), subject, seq, why = %why, "message that is not a genuine fhirstream event skipped");
    metrics::counter!(
        "fhirstream_stream_messages_skipped_total",
        "reader" => reader.label(),
        "reason" => why.reason()
    )
    .increment(1);
}
