//! Writing planned batches to PostgreSQL: one statement per batch.

use sqlx::PgPool;

use crate::apply::{self, Sequenced};

/// Makes sure the projector has a checkpoint row and returns its sequence.
pub async fn checkpoint(pool: &PgPool, projector: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("insert into projector_checkpoints (projector, seq) values ($1, 0) on conflict do nothing")
        .bind(projector)
        .execute(pool)
        .await?;
    let seq: i64 = sqlx::query_scalar("select seq from projector_checkpoints where projector = $1")
        .bind(projector)
        .fetch_one(pool)
        .await?;
    Ok(seq as u64)
}

/// Where a batch records how far its projector has come.
#[derive(Debug, Clone, Copy)]
pub enum Checkpoint<'a> {
    /// In the batch's own transaction, under this projector name; the
    /// batch function's sequence guard reads it.
    InBatch(&'a str),
    /// Not in the batch: the caller records progress once every part of a
    /// batch has committed (projector lanes), or has none to record (a
    /// write applying its own event). Migration 0009 says why applying an
    /// event twice is harmless. `label` names the writer in metrics and in
    /// `refused_events`.
    Outside { label: &'a str },
}

impl<'a> Checkpoint<'a> {
    /// The name that labels metrics and refused events.
    pub fn label(self) -> &'a str {
        match self {
            Self::InBatch(name) | Self::Outside { label: name } => name,
        }
    }

    fn projector(self) -> Option<&'a str> {
        match self {
            Self::InBatch(name) => Some(name),
            Self::Outside { .. } => None,
        }
    }
}

/// Applies one batch in a single function call (`fhirstream_apply_batch`,
/// migrations 0007 and 0009), so a batch costs one round trip and is atomic
/// without an explicit transaction. With [`Checkpoint::InBatch`] the
/// checkpoint moves to at least `batch_max_seq` (which covers events that
/// were consumed but not applicable) in the same call, behind the
/// function's sequence guard (`seq > checkpoint`); the version comparisons
/// back it, so a redelivered or retried batch changes nothing either way.
/// `known` is the checkpoint this instance last wrote; it only trims the
/// batch before it is sent. Returns the new checkpoint.
pub async fn apply_batch(
    pool: &PgPool,
    at: Checkpoint<'_>,
    events: &[Sequenced],
    batch_max_seq: u64,
    known: u64,
) -> Result<u64, sqlx::Error> {
    let planning = std::time::Instant::now();
    let rows = apply::plan(events, known);
    // Labelled like the batch histogram: a replay ("replay") does not mix
    // into the live projector's figures.
    let label = at.label().to_owned();
    metrics::histogram!("fhirstream_projector_plan_seconds", "projector" => label.clone())
        .record(planning.elapsed().as_secs_f64());
    let writing = std::time::Instant::now();
    let new = rows.checkpoint.max(batch_max_seq).max(known);
    let (v, c, x) = (&rows.versions, &rows.current, &rows.index);
    // Migration 0007 says why this is a function and not a statement.
    sqlx::query(
        "select fhirstream_apply_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                                       $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)",
    )
    .bind(at.projector())
    .bind(new as i64)
    .bind(&v.tenant_id)
    .bind(&v.resource_type)
    .bind(&v.id)
    .bind(&v.version)
    .bind(&v.op)
    .bind(&v.last_updated)
    .bind(&v.seq)
    .bind(&v.resource)
    .bind(&c.tenant_id)
    .bind(&c.resource_type)
    .bind(&c.id)
    .bind(&c.version)
    .bind(&c.deleted)
    .bind(&c.last_updated)
    .bind(&c.seq)
    .bind(&x.tenant_id)
    .bind(&x.resource_type)
    .bind(&x.id)
    .bind(&x.seq)
    .bind(&x.param)
    .bind(&x.kind)
    .bind(&x.text_norm)
    .bind(&x.text_exact)
    .bind(&x.system)
    .bind(&x.code)
    .bind(&x.unit)
    .bind(&x.lo)
    .bind(&x.hi)
    .bind(&x.num)
    .bind(&x.ref_type)
    .bind(&x.ref_id)
    .execute(pool)
    .await?;
    metrics::histogram!("fhirstream_projector_statement_seconds", "projector" => label)
        .record(writing.elapsed().as_secs_f64());
    Ok(new)
}

/// Moves a checkpoint forward outside a batch (e.g. past a poison event).
pub async fn set_checkpoint(pool: &PgPool, projector: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query("update projector_checkpoints set seq = greatest(seq, $2), updated_at = now() where projector = $1")
        .bind(projector)
        .bind(seq as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// Refreshes the planner's statistics of the read models (every partition).
pub async fn analyze(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("analyze resources, resource_versions, search_values").execute(pool).await?;
    Ok(())
}

/// Refreshes the planner's statistics of the partitions that hold
/// `tenants`' rows; returns how many partitions that was.
pub async fn analyze_tenants(pool: &PgPool, tenants: &[String]) -> Result<usize, sqlx::Error> {
    let partitions: Vec<String> = sqlx::query_scalar(
        "select distinct p::text from unnest($1::text[]) as t(tenant),
         lateral ((select tableoid::regclass from resources where tenant_id = t.tenant limit 1)
                  union all (select tableoid::regclass from resource_versions where tenant_id = t.tenant limit 1)
                  union all (select tableoid::regclass from search_values where tenant_id = t.tenant limit 1)) as x(p)",
    )
    .bind(tenants)
    .fetch_all(pool)
    .await?;
    for p in &partitions {
        // A regclass prints as a quoted, schema-qualified name when needed.
        sqlx::query(sqlx::AssertSqlSafe(format!("analyze {p}"))).execute(pool).await?;
    }
    Ok(partitions.len())
}
