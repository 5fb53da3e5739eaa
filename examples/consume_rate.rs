//! How fast a plain ordered consumer reads a subject filter: the baseline
//! `fhirstream replay`'s rate is compared with (reading is all this does).
//!
//! ```sh
//! cargo run --release --example consume_rate -- nats://127.0.0.1:4222 FHIR 'fhir.acme.>'
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, stream, filter] = &args[..] else {
        anyhow::bail!("usage: consume_rate NATS_URL STREAM FILTER");
    };
    let client = async_nats::connect(url.as_str()).await.context("connect to NATS")?;
    let stream = jetstream::new(client).get_stream(stream.as_str()).await.context("open the stream")?;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig { filter_subject: filter.clone(), ..Default::default() })
        .await
        .context("create an ordered consumer")?;
    let mut pending = consumer.cached_info().num_pending;
    let (mut count, mut bytes) = (0u64, 0u64);
    if pending > 0 {
        let mut messages = consumer.messages().await.context("start reading")?;
        while pending > 0 {
            let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .context("no message within 30 s")?
                .context("the stream ended")?
                .map_err(|e| anyhow::anyhow!("read: {e}"))?;
            pending = msg.info().map_err(|e| anyhow::anyhow!("metadata: {e}"))?.pending;
            count += 1;
            bytes += msg.payload.len() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{count} messages ({:.1} MiB) on {filter} in {secs:.2}s: {:.0} messages/s",
        bytes as f64 / 1048576.0,
        count as f64 / secs.max(0.001)
    );
    Ok(())
}
