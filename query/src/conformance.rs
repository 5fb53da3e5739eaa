//! Conformance resources by canonical URL: the StructureDefinitions,
//! ValueSets and CodeSystems a tenant's validation uses, from its own rows
//! and the shared space's (for the types it reads from there), under the
//! reader role and row-level security like every other read.

use sqlx::Row as _;

use schemas::{ResourceType, TenantId};

use crate::{Queries, QueryError};

/// The types that hold validation rules.
pub const CONFORMANCE_TYPES: [&str; 3] = ["StructureDefinition", "ValueSet", "CodeSystem"];

/// One conformance resource found by URL.
#[derive(Debug, Clone)]
pub struct ConformanceRow {
    pub resource_type: String,
    /// `true` when it is the tenant's own (which wins over a shared one).
    pub own: bool,
    /// The stored JSON.
    pub resource: String,
}

impl Queries {
    /// Live conformance resources whose `url` is one of `urls`, the
    /// tenant's own first. `shared` names the types the tenant reads from
    /// the shared space; a tenant's rows never reach another tenant.
    pub async fn conformance_by_url(
        &self,
        tenant: &TenantId,
        shared: &[ResourceType],
        urls: &[String],
    ) -> Result<Vec<ConformanceRow>, QueryError> {
        let mut tx = self.begin_reading(tenant, shared).await?;
        let shared_types: Vec<&str> = shared.iter().map(|t| t.as_str()).collect();
        let rows = sqlx::query(
            "select r.tenant_id = $1 as own, r.resource_type, v.resource::text as resource
             from resources r
             join resource_versions v
               on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type
              and v.id = r.id and v.version = r.version
             where (r.tenant_id = $1 or (r.tenant_id = $2 and r.resource_type = any($3)))
               and r.resource_type = any($4) and not r.deleted
               and v.resource->>'url' = any($5)
             order by own desc, r.last_updated desc",
        )
        .bind(tenant.as_str())
        .bind(schemas::tenant::SHARED)
        .bind(&shared_types)
        .bind(&CONFORMANCE_TYPES[..])
        .bind(urls)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(ConformanceRow {
                    resource_type: r.try_get("resource_type")?,
                    own: r.try_get("own")?,
                    resource: r.try_get("resource")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
