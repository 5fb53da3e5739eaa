//! Who writes, for which tenant, and under which rules: what every write
//! command needs besides the resource, passed as one value.
//!
//! Validation beyond base R4 comes from the tenant's [`ValidationPolicy`]
//! (strictness, enforced profiles) and from the profiles a resource claims
//! in `meta.profile`. Profiles are resources (StructureDefinitions with the
//! ValueSets they bind) stored in the tenant or the shared space; the
//! command side does not read the read model itself, so the caller hands
//! it a [`ProfileSource`] that finds them.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use schemas::validate::{Profile, Rules, ValidationPolicy, claimed_profiles};
use schemas::{Actor, ResourceType, TenantId};

use crate::{CommandError, SharedIds};

/// Finds the profiles with given canonical URLs that a tenant can see (its
/// own, then the shared space's), compiled with the value sets they bind.
/// URLs it cannot find are simply absent from the answer.
pub trait ProfileSource: Send + Sync {
    fn profiles<'a>(
        &'a self,
        tenant: &'a TenantId,
        urls: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Arc<Profile>>, CommandError>>;
}

/// A source that knows no profile: a write that must conform to one is
/// refused, and claimed ones are warnings.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProfiles;

impl ProfileSource for NoProfiles {
    fn profiles<'a>(
        &'a self,
        _tenant: &'a TenantId,
        _urls: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Arc<Profile>>, CommandError>> {
        Box::pin(async { Ok(vec![]) })
    }
}

/// Everything a write command needs besides the resource.
#[derive(Clone, Copy)]
pub struct WriteContext<'a> {
    pub tenant: &'a TenantId,
    pub actor: &'a Actor,
    pub shared_ids: &'a SharedIds,
    pub policy: &'a ValidationPolicy,
    pub profiles: &'a dyn ProfileSource,
    /// `false` only in benchmarks that measure what validation costs.
    pub conformance: bool,
}

impl WriteContext<'_> {
    /// The rules for these resources: the tenant's strictness, and every
    /// profile enforced on their types or claimed by them, resolved once.
    /// An enforced profile that cannot be found refuses the write (422):
    /// the tenant asked for it, so writing unchecked would break its rule.
    pub async fn rules<'r>(
        &self,
        resources: impl IntoIterator<Item = (ResourceType, &'r Map<String, Value>)>,
    ) -> Result<Rules, CommandError> {
        let mut rules =
            Rules { strictness: self.policy.strictness(), skip_conformance: !self.conformance, ..Rules::default() };
        let mut wanted: Vec<String> = vec![];
        let mut types: Vec<ResourceType> = vec![];
        for (rt, resource) in resources {
            wanted.extend(self.policy.profiles_for(rt, resource));
            types.push(rt);
        }
        if wanted.is_empty() {
            return Ok(rules);
        }
        wanted.sort();
        wanted.dedup();
        let found: HashMap<String, Arc<Profile>> =
            self.profiles.profiles(self.tenant, &wanted).await?.into_iter().map(|p| (p.url.clone(), p)).collect();
        types.sort();
        types.dedup();
        for rt in types {
            for url in self.policy.profiles.get(rt.as_str()).into_iter().flatten() {
                let p = found.get(url).ok_or_else(|| {
                    CommandError::Unprocessable(format!(
                        "the tenant enforces profile {url} on {rt}, but no such StructureDefinition is stored \
                         in the tenant or the shared space"
                    ))
                })?;
                if p.resource_type != rt.as_str() {
                    return Err(CommandError::Unprocessable(format!(
                        "profile {url}, enforced on {rt}, constrains {}",
                        p.resource_type
                    )));
                }
                rules.enforced.entry(rt).or_default().push(p.clone());
            }
        }
        rules.visible = found;
        Ok(rules)
    }

    /// `rules` widened by the profiles `resource` claims that they do not
    /// hold yet (a PATCH can add a claim), or `None` when nothing is new.
    pub async fn with_claims(&self, rules: &Rules, resource: &Value) -> Result<Option<Rules>, CommandError> {
        let Some(map) = resource.as_object() else { return Ok(None) };
        let mut new: Vec<String> = claimed_profiles(map).filter(|u| !rules.visible.contains_key(u)).collect();
        if new.is_empty() {
            return Ok(None);
        }
        new.sort();
        new.dedup();
        let mut widened = rules.clone();
        for p in self.profiles.profiles(self.tenant, &new).await? {
            widened.visible.insert(p.url.clone(), p);
        }
        Ok(Some(widened))
    }
}
