//! Replaying and verifying a tenant against the stream, the source of truth.
//!
//! **Replay** rebuilds a tenant's read model beside the live one (a staging
//! schema, see [`crate::staging`]) and swaps it in with one transaction, so
//! readers see the old model or the new one, never a mixture, while the
//! live projector keeps running:
//!
//! 1. Fold the tenant's events up to the projector's checkpoint `C0` into
//!    staging, then again up to the checkpoint it has reached since, until
//!    little is left. Staging never runs ahead of the projector: the swapped
//!    rows must be at the projector's checkpoint exactly, because the
//!    projector re-applies everything after it (and would overwrite the
//!    index of a newer version with that of an older one).
//! 2. Find, without locks, the resources whose live rows differ from the
//!    staged ones (usually none, or the damaged few).
//! 3. Swap, in one transaction: share-lock the tenant's row in `tenants` (a
//!    deletion of the tenant then waits, and purges what the swap wrote; a
//!    deletion or re-creation that came first stops the swap); lock
//!    `projector_checkpoints` in EXCLUSIVE mode, which readers pass but every
//!    projector statement that writes rows waits for, before it has touched
//!    a row (PostgreSQL takes a statement's table locks first, and every
//!    such statement also writes its checkpoint); read the checkpoint `C`;
//!    fold the events in `(staged, C]` into staging; rewrite the live rows
//!    of the resources found in step 2 and of those these last events
//!    touched (no other event touched a resource's rows on either side since
//!    step 2, so every other resource is identical in both); commit. The
//!    projector then continues after `C` on rows that are exactly the fold
//!    up to `C`.
//!
//! The projector pauses for the swap (every tenant's events wait, none is
//! lost); step 2 keeps that pause to the rows that really change.
//!
//! **Snapshots** fold up to a cut (a sequence or a time) into staging and
//! rename it to `snapshot_{name}`, which is kept and never swapped in.
//!
//! **Verify** reads the live rows and the checkpoint in one snapshot of the
//! database, folds the tenant's events up to that checkpoint, and compares
//! (see [`crate::verify`]).

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use sqlx::{Connection as _, PgConnection, PgPool, Row as _};
use tokio::sync::mpsc;

use schemas::TenantId;

use crate::ProjectorError;
use crate::staging::Staging;
use crate::tenant_events::{Cut, TenantEvents};
use crate::verify::{Counts, IndexRow, Model, Report};

/// What a replay reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// A read starts; at most this many events follow.
    Reading { pending: u64 },
    /// This many more events were applied.
    Applied(u64),
    /// The staged model is being swapped in.
    Swapping,
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The resource stream.
    pub stream: String,
    /// The live projector (its checkpoint row).
    pub projector: String,
    /// Events per staging transaction.
    pub batch_size: usize,
    /// Discard an interrupted replay's staging instead of resuming it.
    pub restart: bool,
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Events folded in this run (a resumed run does not count earlier ones).
    pub events: u64,
    /// The staging checkpoint this run started from (0: from scratch).
    pub resumed_from: u64,
    /// The stream sequence the rebuilt model is at.
    pub sequence: u64,
    pub rows: Counts,
    /// Resources whose live rows the swap rewrote (zero for a snapshot).
    pub changed: u64,
    /// How long the swap transaction held up the projector (zero for a
    /// snapshot).
    pub swap: std::time::Duration,
}

/// Catch-up rounds before the swap, and the number of events a round may
/// leave to the swap (which holds up the projector while it folds them).
const CATCH_UP_ROUNDS: usize = 10;
const CATCH_UP_ENOUGH: u64 = 1000;

