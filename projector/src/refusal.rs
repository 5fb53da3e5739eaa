//! Events PostgreSQL refuses to store, and how a batch goes on without them.
//!
//! Retrying is right when PostgreSQL is away or busy, and wrong when it has
//! looked at the data and said no: a JSON string holding `\u0000` (jsonb
//! refuses it, SQLSTATE 22P05), any other class-22 data error, or a class-54
//! program limit such as an index row too large. Such a batch would fail the
//! same way forever and hold back every later event of every tenant. So a
//! refused batch is split into its commits (a commit is atomic and is
//! refused whole); the commits PostgreSQL accepts are applied, each refused
//! one is logged, counted and kept as rows of `refused_events`, and the
//! checkpoint moves past it in the same transaction that records it.

use sqlx::PgPool;
use tracing::error;

use crate::apply::Sequenced;
use crate::store::{self, Checkpoint};

/// The SQLSTATE of an error that retrying cannot cure, or `None` for one
/// worth retrying (connection lost, pool timeout, serialization failure...).
pub fn refusal_code(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else { return None };
    let code = db.code()?;
    (code.starts_with("22") || code.starts_with("54")).then(|| code.into_owned())
}

/// Applies a batch like [`store::apply_batch`]; when PostgreSQL refuses its
/// data, applies it commit by commit and records the commits it refuses.
/// Errors that are not refusals are returned for the caller to retry.
/// `on_refused` is told of every refused event (for metrics).
pub async fn apply_or_refuse(
    pool: &PgPool,
    at: Checkpoint<'_>,
    events: &[Sequenced],
    batch_max_seq: u64,
    known: u64,
    on_refused: &(dyn Fn(&Sequenced) + Send + Sync),
) -> Result<u64, sqlx::Error> {
    match store::apply_batch(pool, at, events, batch_max_seq, known).await {
        Err(e) if refusal_code(&e).is_some() => {}
        other => return other,
    }
    let mut known = known;
    for commit in commits(events) {
        let commit_max = commit.iter().map(|s| s.seq).max().unwrap_or(known);
        match store::apply_batch(pool, at, commit, commit_max, known).await {
            Ok(cp) => known = cp,
            Err(e) => {
                let Some(code) = refusal_code(&e) else { return Err(e) };
                known = record(pool, at, commit, commit_max, &code, &e.to_string()).await?;
                for s in commit {
                    error!(
                        tenant = %s.event.tenant, subject = %subject(s), seq = s.seq, sqlstate = %code, error = %e,
                        "PostgreSQL refused an event; recorded in refused_events and skipped"
                    );
                    on_refused(s);
                }
            }
        }
    }
    // Poison and foreign events of the batch still move the checkpoint.
    match at {
        Checkpoint::InBatch(_) => store::apply_batch(pool, at, &[], batch_max_seq, known).await,
        Checkpoint::Outside { .. } => Ok(batch_max_seq.max(known)),
    }
}

/// Consecutive events of one commit, in stream order.
fn commits(events: &[Sequenced]) -> impl Iterator<Item = &[Sequenced]> {
    events.chunk_by(|a, b| a.event.commit.id == b.event.commit.id)
}

fn subject(s: &Sequenced) -> String {
    schemas::subject::resource_subject(&s.event.tenant, s.event.resource_type, &s.event.id)
}

/// Keeps a refused commit's events and moves the checkpoint past them, in
/// one transaction (with [`Checkpoint::InBatch`]); returns the new checkpoint.
async fn record(
    pool: &PgPool,
    at: Checkpoint<'_>,
    commit: &[Sequenced],
    commit_max: u64,
    code: &str,
    why: &str,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for s in commit {
        sqlx::query(
            "insert into refused_events (projector, seq, tenant_id, subject, resource_type, id, version, sqlstate, error)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict do nothing",
        )
        .bind(at.label())
        .bind(s.seq as i64)
        .bind(s.event.tenant.as_str())
        .bind(subject(s))
        .bind(s.event.resource_type.as_str())
        .bind(s.event.id.as_str())
        .bind(s.event.version.get() as i64)
        .bind(code)
        .bind(why)
        .execute(&mut *tx)
        .await?;
    }
    let seq = match at {
        Checkpoint::InBatch(projector) => {
            sqlx::query_scalar::<_, i64>(
                "update projector_checkpoints set seq = greatest(seq, $2), updated_at = now() where projector = $1
             returning seq",
            )
            .bind(projector)
            .bind(commit_max as i64)
            .fetch_one(&mut *tx)
            .await? as u64
        }
        Checkpoint::Outside { .. } => commit_max,
    };
    tx.commit().await?;
    Ok(seq)
}
