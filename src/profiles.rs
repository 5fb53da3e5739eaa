//! Where the write side finds a tenant's profiles: the read model, through
//! the reader role (`query::conformance`). A profile is a StructureDefinition
//! stored in the tenant or in the shared space (when the tenant reads
//! StructureDefinitions from it), compiled with the ValueSets and
//! CodeSystems it binds, found the same way.
//!
//! Read-your-writes makes a profile stored with a default (consistent)
//! write in force for every write that follows its response. Profiles are
//! looked up for each write that needs them (three indexed reads at most);
//! tenants without profiles, and resources that claim none, pay nothing.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use command::{CommandError, ProfileSource};
use query::{Queries, QueryError};
use schemas::validate::{Profile, value_sets_from};
use schemas::{ResourceType, TenantId};

/// Profiles from the read model, for one tenant's view of it.
pub struct ReadModelProfiles<'a> {
    pub queries: &'a Queries,
    /// The conformance types the tenant reads from the shared space.
    pub shared: Vec<ResourceType>,
}

impl<'a> ReadModelProfiles<'a> {
    pub fn new(queries: &'a Queries, shared_reads: &[ResourceType]) -> Self {
        let shared = shared_reads
            .iter()
            .copied()
            .filter(|rt| query::conformance::CONFORMANCE_TYPES.contains(&rt.as_str()))
            .collect();
        Self { queries, shared }
    }

    async fn bodies(&self, tenant: &TenantId, urls: &[String]) -> Result<Vec<Value>, CommandError> {
        if urls.is_empty() {
            return Ok(vec![]);
        }
        let rows = self.queries.conformance_by_url(tenant, &self.shared, urls).await.map_err(query_error)?;
        // The tenant's own resource wins over a shared one of the same URL.
        let mut seen = HashSet::new();
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.resource).ok())
            .filter(|v| seen.insert((v["resourceType"].to_string(), v["url"].to_string())))
            .collect())
    }
}

impl ProfileSource for ReadModelProfiles<'_> {
    fn profiles<'a>(
        &'a self,
        tenant: &'a TenantId,
        urls: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Arc<Profile>>, CommandError>> {
        Box::pin(async move {
            let sds: Vec<Value> = self
                .bodies(tenant, urls)
                .await?
                .into_iter()
                .filter(|v| v["resourceType"] == "StructureDefinition")
                .collect();
            let vs_urls = required_bindings(&sds);
            let value_sets = self.bodies(tenant, &vs_urls).await?;
            let cs_urls = included_systems(&value_sets);
            let mut terminology = self.bodies(tenant, &cs_urls).await?;
            terminology.extend(value_sets);
            let known = value_sets_from(&terminology);
            sds.iter()
                .map(|sd| {
                    Profile::compile(sd, &|url| known.get(url).cloned()).map(Arc::new).map_err(|why| {
                        let url = sd["url"].as_str().unwrap_or("?");
                        CommandError::Unprocessable(format!("profile {url} cannot be enforced: {why}"))
                    })
                })
                .collect()
        })
    }
}

fn query_error(e: QueryError) -> CommandError {
    match e {
        QueryError::Unavailable(detail) => CommandError::Unavailable(detail),
        QueryError::Internal(e) => CommandError::Internal(e),
    }
}

/// The value sets the profiles bind with strength `required`.
fn required_bindings(sds: &[Value]) -> Vec<String> {
    let mut urls: Vec<String> = sds
        .iter()
        .flat_map(|sd| sd.pointer("/snapshot/element").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|e| e.get("binding"))
        .filter(|b| b["strength"] == "required")
        .filter_map(|b| b["valueSet"].as_str())
        .map(|u| u.split('|').next().unwrap_or(u).to_owned())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// The code systems value sets include whole (without listing concepts).
fn included_systems(value_sets: &[Value]) -> Vec<String> {
    let mut urls: Vec<String> = value_sets
        .iter()
        .flat_map(|vs| vs.pointer("/compose/include").and_then(Value::as_array).into_iter().flatten())
        .filter(|inc| inc.get("concept").is_none())
        .filter_map(|inc| inc["system"].as_str().map(str::to_owned))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}