/// Rebuilds the tenant's live read model from the stream and swaps it in.
pub async fn replay_live(
    pool: &PgPool,
    js: &jetstream::Context,
    tenant: &TenantId,
    opts: &ReplayOptions,
    progress: &(dyn Fn(Step) + Send + Sync),
) -> Result<Replayed, ProjectorError> {
    let lock = lock_tenant(pool, tenant).await?;
    let created_at =
        tenant_created_at(pool, tenant).await?.ok_or_else(|| ProjectorError::UnknownTenant(tenant.clone()))?;
    let first = checkpoint(pool, &opts.projector).await?;
    let resumed = match opts.restart {
        true => None,
        false => Staging::resume(pool, tenant, created_at, &opts.stream).await?,
    };
    let staging = match resumed {
        Some(s) if s.checkpoint().await? <= first => s,
        Some(s) => {
            // Ahead of the projector (its checkpoint cannot go back, so the
            // database was restored): useless.
            s.discard(pool).await?;
            Staging::create(pool, tenant, Some(created_at), &opts.stream).await?
        }
        None => Staging::create(pool, tenant, Some(created_at), &opts.stream).await?,
    };
    let resumed_from = staging.checkpoint().await?;
    let (stream, batch) = (opts.stream.as_str(), opts.batch_size);
    let mut events = staging.fold(js, stream, tenant, Cut::at_seq(first), batch, progress).await?.events;
    for _ in 0..CATCH_UP_ROUNDS {
        let now = checkpoint(pool, &opts.projector).await?;
        let n = staging.fold(js, stream, tenant, Cut::at_seq(now), batch, progress).await?.events;
        events += n;
        if n < CATCH_UP_ENOUGH {
            break;
        }
    }
    // Which resources the swap must rewrite, found without holding anyone
    // up: those that differ now, plus those that events folded from here on
    // touch (only such events change a resource's live or staged rows).
    let mut changed = staging.differing(pool, tenant).await?;
    progress(Step::Swapping);
    let swap_started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let still: Option<DateTime<Utc>> = sqlx::query_scalar("select created_at from tenants where id = $1 for share")
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if still != Some(created_at) {
        return Err(ProjectorError::UnknownTenant(tenant.clone()));
    }
    sqlx::query("lock table projector_checkpoints in exclusive mode").execute(&mut *tx).await?;
    let sequence = checkpoint(&mut *tx, &opts.projector).await?;
    let last = staging.fold(js, stream, tenant, Cut::at_seq(sequence), batch, progress).await?;
    events += last.events;
    changed.extend(last.touched);
    staging.replace_live(&mut tx, tenant, &changed).await?;
    let rows = staging.counts().await?;
    tx.commit().await?;
    let swap = swap_started.elapsed();
    staging.discard(pool).await?;
    lock.close().await?;
    Ok(Replayed { events, resumed_from, sequence, rows, changed: changed.len() as u64, swap })
}

/// Folds the tenant's events up to `cut` into the kept schema
/// `snapshot_{name}` (replacing an older snapshot of that name).
pub async fn snapshot(
    pool: &PgPool,
    js: &jetstream::Context,
    tenant: &TenantId,
    name: &str,
    cut: Cut,
    opts: &ReplayOptions,
    progress: &(dyn Fn(Step) + Send + Sync),
) -> Result<Replayed, ProjectorError> {
    let target = snapshot_schema(name)?;
    let lock = lock_tenant(pool, tenant).await?;
    let created_at = tenant_created_at(pool, tenant).await?;
    let mut stream = js.get_stream(&opts.stream).await.map_err(|e| ProjectorError::Stream(e.to_string()))?;
    let head = stream.info().await.map_err(|e| ProjectorError::Stream(e.to_string()))?.state.last_sequence;
    let cut = Cut { until_seq: cut.until_seq.min(head), ..cut };
    let staging = Staging::create(pool, tenant, created_at, &opts.stream).await?;
    let events = staging.fold(js, &opts.stream, tenant, cut, opts.batch_size, progress).await?.events;
    let sequence = staging.checkpoint().await?;
    let rows = staging.counts().await?;
    staging.into_snapshot(pool, &target, cut, sequence).await?;
    lock.close().await?;
    Ok(Replayed { events, resumed_from: 0, sequence, rows, changed: 0, swap: Default::default() })
}

/// The schema a snapshot named `name` lives in.
pub fn snapshot_schema(name: &str) -> Result<String, ProjectorError> {
    let name = schemas::SnapshotName::parse(name)
        .map_err(|_| ProjectorError::InvalidSnapshotName(name.chars().take(80).collect()))?;
    Ok(name.schema())
}

