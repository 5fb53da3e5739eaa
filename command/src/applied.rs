//! Read-your-writes: waiting until the projector has applied a sequence.
//!
//! Projectors announce their checkpoint on a core-NATS subject after every
//! commit (and once a second), so a writer in any process can wait for its
//! event without polling PostgreSQL and without a dependency on the
//! projector crate.

use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use schemas::subject::applied_subject;

/// The highest sequence a projector has announced.
#[derive(Clone)]
pub struct AppliedWatch {
    rx: watch::Receiver<u64>,
}

impl AppliedWatch {
    /// Subscribes to a projector's announcements.
    pub async fn follow(client: &async_nats::Client, projector: &str) -> anyhow::Result<Self> {
        let mut sub = client.subscribe(applied_subject(projector)).await?;
        let (tx, rx) = watch::channel(0);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(seq) = std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                tx.send_if_modified(|cur| {
                    let newer = seq > *cur;
                    if newer {
                        *cur = seq;
                    }
                    newer
                });
            }
        });
        Ok(Self { rx })
    }

    /// Waits until `seq` is applied or `timeout` passes; true if applied.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= seq)).await, Ok(Ok(_)))
    }

    /// The highest sequence announced so far.
    pub fn current(&self) -> u64 {
        *self.rx.borrow()
    }
}
