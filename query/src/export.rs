//! Bulk export reads: a tenant's current resources of one type, in keyset
//! pages by id, under the reader role and row-level security, so an export
//! holds one page in memory whatever the tenant's size.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use schemas::{ResourceType, TenantId};

use crate::{Queries, QueryError};

/// Which rows of a type an export reads.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only resources changed after this instant (`_since`).
    pub since: Option<DateTime<Utc>>,
    /// Only resources with a reference to a Patient through one of these
    /// search parameters (the Patient compartment); `None` reads all.
    pub patient_params: Option<Vec<String>>,
    /// Only these Patients and the resources in their compartments (a
    /// Group's members); `None` reads every Patient's.
    pub patient_ids: Option<Vec<String>>,
}

/// Where the rows come from: the tenant's own, or the shared space's rows
/// of a type the tenant reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportSource {
    Own,
    Shared,
}

/// One exported resource.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: String,
    /// The stored JSON, one line.
    pub resource: String,
}

impl Queries {
    /// The next page (at most `limit`) of live `rt` resources after `after`
    /// in id order. Each page is its own transaction as `tenant`: RLS lets
    /// the shared space's rows through only for types the tenant reads.
    pub async fn export_page(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        source: ExportSource,
        filter: &ExportFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ExportRow>, QueryError> {
        let (owner, shared) = owner(tenant, rt, source);
        let mut tx = self.begin_reading(tenant, &shared).await?;
        let rows = sqlx::query(
            "select r.id, v.resource::text as resource
             from resources r
             join resource_versions v
               on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type
              and v.id = r.id and v.version = r.version
             where r.tenant_id = $1 and r.resource_type = $2 and not r.deleted and r.id > $3
               and ($4::timestamptz is null or r.last_updated > $4)
               and ($5::text[] is null or exists (
                     select 1 from search_values s
                     where s.tenant_id = r.tenant_id and s.resource_type = r.resource_type and s.id = r.id
                       and s.kind = 'r' and s.ref_type = 'Patient' and s.param = any($5)
                       and ($7::text[] is null or s.ref_id = any($7))))
               and ($7::text[] is null or r.resource_type <> 'Patient' or r.id = any($7))
             order by r.id
             limit $6",
        )
        .bind(owner)
        .bind(rt.as_str())
        .bind(after)
        .bind(filter.since)
        .bind(filter.patient_params.as_deref())
        .bind(limit)
        .bind(filter.patient_ids.as_deref())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok(ExportRow { id: r.try_get("id")?, resource: r.try_get("resource")? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// How many resources [`Queries::export_page`] would page through (for
    /// a progress bar: the count and the pages are separate reads).
    pub async fn export_count(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        source: ExportSource,
        filter: &ExportFilter,
    ) -> Result<u64, QueryError> {
        let (owner, shared) = owner(tenant, rt, source);
        let mut tx = self.begin_reading(tenant, &shared).await?;
        let n: i64 = sqlx::query_scalar(
            "select count(*)
             from resources r
             where r.tenant_id = $1 and r.resource_type = $2 and not r.deleted
               and ($3::timestamptz is null or r.last_updated > $3)
               and ($4::text[] is null or exists (
                     select 1 from search_values s
                     where s.tenant_id = r.tenant_id and s.resource_type = r.resource_type and s.id = r.id
                       and s.kind = 'r' and s.ref_type = 'Patient' and s.param = any($4)
                       and ($5::text[] is null or s.ref_id = any($5))))
               and ($5::text[] is null or r.resource_type <> 'Patient' or r.id = any($5))",
        )
        .bind(owner)
        .bind(rt.as_str())
        .bind(filter.since)
        .bind(filter.patient_params.as_deref())
        .bind(filter.patient_ids.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n.max(0) as u64)
    }
}

/// The tenant whose rows a source reads, and the shared types to let
/// through row-level security for it.
fn owner(tenant: &TenantId, rt: ResourceType, source: ExportSource) -> (&str, Vec<ResourceType>) {
    match source {
        ExportSource::Own => (tenant.as_str(), Vec::new()),
        ExportSource::Shared => (schemas::tenant::SHARED, vec![rt]),
    }
}