/// Compares the tenant's live read model with the fold of its events.
pub async fn verify(
    pool: &PgPool,
    js: &jetstream::Context,
    tenant: &TenantId,
    opts: &ReplayOptions,
    limit: usize,
    progress: &(dyn Fn(Step) + Send + Sync),
) -> Result<Report, ProjectorError> {
    let (sequence, actual) = read_model(pool, tenant, &opts.projector).await?;
    let mut expected = Model::default();
    let mut events = 0;
    let refused: std::collections::HashSet<i64> =
        sqlx::query_scalar("select seq from refused_events where projector = $1 and tenant_id = $2 and seq <= $3")
            .bind(&opts.projector)
            .bind(tenant.as_str())
            .bind(sequence as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    if sequence > 0 {
        let reader = TenantEvents::open(js, &opts.stream, tenant, 0).await?;
        progress(Step::Reading { pending: reader.pending() });
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(reader.send(Cut::at_seq(sequence), opts.batch_size.max(1), tx));
        while let Some(batch) = rx.recv().await {
            for s in batch.events.iter().filter(|s| !refused.contains(&(s.seq as i64))) {
                expected.fold(&s.event, s.seq);
                events += 1;
            }
            progress(Step::Applied(batch.events.len() as u64));
        }
        reader.await.map_err(anyhow::Error::from)??;
    }
    let mut report = Report::new(tenant.as_str(), sequence, events, &expected, &actual, limit);
    report.refused = refused.len() as u64;
    Ok(report)
}

/// The tenant's rows and the projector's checkpoint, read in one snapshot
/// of the database (the projector writes both in one transaction).
pub async fn read_model(pool: &PgPool, tenant: &TenantId, projector: &str) -> Result<(u64, Model), ProjectorError> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let sequence = checkpoint(&mut *tx, projector).await?;
    let mut model = Model::default();
    let t = tenant.as_str();
    let mut rows = sqlx::query(
        "select r.resource_type, r.id, r.version, r.deleted, v.resource::text
         from resources r
         left join resource_versions v
           on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type and v.id = r.id and v.version = r.version
         where r.tenant_id = $1",
    )
    .bind(t)
    .fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let version: i64 = row.try_get(2)?;
        model.add_current(row.try_get(0)?, row.try_get(1)?, version as u64, row.try_get(3)?, row.try_get(4)?);
    }
    drop(rows);
    let mut rows = sqlx::query("select resource_type, id, version from resource_versions where tenant_id = $1")
        .bind(t)
        .fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let version: i64 = row.try_get(2)?;
        model.add_version(row.try_get(0)?, row.try_get(1)?, version as u64);
    }
    drop(rows);
    let mut rows = sqlx::query(
        "select resource_type, id, param, kind::text, text_norm, text_exact, system, code, unit, lo, hi, num::text,
                ref_type, ref_id
         from search_values where tenant_id = $1",
    )
    .bind(t)
    .fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let index = IndexRow {
            param: row.try_get(2)?,
            kind: row.try_get(3)?,
            text_norm: row.try_get(4)?,
            text_exact: row.try_get(5)?,
            system: row.try_get(6)?,
            code: row.try_get(7)?,
            unit: row.try_get(8)?,
            lo: row.try_get(9)?,
            hi: row.try_get(10)?,
            num: row.try_get(11)?,
            ref_type: row.try_get(12)?,
            ref_id: row.try_get(13)?,
        };
        model.add_index_row(row.try_get(0)?, row.try_get(1)?, &index);
    }
    drop(rows);
    tx.commit().await?;
    Ok((sequence, model))
}

/// The named projector's checkpoint; an unknown name is an error, never 0,
/// since replaying to 0 would empty the tenant.
async fn checkpoint<'e>(db: impl sqlx::PgExecutor<'e>, projector: &str) -> Result<u64, ProjectorError> {
    let seq: Option<i64> = sqlx::query_scalar("select seq from projector_checkpoints where projector = $1")
        .bind(projector)
        .fetch_optional(db)
        .await?;
    seq.map(|s| s as u64).ok_or_else(|| ProjectorError::UnknownProjector(projector.to_owned()))
}

/// When the tenant's current incarnation was created, per the read model.
async fn tenant_created_at(pool: &PgPool, tenant: &TenantId) -> Result<Option<DateTime<Utc>>, ProjectorError> {
    Ok(sqlx::query_scalar("select created_at from tenants where id = $1")
        .bind(tenant.as_str())
        .fetch_optional(pool)
        .await?)
}

/// One replay per tenant at a time: a session lock on a connection of its
/// own, taken out of the pool so the lock can never outlive the replay in
/// a pooled connection; closing it releases the lock.
async fn lock_tenant(pool: &PgPool, tenant: &TenantId) -> Result<PgConnection, ProjectorError> {
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
        .bind(format!("fhirstream.replay.{tenant}"))
        .fetch_one(&mut conn)
        .await?;
    if !got {
        return Err(ProjectorError::ReplayRunning(tenant.clone()));
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_plain_lowercase_identifiers() {
        assert_eq!(snapshot_schema("before_migration_2").unwrap(), "snapshot_before_migration_2");
        for bad in ["", "Upper", "a-b", "a b", "x;drop", "\"q\"", &"a".repeat(55)] {
            assert!(snapshot_schema(bad).is_err(), "{bad:?}");
        }
    }
}
