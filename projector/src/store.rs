//! Writing planned batches to PostgreSQL, one transaction per batch.

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
/// (which covers events that were consumed but not applicable), all in one
/// transaction. The checkpoint row is locked first, so the sequence guard
/// holds even if a second instance slipped past the advisory lock.
/// Returns the new checkpoint.
pub async fn apply_batch(
    pool: &PgPool,
    projector: &str,
    events: &[Sequenced],
    batch_max_seq: u64,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let old: i64 = sqlx::query_scalar("select seq from projector_checkpoints where projector = $1 for update")
        .bind(projector)
        .fetch_one(&mut *tx)
        .await?;
    let rows = apply::plan(events, old as u64);
    if !rows.is_empty() {
        let v = &rows.versions;
        sqlx::query(
            "insert into resource_versions (tenant_id, resource_type, id, version, op, last_updated, seq, resource)
             select t, rt, i, v, o, lu, s, r::jsonb
             from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::timestamptz[], $7::int8[], $8::text[])
                  as x(t, rt, i, v, o, lu, s, r)
             on conflict do nothing",
        )
        .bind(&v.tenant_id)
        .bind(&v.resource_type)
        .bind(&v.id)
        .bind(&v.version)
        .bind(&v.op)
        .bind(&v.last_updated)
        .bind(&v.seq)
        .bind(&v.resource)
        .execute(&mut *tx)
        .await?;
        let c = &rows.current;
        sqlx::query(
            "insert into resources (tenant_id, resource_type, id, version, deleted, last_updated, seq)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::timestamptz[], $7::int8[])
             on conflict (tenant_id, resource_type, id) do update
             set version = excluded.version, deleted = excluded.deleted,
                 last_updated = excluded.last_updated, seq = excluded.seq
             where resources.version < excluded.version",
        )
        .bind(&c.tenant_id)
        .bind(&c.resource_type)
        .bind(&c.id)
        .bind(&c.version)
        .bind(&c.deleted)
        .bind(&c.last_updated)
        .bind(&c.seq)
        .execute(&mut *tx)
        .await?;
    }
    let new = rows.checkpoint.max(batch_max_seq).max(old as u64);
    if new > old as u64 {
        sqlx::query("update projector_checkpoints set seq = $2, updated_at = now() where projector = $1")
            .bind(projector)
            .bind(new as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
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
