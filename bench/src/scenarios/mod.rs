//! The scenarios that load the server over HTTP: P1 (CRUD mix), P2
//! (Synthea import as transactions), P3 (read by id), P4 (isolation from a
//! big neighbour), P5 (read-your-writes vs eventual writes) and P6 (the
//! operator's replay), S1 (searches on a fresh and a big tenant); V1
//! (validation cost) runs in process. Each virtual user
//! keeps its own histograms; they are merged once the phase ends, so
//! measuring adds no shared state to the hot path.

pub mod consistency;
pub mod crud;
pub mod import;
pub mod isolation;
pub mod read;
pub mod replay;
pub mod search;
pub mod validation;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::http::OpError;

/// Failed operations of a phase: counted by kind, with a few examples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub samples: Vec<String>,
}

impl Errors {
    const SAMPLES: usize = 5;

    pub fn add(&mut self, what: &str, e: &OpError) {
        self.total += 1;
        *self.by_kind.entry(format!("{what}: {}", e.key())).or_default() += 1;
        if self.samples.len() < Self::SAMPLES {
            self.samples.push(format!("{what}: {e}"));
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.total += other.total;
        for (k, n) in other.by_kind {
            *self.by_kind.entry(k).or_default() += n;
        }
        let room = Self::SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

/// A small, fast, seedable generator (xorshift64*) for picking ids: the
/// harness needs spread, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((u128::from(x) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_stay_in_range_and_cover_it() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800 && n < 1200), "{seen:?}");
    }

    #[test]
    fn errors_merge_counts_and_keep_few_samples() {
        let e = || OpError::Status { status: 500, body: "boom".into() };
        let (mut a, mut b) = (Errors::default(), Errors::default());
        for _ in 0..4 {
            a.add("create Patient", &e());
            b.add("read Patient", &e());
        }
        a.merge(b);
        assert_eq!(a.total, 8);
        assert_eq!(a.by_kind["create Patient: HTTP 500"], 4);
        assert_eq!(a.by_kind["read Patient: HTTP 500"], 4);
        assert_eq!(a.samples.len(), 5);
    }
}
