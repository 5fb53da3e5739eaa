//! The tenant projection: folds `fhirstream.tenants.>` into the `tenants`
//! table and carries out what a tenant's lifecycle means for the read
//! models: a deleted tenant's rows are purged in the same transaction that
//! records the deletion.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use schemas::subject::{TENANT_SUBJECTS, applied_subject};
use schemas::{TenantEvent, TenantEventOp, TenantId};

use crate::genuine::{self, Reader};

/// The checkpoint name and announcement subject suffix of a tenant
/// projection that belongs to projector `name`.
pub fn tenant_projection_name(name: &str) -> String {
    format!("{name}-tenants")
}

/// Rows a tenant has in the read models.
pub async fn count_rows(pool: &PgPool, tenant: &TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select (select count(*) from resources where tenant_id = $1)
              + (select count(*) from resource_versions where tenant_id = $1)
              + (select count(*) from search_values where tenant_id = $1)",
    )
    .bind(tenant.as_str())
    .fetch_one(pool)
    .await
}

/// Deletes a tenant's read-model rows that come from events at or below
/// stream sequence `up_to`; returns how many.
pub async fn purge_rows_up_to(
    conn: &mut sqlx::PgConnection,
    tenant: &TenantId,
    up_to: u64,
) -> Result<u64, sqlx::Error> {
    let seq = up_to as i64;
    let a = sqlx::query("delete from resources where tenant_id = $1 and seq <= $2")
        .bind(tenant.as_str())
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    let b = sqlx::query("delete from resource_versions where tenant_id = $1 and seq <= $2")
        .bind(tenant.as_str())
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    let c = sqlx::query("delete from search_values where tenant_id = $1 and seq <= $2")
        .bind(tenant.as_str())
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(a.rows_affected() + b.rows_affected() + c.rows_affected())
}

/// Deletes every read-model row of a tenant, the events PostgreSQL
/// refused for it and its kept snapshots; returns how many rows. A tenant
/// created later under the same name must find nothing of this one.
pub async fn purge_rows(conn: &mut sqlx::PgConnection, tenant: &TenantId) -> Result<u64, sqlx::Error> {
    sqlx::query("delete from refused_events where tenant_id = $1").bind(tenant.as_str()).execute(&mut *conn).await?;
    drop_snapshots(conn, tenant).await?;
    let a = sqlx::query("delete from resources where tenant_id = $1").bind(tenant.as_str()).execute(&mut *conn).await?;
    let b = sqlx::query("delete from resource_versions where tenant_id = $1")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await?;
    let c =
        sqlx::query("delete from search_values where tenant_id = $1").bind(tenant.as_str()).execute(&mut *conn).await?;
    Ok(a.rows_affected() + b.rows_affected() + c.rows_affected())
}

/// The schemas of the kept snapshots (`fhirstream replay --into NAME`,
/// one schema each with a `replay_meta` row naming its tenant) of `tenant`.
async fn snapshots_of(conn: &mut sqlx::PgConnection, tenant: &TenantId) -> Result<Vec<String>, sqlx::Error> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "select n.nspname::text from pg_namespace n
          where n.nspname like 'snapshot\\_%'
            and to_regclass(quote_ident(n.nspname) || '.replay_meta') is not null",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut owned = Vec::new();
    for schema in schemas {
        let meta = format!("{}.replay_meta", quote_ident(&schema));
        let owner: Option<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select tenant from {meta} limit 1")))
                .fetch_optional(&mut *conn)
                .await?;
        if owner.as_deref() == Some(tenant.as_str()) {
            owned.push(schema);
        }
    }
    Ok(owned)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the kept snapshots built for `tenant`.
async fn drop_snapshots(conn: &mut sqlx::PgConnection, tenant: &TenantId) -> Result<(), sqlx::Error> {
    for schema in snapshots_of(conn, tenant).await? {
        let drop = format!("drop schema {} cascade", quote_ident(&schema));
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut *conn).await?;
        info!(%tenant, schema, "snapshot of a deleted tenant dropped");
    }
    Ok(())
}

