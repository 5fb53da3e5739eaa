//! Access decisions as pure functions, so each rule of the security model
//! (README "Security model") is one small function with its own unit
//! tests, and the handlers only gather the inputs and map a refusal to its
//! status.
//!
//! The rules here: which tenants a token grants and what `fhirstream/admin`
//! may do with them; whether a token outlived the tenant it was issued for
//! (incarnations); and which types a request over many types may touch.

use std::collections::HashSet;

use schemas::{Incarnation, ResourceType, TenantId};

/// Which tenants a token grants (`tenants` / `tenant` claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `tenants: ["*"]`: every tenant, present and future (a platform token).
    All,
    /// The tenants the token names.
    Only(HashSet<String>),
}

impl Grant {
    /// The grant of a token's tenant names; `"*"` among them grants all.
    pub(crate) fn from_claim(names: Vec<String>) -> Self {
        if names.iter().any(|t| t == "*") { Self::All } else { Self::Only(names.into_iter().collect()) }
    }

    /// Whether the grant covers `tenant`.
    pub(crate) fn covers(&self, tenant: &TenantId) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(tenant.as_str()),
        }
    }
}

/// What a call to the admin API does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AdminAction<'a> {
    Create,
    /// `GET /admin/tenants`: a tenant admin gets its own tenants only.
    List,
    Read(&'a TenantId),
    Configure(&'a TenantId),
    Delete(&'a TenantId),
}

/// Whether a token may perform an admin action. `fhirstream/admin` is
/// bound to the token's tenants: creating and deleting tenants needs a
/// platform token (`tenants: ["*"]`), because a tenant admin deleting its
/// own tenant and creating another would escape its grant; reading and
/// configuring need the tenant in the grant. The refusal says nothing about
/// whether the tenant exists (it is decided before existence is looked at).
pub(crate) fn admin_may(grant: &Grant, is_admin: bool, action: AdminAction<'_>) -> Result<(), String> {
    if !is_admin {
        return Err("tenant administration needs the fhirstream/admin scope".into());
    }
    match action {
        AdminAction::List => Ok(()),
        AdminAction::Create | AdminAction::Delete(_) if *grant == Grant::All => Ok(()),
        AdminAction::Create => Err("creating tenants needs a platform token (tenants: [\"*\"])".into()),
        AdminAction::Delete(t) => Err(format!("deleting tenant '{t}' needs a platform token (tenants: [\"*\"])")),
        AdminAction::Read(t) | AdminAction::Configure(t) if grant.covers(t) => Ok(()),
        AdminAction::Read(t) | AdminAction::Configure(t) => Err(format!("this token does not administer tenant '{t}'")),
    }
}

/// Whether a token may be used on a tenant's current incarnation.
///
/// A token naming the tenant must have been issued (`iat`, whole seconds)
/// no earlier than the second the tenant was created; one without `iat` is
/// accepted only on a tenant that was never re-created, since nothing else
/// tells which life it was issued for. A platform token (`tenants: ["*"]`)
/// names no tenant in particular and covers future tenants by design, so
/// it is not bound to an incarnation (revoke it by rotating the key). A
/// tenant whose events predate incarnations (`None`) is not checked.
pub(crate) fn incarnation_allows(grant: &Grant, iat: Option<i64>, incarnation: Option<&Incarnation>) -> bool {
    let (Grant::Only(_), Some(life)) = (grant, incarnation) else { return true };
    match iat {
        // Whole seconds on both sides: `iat` has no finer precision, so a
        // token minted in the creation's second, after it, must pass.
        Some(iat) => iat >= life.at.timestamp(),
        None => !life.recreated,
    }
}

/// The types a bulk read (`$export`, `$events`) covers: those named (or
/// all, when none are), narrowed to the types the tenant enables and the
/// token may read; an empty result is a refusal, never "everything".
pub(crate) fn bulk_types(
    named: &[ResourceType],
    enabled: impl Fn(ResourceType) -> bool,
    readable: impl Fn(ResourceType) -> bool,
) -> Result<Vec<ResourceType>, String> {
    let candidates: Vec<ResourceType> = if named.is_empty() { ResourceType::all().collect() } else { named.to_vec() };
    let types: Vec<ResourceType> = candidates.into_iter().filter(|rt| enabled(*rt) && readable(*rt)).collect();
    if types.is_empty() {
        return Err("the token's scopes allow reading none of the requested types in this tenant".into());
    }
    Ok(types)
}

/// The types a system search covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SystemTypes {
    /// Every type (all are enabled and searchable): no type filter.
    All,
    /// Only these.
    Only(Vec<ResourceType>),
    /// `_type` named only types the tenant does not enable: the answer is
    /// an empty searchset, never an unfiltered search.
    Nothing,
}

/// Decides a system search's types. A named type the token may not search
/// is a refusal (the caller asked for it explicitly); a named type the
/// tenant does not enable is dropped; without `_type`, every enabled
/// searchable type.
pub(crate) fn system_search_types(
    named: &[ResourceType],
    enabled: impl Fn(ResourceType) -> bool,
    searchable: impl Fn(ResourceType) -> bool,
) -> Result<SystemTypes, String> {
    if let Some(rt) = named.iter().find(|rt| !searchable(**rt)) {
        return Err(format!("the token's scopes do not allow search of {rt}"));
    }
    if named.is_empty() {
        let all: Vec<ResourceType> = ResourceType::all().filter(|rt| enabled(*rt) && searchable(*rt)).collect();
        return Ok(if all.is_empty() {
            return Err("the token's scopes allow no search in this tenant".into());
        } else if all.len() == ResourceType::all().count() {
            SystemTypes::All
        } else {
            SystemTypes::Only(all)
        });
    }
    let kept: Vec<ResourceType> = named.iter().copied().filter(|rt| enabled(*rt)).collect();
    Ok(if kept.is_empty() { SystemTypes::Nothing } else { SystemTypes::Only(kept) })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;

    fn t(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn only(names: &[&str]) -> Grant {
        Grant::from_claim(names.iter().map(|s| (*s).to_owned()).collect())
    }

    fn rt(name: &str) -> ResourceType {
        ResourceType::parse(name).unwrap()
    }

    #[test]
    fn a_tenant_admin_reads_and_configures_only_its_own_tenants() {
        let a = only(&["a"]);
        assert!(admin_may(&a, true, AdminAction::Read(&t("a"))).is_ok());
        assert!(admin_may(&a, true, AdminAction::Configure(&t("a"))).is_ok());
        assert!(admin_may(&a, true, AdminAction::Read(&t("b"))).is_err());
        assert!(admin_may(&a, true, AdminAction::Configure(&t("b"))).is_err());
        assert!(admin_may(&a, true, AdminAction::List).is_ok(), "listing is filtered, not refused");
    }

    #[test]
    fn creating_and_deleting_tenants_needs_a_platform_token() {
        let a = only(&["a"]);
        assert!(admin_may(&a, true, AdminAction::Create).is_err());
        assert!(admin_may(&a, true, AdminAction::Delete(&t("a"))).is_err());
        assert!(admin_may(&Grant::All, true, AdminAction::Create).is_ok());
        assert!(admin_may(&Grant::All, true, AdminAction::Delete(&t("a"))).is_ok());
    }

    #[test]
    fn without_the_admin_scope_nothing_is_allowed() {
        for action in [AdminAction::List, AdminAction::Create, AdminAction::Read(&t("a"))] {
            assert!(admin_may(&Grant::All, false, action).is_err());
        }
    }

    #[test]
    fn a_star_among_tenant_names_grants_all() {
        assert_eq!(only(&["a", "*"]), Grant::All);
        assert!(!only(&["a"]).covers(&t("b")));
    }

    fn life(secs: i64, recreated: bool) -> Incarnation {
        Incarnation { at: Utc.timestamp_opt(secs, 500_000_000).unwrap(), event_id: uuid::Uuid::nil(), recreated }
    }

    #[test]
    fn a_token_older_than_the_incarnation_is_refused() {
        let a = only(&["a"]);
        assert!(!incarnation_allows(&a, Some(999), Some(&life(1000, true))));
        assert!(incarnation_allows(&a, Some(1000), Some(&life(1000, true))), "same second, after creation");
        assert!(incarnation_allows(&a, Some(2000), Some(&life(1000, true))));
    }

    #[test]
    fn a_token_without_iat_opens_only_a_tenant_never_recreated() {
        let a = only(&["a"]);
        assert!(incarnation_allows(&a, None, Some(&life(1000, false))));
        assert!(!incarnation_allows(&a, None, Some(&life(1000, true))));
    }

    #[test]
    fn platform_tokens_and_unrecorded_incarnations_are_not_bound() {
        assert!(incarnation_allows(&Grant::All, Some(1), Some(&life(1000, true))));
        assert!(incarnation_allows(&only(&["a"]), Some(1), None));
    }

    #[test]
    fn bulk_types_are_intersected_and_never_empty() {
        let named = [rt("Patient"), rt("Observation")];
        let got = bulk_types(&named, |_| true, |t| t == rt("Patient")).unwrap();
        assert_eq!(got, [rt("Patient")]);
        assert!(bulk_types(&named, |_| true, |_| false).is_err());
        assert!(bulk_types(&named, |t| t == rt("Encounter"), |_| true).is_err());
        let all = bulk_types(&[], |t| t == rt("Encounter"), |_| true).unwrap();
        assert_eq!(all, [rt("Encounter")]);
    }

    #[test]
    fn a_system_search_whose_types_are_all_disabled_searches_nothing() {
        let named = [rt("Observation")];
        let got = system_search_types(&named, |t| t == rt("Patient"), |_| true).unwrap();
        assert_eq!(got, SystemTypes::Nothing);
    }

    #[test]
    fn a_system_search_naming_an_unsearchable_type_is_refused() {
        let named = [rt("Patient"), rt("Observation")];
        assert!(system_search_types(&named, |_| true, |t| t == rt("Patient")).is_err());
    }

    #[test]
    fn a_system_search_without_type_covers_enabled_searchable_types() {
        assert_eq!(system_search_types(&[], |_| true, |_| true).unwrap(), SystemTypes::All);
        let got = system_search_types(&[], |t| t != rt("Patient"), |t| t == rt("Patient") || t == rt("Goal"));
        assert_eq!(got.unwrap(), SystemTypes::Only(vec![rt("Goal")]));
        assert!(system_search_types(&[], |_| false, |_| true).is_err());
    }
}
