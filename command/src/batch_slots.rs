//! Fair shares of JetStream's atomic batches.
//!
//! JetStream keeps only a few dozen atomic batches open per stream, and a
//! process opens at most a fixed number of them at once. Without a share
//! per tenant, one tenant sending many transactions at once takes every
//! slot and every other tenant's transactions (and shareable-type and
//! conditional creates, which also commit as batches) answer 503. So each
//! tenant holds at most `per_tenant` slots; a batch waits at most `wait`
//! for one (its tenant's share, then a global slot) and is otherwise
//! refused as unavailable (503 with `Retry-After`), never queued forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::TenantId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::CommandError;

/// How atomic batches are shared.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Batches this process keeps open at once (JetStream's limit per
    /// stream is 50; other nodes may write too).
    pub global: usize,
    /// Batches one tenant keeps open at once on this process.
    pub per_tenant: usize,
    /// Longest wait for a slot before the write is refused as unavailable.
    pub wait: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self { global: 24, per_tenant: 8, wait: Duration::from_secs(2) }
    }
}

/// Whether a tenant holding `held` slots may take another under `cap`.
pub fn may_take(held: usize, cap: usize) -> bool {
    held < cap.max(1)
}

/// The slots, shared by every clone of the event store.
pub(crate) struct BatchSlots {
    limits: BatchLimits,
    global: Arc<Semaphore>,
    held: Mutex<HashMap<TenantId, usize>>,
    freed: Notify,
}

/// One open batch's slot; returned when dropped.
pub(crate) struct Slot {
    slots: Arc<BatchSlots>,
    tenant: Option<TenantId>,
    _global: OwnedSemaphorePermit,
}

impl BatchSlots {
    pub(crate) fn new(limits: BatchLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            global: Arc::new(Semaphore::new(limits.global.max(1))),
            held: Mutex::default(),
            freed: Notify::new(),
        })
    }

    /// Takes a slot for `tenant` (`None`: the shared space's id claims only,
    /// bounded by the global limit alone), waiting at most the configured
    /// time.
    pub(crate) async fn take(self: &Arc<Self>, tenant: Option<&TenantId>) -> Result<Slot, CommandError> {
        let deadline = tokio::time::Instant::now() + self.limits.wait;
        let busy = || CommandError::Unavailable("too many atomic commits of this tenant in flight; retry".into());
        if let Some(t) = tenant {
            loop {
                // Registered before the check, so a slot freed in between
                // still wakes this waiter.
                let freed = self.freed.notified();
                if self.try_hold(t) {
                    break;
                }
                if tokio::time::timeout_at(deadline, freed).await.is_err() {
                    metrics::counter!("fhirstream_batch_slot_refusals_total", "share" => "tenant").increment(1);
                    return Err(busy());
                }
            }
        }
        let tenant = tenant.cloned();
        let global = match tokio::time::timeout_at(deadline, self.global.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                if let Some(t) = &tenant {
                    self.release(t);
                }
                metrics::counter!("fhirstream_batch_slot_refusals_total", "share" => "global").increment(1);
                return Err(CommandError::Unavailable("too many atomic commits in flight; retry".into()));
            }
        };
        Ok(Slot { slots: self.clone(), tenant, _global: global })
    }

    fn try_hold(&self, tenant: &TenantId) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(tenant.clone()).or_default();
        if may_take(*n, self.limits.per_tenant) {
            *n += 1;
            true
        } else {
            false
        }
    }

    fn release(&self, tenant: &TenantId) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(tenant);
            }
        }
        drop(held);
        self.freed.notify_waiters();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(t) = &self.tenant {
            self.slots.release(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_takes_slots_only_below_its_share() {
        assert!(may_take(0, 8));
        assert!(may_take(7, 8));
        assert!(!may_take(8, 8));
        assert!(may_take(0, 0), "a share of 0 still lets one batch through");
        assert!(!may_take(1, 0));
    }

    #[tokio::test]
    async fn a_tenant_at_its_share_waits_then_is_refused_while_another_tenant_gets_a_slot() {
        let slots = BatchSlots::new(BatchLimits { global: 4, per_tenant: 1, wait: Duration::from_millis(50) });
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let held = slots.take(Some(&a)).await.unwrap();
        assert!(matches!(slots.take(Some(&a)).await, Err(CommandError::Unavailable(_))));
        let _b = slots.take(Some(&b)).await.unwrap();
        drop(held);
        let _a = slots.take(Some(&a)).await.expect("a freed slot is taken again");
    }
}
