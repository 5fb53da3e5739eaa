//! Staging schemas: a tenant's read model rebuilt beside the live one.
//!
//! A staging schema (`replay_{hash of the tenant}`) holds the three
//! read-model tables, its own checkpoint table and a `replay_meta` row
//! naming the tenant it is for. It is written by the projector's own batch
//! function ([`store::apply_batch`]) over a connection whose `search_path`
//! starts with the staging schema, so a replay folds events with exactly the code
//! the live projector runs, and each batch moves the staging checkpoint in
//! the same statement as its rows: an interrupted replay resumes where it
//! stopped.
//!
//! The tables are unlogged (a staging schema is scratch: a PostgreSQL crash
//! empties all of it at once, checkpoint included, which a resume detects)
//! and unpartitioned, with only the indexes the batch statement needs.

use std::fmt::Write as _;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::mpsc;

use schemas::TenantId;

use crate::ProjectorError;
use crate::replay::Step;
use crate::tenant_events::{Cut, TenantEvents};
use crate::verify::Counts;
use crate::{refusal, store};

/// The checkpoint row of a staging schema.
const CHECKPOINT: &str = "replay";

/// Columns copied from staging to the live tables, in one order for both.
const VERSION_COLUMNS: &str = "tenant_id, resource_type, id, version, op, last_updated, seq, resource";
const CURRENT_COLUMNS: &str = "tenant_id, resource_type, id, version, deleted, last_updated, seq";
const INDEX_COLUMNS: &str = "tenant_id, resource_type, id, seq, param, kind, text_norm, text_exact, system, code, \
                             unit, lo, hi, num, ref_type, ref_id";

/// Resources of one tenant, by type and id.
pub(crate) type Keys = std::collections::BTreeSet<(String, String)>;

/// What one fold applied.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    pub(crate) events: u64,
    /// The resources its events were about.
    pub(crate) touched: Keys,
}

/// A tenant's staging schema and a connection that writes into it.
pub(crate) struct Staging {
    pub(crate) schema: String,
    pool: PgPool,
}

