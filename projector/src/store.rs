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

/// Applies one batch and advances the checkpoint to at least `batch_max_seq`
/// (which covers events that were consumed but not applicable) in a single
/// statement, so a batch costs one round trip and is atomic without an
/// explicit transaction. The sequence guard lives in the statement itself
/// (`seq > checkpoint`, read in the same snapshot), backed by the version
/// comparisons, so a redelivered or retried batch changes nothing.
/// `known` is the checkpoint this instance last wrote; it only trims the
/// batch before it is sent. Returns the new checkpoint.
pub async fn apply_batch(
    pool: &PgPool,
    projector: &str,
    events: &[Sequenced],
    batch_max_seq: u64,
    known: u64,
) -> Result<u64, sqlx::Error> {
    let rows = apply::plan(events, known);
    let new = rows.checkpoint.max(batch_max_seq).max(known);
    let (v, c, x) = (&rows.versions, &rows.current, &rows.index);
    sqlx::query(
        "with cp as (select seq from projector_checkpoints where projector = $1),
         versions as (
             insert into resource_versions (tenant_id, resource_type, id, version, op, last_updated, seq, resource)
             select t, rt, i, v, o, lu, s, r::jsonb
             from unnest($3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::timestamptz[], $9::int8[], $10::text[])
                  as x(t, rt, i, v, o, lu, s, r)
             where x.s > (select seq from cp)
             on conflict do nothing),
         current as (
             insert into resources (tenant_id, resource_type, id, version, deleted, last_updated, seq)
             select t, rt, i, v, d, lu, s
             from unnest($11::text[], $12::text[], $13::text[], $14::int8[], $15::bool[], $16::timestamptz[], $17::int8[])
                  as y(t, rt, i, v, d, lu, s)
             where y.s > (select seq from cp)
             on conflict (tenant_id, resource_type, id) do update
             set version = excluded.version, deleted = excluded.deleted,
                 last_updated = excluded.last_updated, seq = excluded.seq
             where resources.version < excluded.version),
         -- Data-modifying CTEs share one snapshot: this delete sees only the
         -- rows that existed before the statement, never the new ones below.
         unindexed as (
             delete from search_values sv
             using unnest($11::text[], $12::text[], $13::text[], $17::int8[]) as z(t, rt, i, s)
             where sv.tenant_id = z.t and sv.resource_type = z.rt and sv.id = z.i
               and z.s > (select seq from cp)),
         indexed as (
             insert into search_values (tenant_id, resource_type, id, seq, param, kind, text_norm, text_exact,
                                        system, code, unit, lo, hi, num, ref_type, ref_id)
             select t, rt, i, s, p, k::\"char\", tn, te, sy, co, un, lo, hi, nu::numeric, ryt, ryi
             from unnest($18::text[], $19::text[], $20::text[], $21::int8[], $22::text[], $23::text[], $24::text[],
                         $25::text[], $26::text[], $27::text[], $28::text[], $29::timestamptz[], $30::timestamptz[],
                         $31::text[], $32::text[], $33::text[])
                  as w(t, rt, i, s, p, k, tn, te, sy, co, un, lo, hi, nu, ryt, ryi)
             where w.s > (select seq from cp))
         update projector_checkpoints set seq = greatest(seq, $2), updated_at = now() where projector = $1",
    )
    .bind(projector)
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
