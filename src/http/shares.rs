//! Per-tenant shares of what a node holds for a limited number of clients
//! at once (requests in flight, open change feeds): one tenant may take at
//! most its share, so a tenant at its limit is refused (429 with
//! `Retry-After`) while every other tenant still gets in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schemas::TenantId;

/// Whether a tenant holding `held` may take one more under `cap` (0: no cap).
pub fn may_take(held: usize, cap: usize) -> bool {
    cap == 0 || held < cap
}

/// One limited thing, shared per tenant.
#[derive(Debug)]
pub struct TenantShare {
    cap: usize,
    held: Mutex<HashMap<TenantId, usize>>,
}

/// A tenant's hold on one unit of a share; returned when dropped.
#[derive(Debug)]
pub struct ShareGuard {
    share: Arc<TenantShare>,
    tenant: TenantId,
}

impl TenantShare {
    /// A share of at most `cap` per tenant (0: no cap).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap, held: Mutex::default() })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Takes one unit for `tenant`, or `None` if it holds its whole share.
    pub fn try_take(self: &Arc<Self>, tenant: &TenantId) -> Option<ShareGuard> {
        self.try_take_within(tenant, self.cap)
    }

    /// [`Self::try_take`] under the tenant's own cap (its override of the
    /// node's default, see `schemas::quota`).
    pub fn try_take_within(self: &Arc<Self>, tenant: &TenantId, cap: usize) -> Option<ShareGuard> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(tenant.clone()).or_default();
        if !may_take(*n, cap) {
            return None;
        }
        *n += 1;
        Some(ShareGuard { share: self.clone(), tenant: tenant.clone() })
    }
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut held = self.share.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_at_its_share_is_refused_while_another_tenant_and_a_freed_unit_get_in() {
        let share = TenantShare::new(2);
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let a1 = share.try_take(&a).unwrap();
        let _a2 = share.try_take(&a).unwrap();
        assert!(share.try_take(&a).is_none());
        assert!(share.try_take(&b).is_some());
        drop(a1);
        assert!(share.try_take(&a).is_some());
    }

    #[test]
    fn a_cap_of_zero_means_no_cap() {
        assert!(may_take(1_000_000, 0));
        assert!(!may_take(3, 3));
    }
}