/// The staging schema of a tenant: tenant names may be 63 characters long,
/// as long as a PostgreSQL identifier, so the name carries a hash of it and
/// `replay_meta` the name itself.
fn schema_for(tenant: &TenantId) -> String {
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    digest.iter().take(8).fold(String::from("replay_"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Staging {
    /// Opens the tenant's staging schema left by an interrupted replay, if
    /// it is for the same incarnation of the tenant (`created_at`) and
    /// stream and survived intact.
    pub(crate) async fn resume(
        main: &PgPool,
        tenant: &TenantId,
        created_at: DateTime<Utc>,
        stream: &str,
    ) -> Result<Option<Self>, ProjectorError> {
        let schema = schema_for(tenant);
        let exists: bool = sqlx::query_scalar("select exists (select from pg_namespace where nspname = $1)")
            .bind(&schema)
            .fetch_one(main)
            .await?;
        if !exists {
            return Ok(None);
        }
        // An emptied (crashed) or foreign staging schema reads as "not ours".
        let meta: Option<(String, Option<DateTime<Utc>>, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "select tenant, tenant_created_at, stream from \"{schema}\".replay_meta"
        )))
        .fetch_optional(main)
        .await
        .unwrap_or(None);
        let same = matches!(meta, Some((t, Some(c), s)) if t == tenant.as_str() && c == created_at && s == stream);
        let staging = Self::connect(main, schema).await?;
        let has_checkpoint: Option<i64> =
            sqlx::query_scalar("select seq from projector_checkpoints where projector = $1")
                .bind(CHECKPOINT)
                .fetch_optional(&staging.pool)
                .await
                .unwrap_or(None);
        if same && has_checkpoint.is_some() { Ok(Some(staging)) } else { staging.discard(main).await.map(|()| None) }
    }

    /// Creates the tenant's staging schema afresh (dropping any old one).
    pub(crate) async fn create(
        main: &PgPool,
        tenant: &TenantId,
        created_at: Option<DateTime<Utc>>,
        stream: &str,
    ) -> Result<Self, ProjectorError> {
        let s = schema_for(tenant);
        // `like` resolves the live tables on the main connection's path.
        let ddl = format!(
            "drop schema if exists \"{s}\" cascade;
             create schema \"{s}\";
             create unlogged table \"{s}\".resource_versions (like resource_versions including defaults including constraints,
                 primary key (tenant_id, resource_type, id, version));
             create unlogged table \"{s}\".resources (like resources including defaults including constraints,
                 primary key (tenant_id, resource_type, id));
             create unlogged table \"{s}\".search_values (like search_values including defaults including constraints);
             create index on \"{s}\".search_values (tenant_id, resource_type, id);
             create unlogged table \"{s}\".projector_checkpoints (like projector_checkpoints including all);
             create unlogged table \"{s}\".refused_events (like refused_events including all);
             create unlogged table \"{s}\".replay_meta (
                 tenant            text        not null,
                 tenant_created_at timestamptz,
                 stream            text        not null,
                 started_at        timestamptz not null default now(),
                 until_seq         bigint,
                 until_time        timestamptz,
                 sequence          bigint);"
        );
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(main).await?;
        sqlx::query(AssertSqlSafe(format!(
            "insert into \"{s}\".replay_meta (tenant, tenant_created_at, stream) values ($1, $2, $3)"
        )))
        .bind(tenant.as_str())
        .bind(created_at)
        .bind(stream)
        .execute(main)
        .await?;
        let staging = Self::connect(main, s).await?;
        store::checkpoint(&staging.pool, CHECKPOINT).await?;
        Ok(staging)
    }

    /// One connection like the main pool's, whose unqualified table names
    /// are the staging schema's. The main schema comes second on the path
    /// only for the batch function (migration 0007): every table that
    /// function names exists in the staging schema, so it finds those first.
    async fn connect(main: &PgPool, schema: String) -> Result<Self, ProjectorError> {
        let live: String = sqlx::query_scalar("select current_schema()").fetch_one(main).await?;
        let path = format!("\"{schema}\",\"{}\"", live.replace('"', "\"\""));
        let options =
            (*main.connect_options()).clone().options([("search_path", path.as_str()), ("synchronous_commit", "off")]);
        let pool = PgPoolOptions::new().max_connections(1).connect_with(options).await?;
        Ok(Self { schema, pool })
    }

    /// The stream sequence the staged rows are at.
    pub(crate) async fn checkpoint(&self) -> Result<u64, ProjectorError> {
        Ok(store::checkpoint(&self.pool, CHECKPOINT).await?)
    }

    /// Folds the tenant's events after the staging checkpoint up to `cut`
    /// into the staging tables; returns how many events it applied and the
    /// resources they touched.
    pub(crate) async fn fold(
        &self,
        js: &jetstream::Context,
        stream: &str,
        tenant: &TenantId,
        cut: Cut,
        batch_size: usize,
        progress: &(dyn Fn(Step) + Send + Sync),
    ) -> Result<Folded, ProjectorError> {
        let mut folded = Folded::default();
        let from = self.checkpoint().await?;
        if from >= cut.until_seq {
            return Ok(folded);
        }
        let events = TenantEvents::open(js, stream, tenant, from).await?;
        progress(Step::Reading { pending: events.pending() });
        // Reading and decoding overlap with planning and writing.
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(events.send(cut, batch_size.max(1), tx));
        let mut known = from;
        while let Some(batch) = rx.recv().await {
            // The same refusals as the live projector's, so a replay leaves
            // out what the live read model left out.
            known = refusal::apply_or_refuse(
                &self.pool,
                store::Checkpoint::InBatch(CHECKPOINT),
                &batch.events,
                batch.max_seq,
                known,
                &|_| {},
            )
            .await?;
            folded.events += batch.events.len() as u64;
            let keys = batch
                .events
                .iter()
                .map(|s| (s.event.resource_type.as_str().to_owned(), s.event.id.as_str().to_owned()));
            folded.touched.extend(keys);
            progress(Step::Applied(batch.events.len() as u64));
        }
        reader.await.map_err(anyhow::Error::from)??;
        Ok(folded)
    }

    /// The resources whose rows differ between the live model and staging,
    /// read in one statement (one snapshot), without locks: current rows and
    /// versions compared column by column (bodies as `jsonb` values), index
    /// rows per resource by count and a sum of 64-bit row hashes.
    pub(crate) async fn differing(&self, main: &PgPool, tenant: &TenantId) -> Result<Keys, ProjectorError> {
        let s = &self.schema;
        let index = "select resource_type, id, count(*) as n,
                            sum(hashtextextended(row(seq, param, kind, text_norm, text_exact, system, code, unit, lo, hi,
                                                     num, ref_type, ref_id)::text, 0)::numeric) as h";
        let sql = format!(
            "with lr as (select {CURRENT_COLUMNS} from resources where tenant_id = $1),
                  sr as (select {CURRENT_COLUMNS} from \"{s}\".resources where tenant_id = $1),
                  lv as (select {VERSION_COLUMNS} from resource_versions where tenant_id = $1),
                  sv as (select {VERSION_COLUMNS} from \"{s}\".resource_versions where tenant_id = $1),
                  li as ({index} from search_values where tenant_id = $1 group by 1, 2),
                  si as ({index} from \"{s}\".search_values where tenant_id = $1 group by 1, 2)
             select resource_type, id from lr full join sr using (resource_type, id) where lr is distinct from sr
             union
             select resource_type, id from lv full join sv using (resource_type, id, version) where lv is distinct from sv
             union
             select resource_type, id from li full join si using (resource_type, id) where li is distinct from si"
        );
        let rows: Vec<(String, String)> =
            sqlx::query_as(AssertSqlSafe(sql)).bind(tenant.as_str()).fetch_all(main).await?;
        Ok(rows.into_iter().collect())
    }

    /// Row counts of the staged model.
    pub(crate) async fn counts(&self) -> Result<Counts, ProjectorError> {
        let (resources, live, versions, index_rows): (i64, i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from resources), (select count(*) from resources where not deleted),
                    (select count(*) from resource_versions), (select count(*) from search_values)",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |v: i64| v.max(0) as u64;
        Ok(Counts { resources: n(resources), live: n(live), versions: n(versions), index_rows: n(index_rows) })
    }

    /// Replaces the live rows of the resources `keys` with their staged
    /// rows, inside the caller's transaction (which decides when readers see
    /// the change).
    pub(crate) async fn replace_live(
        &self,
        tx: &mut PgConnection,
        tenant: &TenantId,
        keys: &Keys,
    ) -> Result<(), ProjectorError> {
        let s = &self.schema;
        let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|(t, i)| (t.as_str(), i.as_str())).unzip();
        for table in ["search_values", "resources", "resource_versions"] {
            sqlx::query(AssertSqlSafe(format!(
                "delete from {table} l using unnest($2::text[], $3::text[]) as k(resource_type, id)
                 where l.tenant_id = $1 and l.resource_type = k.resource_type and l.id = k.id"
            )))
            .bind(tenant.as_str())
            .bind(&types)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        for (table, columns) in
            [("resource_versions", VERSION_COLUMNS), ("resources", CURRENT_COLUMNS), ("search_values", INDEX_COLUMNS)]
        {
            sqlx::query(AssertSqlSafe(format!(
                "insert into {table} ({columns})
                 select {columns} from \"{s}\".{table} s
                 where s.tenant_id = $1
                   and (s.resource_type, s.id) in (select * from unnest($2::text[], $3::text[]))"
            )))
            .bind(tenant.as_str())
            .bind(&types)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Turns the staging schema into the kept snapshot schema `target`
    /// (replacing an older one of that name in the same transaction, so the
    /// name always holds a whole snapshot), made crash-safe (logged), and
    /// readable by the query role under the same row-level security as the
    /// live tables, so the API can serve it.
    pub(crate) async fn into_snapshot(
        self,
        main: &PgPool,
        target: &str,
        cut: Cut,
        sequence: u64,
    ) -> Result<(), ProjectorError> {
        self.pool.close().await;
        let s = &self.schema;
        let mut tx = main.begin().await?;
        let ddl = format!(
            "drop schema if exists \"{target}\" cascade;
             alter schema \"{s}\" rename to \"{target}\";
             alter table \"{target}\".resource_versions set logged;
             alter table \"{target}\".resources set logged;
             alter table \"{target}\".search_values set logged;
             alter table \"{target}\".projector_checkpoints set logged;
             alter table \"{target}\".replay_meta set logged;
             grant usage on schema \"{target}\" to fhirstream_reader;
             grant select on \"{target}\".resources, \"{target}\".resource_versions,
                 \"{target}\".search_values, \"{target}\".replay_meta to fhirstream_reader;
             alter table \"{target}\".resources enable row level security;
             alter table \"{target}\".resource_versions enable row level security;
             alter table \"{target}\".search_values enable row level security;
             create policy tenant_rows on \"{target}\".resources for select to fhirstream_reader
                 using (tenant_id = current_setting('app.tenant', true));
             create policy tenant_rows on \"{target}\".resource_versions for select to fhirstream_reader
                 using (tenant_id = current_setting('app.tenant', true));
             create policy tenant_rows on \"{target}\".search_values for select to fhirstream_reader
                 using (tenant_id = current_setting('app.tenant', true));
             create index on \"{target}\".resources (tenant_id, resource_type, last_updated);"
        );
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        sqlx::query(AssertSqlSafe(format!(
            "update \"{target}\".replay_meta set until_seq = $1, until_time = $2, sequence = $3"
        )))
        .bind(cut.until_seq as i64)
        .bind(cut.until_time)
        .bind(sequence as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops the staging schema.
    pub(crate) async fn discard(self, main: &PgPool) -> Result<(), ProjectorError> {
        self.pool.close().await;
        sqlx::raw_sql(AssertSqlSafe(format!("drop schema if exists \"{}\" cascade", self.schema)))
            .execute(main)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_schemas_are_short_plain_identifiers_one_per_tenant() {
        let long = TenantId::parse(&"a".repeat(63)).unwrap();
        let s = schema_for(&long);
        assert_eq!(s.len(), "replay_".len() + 16);
        assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{s}");
        assert_ne!(schema_for(&TenantId::parse("a-b").unwrap()), schema_for(&TenantId::parse("ab").unwrap()));
    }
}
