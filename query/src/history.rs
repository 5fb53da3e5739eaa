//! History: a tenant's versions (of one resource, one type or all types)
//! in stream order, newest first, paged by stream sequence, optionally
//! limited to versions changed since a time or current during a period.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row as _};

use schemas::{ResourceId, ResourceType, TenantId};

use crate::{Queries, QueryError};

/// One version in a history listing.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub op: String,
    pub last_updated: DateTime<Utc>,
    /// Stream sequence of the event: the paging position.
    pub seq: i64,
    pub resource: Option<String>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub resource_type: Option<ResourceType>,
    /// One resource's versions (needs `resource_type`).
    pub id: Option<ResourceId>,
    pub since: Option<DateTime<Utc>>,
    /// FHIR `_at`: versions current at some moment of `[lo, hi)`, i.e.
    /// written before `hi` and not replaced by their next version at or
    /// before `lo`. A deletion is a version too, so a resource deleted then
    /// shows its deletion.
    pub at: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Only versions older (in stream order) than this sequence.
    pub before_seq: Option<i64>,
}

/// The versions a filter selects: `$1` tenant, `$2` type, `$3` since,
/// `$4` id, `$5`/`$6` the `_at` period.
const MATCHES: &str = "v.tenant_id = $1 and ($2::text is null or v.resource_type = $2)
    and ($3::timestamptz is null or v.last_updated >= $3)
    and ($4::text is null or v.id = $4)
    and ($5::timestamptz is null or (v.last_updated < $6 and not exists (
        select 1 from resource_versions n
        where n.tenant_id = v.tenant_id and n.resource_type = v.resource_type
          and n.id = v.id and n.version = v.version + 1 and n.last_updated <= $5)))";

impl Queries {
    /// Versions matching `filter`, newest first, at most `limit`, and the
    /// number of all versions matching it (ignoring `before_seq`).
    pub async fn changes(
        &self,
        tenant: &TenantId,
        filter: &ChangeFilter,
        limit: i64,
    ) -> Result<(Vec<Change>, u64), QueryError> {
        let mut tx = self.begin(tenant).await?;
        let rt = filter.resource_type.map(|t| t.as_str());
        let id = filter.id.as_ref().map(ResourceId::as_str);
        let (at_lo, at_hi) = (filter.at.map(|a| a.0), filter.at.map(|a| a.1));
        let total: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("select count(*) from resource_versions v where {MATCHES}")))
                .bind(tenant.as_str())
                .bind(rt)
                .bind(filter.since)
                .bind(id)
                .bind(at_lo)
                .bind(at_hi)
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "select v.resource_type, v.id, v.version, v.op, v.last_updated, v.seq, v.resource::text as resource
             from resource_versions v
             where {MATCHES} and ($7::int8 is null or v.seq < $7)
             order by v.seq desc
             limit $8"
        )))
        .bind(tenant.as_str())
        .bind(rt)
        .bind(filter.since)
        .bind(id)
        .bind(at_lo)
        .bind(at_hi)
        .bind(filter.before_seq)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let changes = rows
            .iter()
            .map(|r| {
                Ok(Change {
                    resource_type: r.try_get("resource_type")?,
                    id: r.try_get("id")?,
                    version: r.try_get("version")?,
                    op: r.try_get("op")?,
                    last_updated: r.try_get("last_updated")?,
                    seq: r.try_get("seq")?,
                    resource: r.try_get("resource")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((changes, total as u64))
    }
}