/// What a tenant still has outside the read models proper: refused-event
/// rows and kept snapshots.
pub async fn count_leftovers(pool: &PgPool, tenant: &TenantId) -> Result<i64, sqlx::Error> {
    let refused: i64 = sqlx::query_scalar("select count(*) from refused_events where tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let snapshots = snapshots_of(&mut conn, tenant).await?.len() as i64;
    Ok(refused + snapshots)
}

pub(crate) struct TenantProjection {
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) client: async_nats::Client,
    pub(crate) pool: PgPool,
}

impl TenantProjection {
    /// Runs until cancelled, restarting from its checkpoint after failures.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            tokio::select! {
                result = self.follow() => {
                    if let Err(e) = result {
                        warn!(error = %format!("{e:#}"), "tenant projection interrupted; resuming from its checkpoint");
                    }
                }
                () = cancel.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    async fn follow(&self) -> anyhow::Result<()> {
        let name = tenant_projection_name(&self.name);
        let mut seq = crate::store::checkpoint(&self.pool, &name).await.context("read the tenant checkpoint")?;
        self.announce(&name, seq).await;
        let js = jetstream::new(self.client.clone());
        let stream = js.get_stream(&self.stream).await.context("open the tenant stream")?;
        let deliver_policy = match seq {
            0 => consumer::DeliverPolicy::All,
            n => consumer::DeliverPolicy::ByStartSequence { start_sequence: n + 1 },
        };
        // Tenant events are few; an ordered consumer from the checkpoint
        // keeps them strictly in order without server-side state.
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: TENANT_SUBJECTS.into(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .context("create the tenant projection consumer")?;
        let mut messages = consumer.messages().await.context("follow tenant events")?;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { anyhow::bail!("tenant stream ended") };
                    let msg = msg.context("receive a tenant event")?;
                    let at = msg.info().map_err(|e| anyhow::anyhow!("tenant event metadata: {e}"))?.stream_sequence;
                    if at <= seq {
                        continue;
                    }
                    let headers = msg.headers.as_ref();
                    match genuine::tenant_event(Reader::TenantProjection, &msg.subject, at, headers, &msg.payload) {
                        Some(event) => self.apply(&name, at, &event).await?,
                        None => crate::store::set_checkpoint(&self.pool, &name, at).await?,
                    }
                    seq = at;
                    self.announce(&name, seq).await;
                }
                _ = heartbeat.tick() => self.announce(&name, seq).await,
            }
        }
    }

    async fn apply(&self, name: &str, seq: u64, event: &TenantEvent) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        match event.op {
            TenantEventOp::Deleted => {
                sqlx::query("delete from tenants where id = $1").bind(event.tenant.as_str()).execute(&mut *tx).await?;
                let rows = purge_rows(&mut tx, &event.tenant).await?;
                info!(tenant = %event.tenant, rows, "tenant deleted; read-model rows purged");
            }
            op => {
                // No purge on creation here: writes to the new tenant may
                // already be projected. Leftovers of an earlier tenant of the
                // same name are purged before its creation is recorded.
                sqlx::query(
                    "insert into tenants (id, name, config, created_at, updated_at, seq)
                     values ($1, $2, $3, $4, $4, $5)
                     on conflict (id) do update
                     set name = excluded.name, config = excluded.config,
                         updated_at = excluded.updated_at, seq = excluded.seq,
                         created_at = case when $6 then excluded.created_at else tenants.created_at end",
                )
                .bind(event.tenant.as_str())
                .bind(&event.name)
                .bind(serde_json::to_value(&event.config)?)
                .bind(event.at)
                .bind(seq as i64)
                .bind(op == TenantEventOp::Created)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("update projector_checkpoints set seq = $2, updated_at = now() where projector = $1")
            .bind(name)
            .bind(seq as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn announce(&self, name: &str, seq: u64) {
        if seq > 0 {
            let _ = self.client.publish(applied_subject(name), seq.to_string().into()).await;
        }
    }
}
