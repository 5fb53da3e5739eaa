//! The raw baselines: what NATS and PostgreSQL on this machine do for the
//! same events and rows with nothing of fhirstream in between — no HTTP, no
//! validation, no search indexing. Each server figure is set beside one of
//! these, so a ratio, not an absolute time, says how close we are.
//!
//! They run in a scratch stream (subjects `benchraw.>`, which the server's
//! projector never consumes) and a scratch schema `bench_raw` in the
//! server's database, both removed when the run ends.

pub mod copy;
pub mod pipeline;
pub mod publish;
pub mod select;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use sqlx::PgPool;

/// Subjects of the publish-only baseline.
pub const PUBLISH_PREFIX: &str = "benchraw.pub";
/// Subjects of the pipeline baseline.
pub const PIPELINE_PREFIX: &str = "benchraw.pipe";
/// The tenant named in the raw events.
pub const RAW_TENANT: &str = "bench-raw";

/// (Re)creates the scratch stream with the resource stream's settings.
pub async fn create_stream(js: &jetstream::Context, name: &str) -> anyhow::Result<stream::Stream> {
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        description: Some("fhirstream-bench scratch stream (raw baselines); deleted after the run".into()),
        subjects: vec!["benchraw.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("create the scratch stream {name}"))
}

pub async fn drop_stream(js: &jetstream::Context, name: &str) {
    if let Err(e) = js.delete_stream(name).await {
        eprintln!("warning: could not delete the scratch stream {name}: {e}");
    }
}

/// Creates `bench_raw` with tables shaped like the read models: same
/// columns, keys and indexes (`like ... including all`), hash-partitioned
/// by tenant into as many partitions as the real tables have.
pub async fn create_schema(pool: &PgPool) -> anyhow::Result<()> {
    let ddl = "
        drop schema if exists bench_raw cascade;
        create schema bench_raw;
        create table bench_raw.resource_versions (like public.resource_versions including all)
            partition by hash (tenant_id);
        create table bench_raw.resources (like public.resources including all)
            partition by hash (tenant_id);
        create table bench_raw.checkpoints (name text primary key, seq bigint not null);
        insert into bench_raw.checkpoints values ('raw', 0);
        do $$
        declare n int;
        begin
            select greatest(count(*), 1) into n from pg_inherits
             where inhparent = 'public.resource_versions'::regclass;
            for i in 0..n - 1 loop
                execute format('create table bench_raw.resource_versions_p%s partition of bench_raw.resource_versions
                                for values with (modulus %s, remainder %s)', i, n, i);
                execute format('create table bench_raw.resources_p%s partition of bench_raw.resources
                                for values with (modulus %s, remainder %s)', i, n, i);
            end loop;
        end
        $$;";
    sqlx::raw_sql(ddl).execute(pool).await.context("create the scratch schema bench_raw")?;
    Ok(())
}

pub async fn drop_schema(pool: &PgPool) {
    if let Err(e) = sqlx::raw_sql("drop schema if exists bench_raw cascade").execute(pool).await {
        eprintln!("warning: could not drop the scratch schema bench_raw: {e}");
    }
}
